"""`make bench`: run every benchmark and print what it measured.

PostgreSQL and Redis come from DATABASE_URL / REDIS_URL, or embedded servers in a temporary
folder (stopped afterwards), exactly as the test suite does.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
from pathlib import Path

from benchmarks import auth, foundation, gateway, ledger
from benchmarks.report import print_table
from kit.db import dsn_with_database
from kit.embedded import EmbeddedPostgres


def main() -> None:
    """Run the benchmarks."""
    cores, version = os.cpu_count(), platform.python_version()
    print(f"DwayBank benchmarks on {platform.node()}: {cores} cores, Python {version}")
    print_table("CPU (one core)", foundation.cpu_results())
    gateway.run()
    folder: Path | None = None
    embedded: EmbeddedPostgres | None = None
    dsn = os.environ.get("DATABASE_URL")
    label = "DATABASE_URL"
    if dsn is None:
        folder = Path(tempfile.mkdtemp(prefix="dwaybank-bench-"))
        folder.chmod(0o755)
        embedded = EmbeddedPostgres(folder)
        dsn = dsn_with_database(embedded.start(), "postgres")
        label = "embedded PostgreSQL 16"
    try:
        print_table("PostgreSQL ceiling", asyncio.run(foundation.postgres_results(dsn, label)))
        engine, http = ledger.run(dsn, label, external=embedded is None)
        print_table(f"Ledger: postings/s, latency per transfer ({label})", engine + http)
        print_table(f"Identity: login and token verification ({label})", auth.run(dsn, label))
    finally:
        if embedded is not None:
            embedded.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
