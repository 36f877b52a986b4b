"""`dwaybank up` end to end: a fresh data folder reaches /health/ready, then stops cleanly.

The command runs as a real subprocess, exactly as a developer runs it: embedded PostgreSQL and
Redis when the suite has no DATABASE_URL / REDIS_URL, the machine's servers when it has. It
starts Ray and Serve behind HAProxy on free ports, answers over HTTP, and on `dwaybank down`
stops everything it started: no Ray process, no HAProxy, no embedded server, no held port.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.runtime import haproxy_threads
from kit.db import connect, dsn_with_database
from kit.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.db]

START_DEADLINE_S = 300
STOP_DEADLINE_S = 120


# Ports handed to `dwaybank up` come from a band no one else here draws from: the kernel's
# ephemeral range (32768-60999, what binding port 0 returns, and what Ray's many processes
# take for their own sockets while the runtime starts), Ray's worker ports (10002-19999) and
# Serve's direct-ingress ports (30000-31000, 40000-41000) all lie outside it. A port taken from
# the ephemeral range could be taken again by Ray before HAProxy binds it.
PORT_BAND = range(21_000, 29_000)
PORT_PICKS_MAX = 200
_picked: set[int] = set()


def _free_port() -> int:
    for _ in range(PORT_PICKS_MAX):
        port = random.choice(PORT_BAND)
        if port not in _picked and _port_is_free(port):
            _picked.add(port)
            return port
    raise RuntimeError(f"no free port in {PORT_BAND}")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Up:
    """A running `dwaybank up` subprocess."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str]) -> None:
        self.http_port = _free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "RAY_ADDRESS"}
        }
        self.env.update(
            DWAYBANK_DATA_DIR=str(data_dir),
            DWAYBANK_HTTP_PORT=str(self.http_port),
            DWAYBANK_DASHBOARD_PORT=str(_free_port()),
            DWAYBANK_HAPROXY_METRICS_PORT=str(_free_port()),
            DWAYBANK_HAPROXY_STATS_PORT=str(_free_port()),
            DWAYBANK_LOG_JSON="false",
            **extra_env,
        )
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_until_up(self) -> str:
        """Read output until the banner; returns the banner's first line."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("DwayBank is up"):
                return line
        self.process.kill()
        raise AssertionError("dwaybank up did not come up:\n" + "".join(self.output[-60:]))

    def down(self) -> int:
        """`dwaybank down` on the same data folder; returns the exit code of `up`."""
        result = subprocess.run(
            [sys.executable, "-m", "deployments.cli", "down"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STOP_DEADLINE_S + 10,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return self.process.wait(timeout=STOP_DEADLINE_S)


@pytest.fixture
async def server_env(servers: tuple[str, str]) -> AsyncIterator[dict[str, str]]:
    """The machine's servers when the suite was given them, else nothing (embedded).

    With the machine's PostgreSQL the runtime gets a database of its own: the suite's database
    holds rows sealed under the suite's key, and a fresh data folder means a fresh key.
    """
    if "DATABASE_URL" not in os.environ or "REDIS_URL" not in os.environ:
        yield {}
        return
    admin_dsn, redis_url = servers
    name = f"dwaybank_e2e_{uuid.uuid4().hex[:10]}"
    admin = await connect(admin_dsn, timeout_s=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield {"DATABASE_URL": dsn_with_database(admin_dsn, name), "REDIS_URL": redis_url}
    finally:
        admin = await connect(admin_dsn, timeout_s=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def up(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Up]:
    running = Up(tmp_path / "data", server_env)
    try:
        yield running
    finally:
        # After a failure `up` is still running: stop it as an operator would (SIGTERM stops
        # Ray and the embedded servers it started), and only then kill what is left, its
        # children too (a SIGKILL alone left the embedded Redis running after the run).
        children = _descendants(running.process.pid)
        if running.process.poll() is None:
            running.process.terminate()
            try:
                running.process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait(timeout=30)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if running.process.stdout is not None:
            running.process.stdout.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return children


class TestUp:
    def test_fresh_start_is_ready_then_stops_cleanly(
        self, up: Up, tmp_path: Path, server_env: dict[str, str]
    ) -> None:
        """A fresh data folder migrates, is ready on both apps, and `down` leaves nothing."""
        banner = up.wait_until_up()
        assert "migrations applied" in banner
        with httpx.Client(base_url=up.base_url, timeout=10) as http:
            for path in ("/health/ready", "/ledger/health/ready"):
                response = http.get(path)
                assert response.status_code == 200, response.text
                checks = response.json()["checks"]
                assert {name for name, c in checks.items() if c["status"] == "up"} >= {
                    "database",
                    "redis",
                    "ray",
                }
            assert http.get("/health/live").status_code == 200
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert http.get("/openapi.json").json()["info"]["title"] == "DwayBank API"
            assert http.get("/docs").status_code == 200
            missing = http.get("/api/v1/nope")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["request_id"] == missing.headers["x-request-id"]
            ledger_missing = http.get("/ledger/nope")
            assert ledger_missing.json()["error_detail"]["code"] == "GEN_NOT_FOUND"
            for answer in (missing, ledger_missing):  # the edge stack runs on every ingress
                assert answer.headers["x-content-type-options"] == "nosniff"
                assert answer.headers["cache-control"] == "no-store"
                assert answer.headers["content-security-policy"].startswith("default-src 'none'")
            # The deployed edge lets OAuth clients (no user token) reach the token endpoint,
            # whose own answer to unknown client credentials is RFC 6749's invalid_client...
            token = http.post(
                "/oauth/token", data={"grant_type": "refresh_token"}, auth=("nobody", "x")
            )
            assert token.status_code == 401
            assert token.json()["error"] == "invalid_client"
            # ...and asks for a bearer token on an authenticated route.
            sessions = http.get("/api/v1/auth/sessions")
            assert sessions.status_code == 401
            assert sessions.json()["code"] == "AUTH_TOKEN_MISSING"
            # A client's own X-Forwarded-For is not its address: the admin surface stays closed
            # to this host (not in the private ranges) whatever the header claims.
            spoofed = http.get("/api/v1/admin/users", headers={"X-Forwarded-For": "10.1.2.3"})
            assert spoofed.status_code == 403
            assert spoofed.json()["code"] == "GW_ADDRESS_NOT_ALLOWED"
            assert http.get("/api/v1/nope", headers={"User-Agent": "sqlmap"}).status_code == 403
            # ...while a `curl` health check (a container's, a newcomer's) is answered.
            curl = {"User-Agent": "curl/8.5.0"}
            assert http.get("/health/ready", headers=curl).status_code == 200
            counted = http.get("/metrics").text
            assert 'route="unmatched",service="api",status="404"' in counted
        children = _descendants(up.process.pid)
        haproxies = [p for p in children if p.name() == "haproxy"]
        assert haproxies, "the HAProxy ingress is running"
        # ...with the thread count `up` chose for this machine (Serve's own default is four).
        command = haproxies[0].cmdline()
        config = Path(command[command.index("-f") + 1]).read_text()
        assert f"nbthread {haproxy_threads(Settings())}\n" in config

        assert up.down() == 0
        assert up.process.stdout is not None
        up.output.extend(up.process.stdout.readlines())
        time.sleep(1)
        assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert _port_is_free(up.http_port)
        data = tmp_path / "data"
        assert not (data / "run" / "dwaybank.pid").exists()
        if not server_env:
            assert not (data / "postgres" / "postmaster.pid").exists(), (
                "embedded PostgreSQL did not stop cleanly:\n" + "".join(up.output[-40:])
            )
            assert not (data / "redis" / "redis.sock").exists() or not _redis_alive(data)


def _redis_alive(data: Path) -> bool:
    pid_file = data / "redis" / "redis.pid"
    if not pid_file.exists():
        return False
    alive: bool = psutil.pid_exists(int(pid_file.read_text().strip()))
    return alive
