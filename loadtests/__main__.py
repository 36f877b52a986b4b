"""`make loadtest`: run the locust scenarios headless against a running DwayBank.

Target: DWAYBANK_BASE_URL (default http://127.0.0.1:8000). Users, spawn rate and duration come
from LOADTEST_USERS (32), LOADTEST_SPAWN_RATE (32) and LOADTEST_DURATION (20s). Prints locust's
summary: requests/s, failures and latency percentiles per route.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main() -> int:
    """Check the target answers, then run locust headless."""
    base_url = os.environ.get("DWAYBANK_BASE_URL", "http://127.0.0.1:8000")
    try:
        httpx.get(f"{base_url}/health/live", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        print(f"loadtest: nothing answers at {base_url} ({reason}); start it with `make run`")
        return 1
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        base_url,
        "--users",
        os.environ.get("LOADTEST_USERS", "32"),
        "--spawn-rate",
        os.environ.get("LOADTEST_SPAWN_RATE", "32"),
        "--run-time",
        os.environ.get("LOADTEST_DURATION", "20s"),
        "--only-summary",
    ]
    return subprocess.run(command, check=False).returncode  # noqa: S603 - our own fixed command


if __name__ == "__main__":
    sys.exit(main())
