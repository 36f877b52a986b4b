"""`dwaybank up`, `down` and `migrate`: start the whole product on one machine.

Order of `up`: resolve the servers (embedded PostgreSQL / Redis unless `DATABASE_URL` /
`REDIS_URL` are given), check that both answer (one clear line and a non-zero exit otherwise),
apply migrations, start a local Ray with its dashboard, deploy `serve_config.yaml`, wait until
every application's `/health/ready` answers 200, print the addresses, and wait for Ctrl-C,
SIGTERM or `dwaybank down`. Stopping reverses the order and stops only what `up` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import psutil
import yaml

from kit.crypto import load_keyring
from kit.db import connect
from kit.embedded import EmbeddedPostgres, EmbeddedRedis
from kit.errors import ClusterUnavailableError, ConfigurationError
from kit.migrations import MigrationFile, MigrationStatus, migrate, status
from kit.redis_client import create_redis
from kit.redis_client import ping as redis_ping
from kit.settings import ServeIngress, Settings

logger = logging.getLogger(__name__)

PID_FILE_NAME: Final = "dwaybank.pid"
DOWN_WAIT_S: Final = 120.0
READY_POLL_S: Final = 0.5
READY_REQUEST_TIMEOUT_S: Final = 5.0
PREFLIGHT_TIMEOUT_S: Final = 5.0
TERMINATE_WAIT_S: Final = 5.0
LOCAL_DRAIN_S: Final = 2
# Serve throughput-optimized behind HAProxy. Serve's HTTP metrics (requests, errors, latency,
# ongoing requests) then come from the direct-ingress replicas themselves rather than from
# HAProxy's per-request log lines, which Serve's HAProxy manager parsed at ~60 us a request
# (and HAProxy spent ~15 us writing): same metric names, the dashboard's panels unchanged.
SERVE_THROUGHPUT_ENV: Final = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
# The uvicorn servers inside Serve (each direct-ingress replica, and Serve's Python proxy)
# rewrite the client address from X-Forwarded-For when the peer is in FORWARDED_ALLOW_IPS,
# 127.0.0.1 by default; HAProxy reaches the replicas from there, so any client's own header
# became its address (past the admin allow-list and the per-address limits). Empty: uvicorn
# believes no one, and the gateway's resolver (`client_address.trusted_proxies`) is the one
# place that reads the header.
SERVE_CLIENT_ADDRESS_ENV: Final = {"FORWARDED_ALLOW_IPS": ""}
# One HAProxy thread handles ~18,000 keep-alive requests/s here (~55 us of CPU each, both
# hops); the replicas behind it need the cores far sooner. Serve starts four threads whatever
# the machine: on two cores they took ~70 us a request and ~5 % of the ledger's HTTP rate.
HAPROXY_CORES_PER_THREAD: Final = 4


def machine_cores() -> int:
    """The cores this process may run on (the affinity mask, which a container narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def haproxy_threads(settings: Settings) -> int:
    """HAProxy's thread count: the setting, or one per `HAPROXY_CORES_PER_THREAD` cores."""
    if settings.haproxy_threads is not None:
        return settings.haproxy_threads
    return max(1, machine_cores() // HAPROXY_CORES_PER_THREAD)


def serve_ingress_env(settings: Settings) -> dict[str, str]:
    """The environment Ray's processes need for Serve behind HAProxy, as `up` runs it."""
    return {
        **SERVE_THROUGHPUT_ENV,
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(haproxy_threads(settings)),
        # Direct-ingress replicas drain for 30 s by default so a load balancer can move
        # traffic away; on one machine nothing routes around them, so stopping waits less.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(LOCAL_DRAIN_S),
    }


def serve_controller_env(settings: Settings) -> dict[str, str]:
    """The environment that sets Serve's control loop period, as `up` runs it."""
    return {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": str(settings.serve_control_loop_s)}


@dataclass(slots=True)
class Servers:
    """The PostgreSQL and Redis in use, and which of them this process started."""

    database_url: str
    redis_url: str
    started: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)

    def stop_started(self) -> None:
        """Stop the embedded servers this process started, newest first."""
        while self.started:
            server = self.started.pop()
            try:
                server.stop()
            except Exception:
                logger.exception("an embedded server did not stop cleanly")


def resolve_servers(settings: Settings, *, with_redis: bool = True) -> Servers:
    """The configured servers, starting embedded ones for what is not configured."""
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    database_url = settings.database_url.get_secret_value() if settings.database_url else None
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        if database_url is None:
            pg = EmbeddedPostgres(settings.data_dir)
            was_running = pg.is_running()
            database_url = pg.start()
            if not was_running:
                started.append(pg)
        if redis_url is None and with_redis:
            rd = EmbeddedRedis(settings.data_dir)
            was_running = rd.is_running()
            redis_url = rd.start()
            if not was_running:
                started.append(rd)
    except BaseException:
        Servers("", "", started).stop_started()
        raise
    return Servers(database_url, redis_url or "", started)


async def preflight(settings: Settings, servers: Servers) -> list[str]:
    """Both servers answer within seconds, or a `DependencyError` names the one that did not.
    Returns warnings about how the database server is run."""
    conn = await connect(servers.database_url, timeout_s=PREFLIGHT_TIMEOUT_S)
    try:
        warnings = await server_warnings(conn)
    finally:
        await conn.close()
    client = create_redis(settings, servers.redis_url)
    try:
        await redis_ping(client, url=servers.redis_url, timeout_s=PREFLIGHT_TIMEOUT_S)
    finally:
        await client.aclose()
    return warnings


async def server_warnings(conn: asyncpg.Connection) -> list[str]:
    """What an operator should change on the PostgreSQL server (nothing stops for it)."""
    warnings = []
    if await conn.fetchval("SHOW autovacuum") != "on":
        warnings.append(
            "Warning: autovacuum is off on this PostgreSQL server; the ledger's tables are"
            " then never vacuumed nor analyzed (set autovacuum = on in postgresql.conf)."
        )
    return warnings


async def apply_migrations(database_url: str) -> list[MigrationFile]:
    """Apply pending migrations (serialised across processes by the runner's lock)."""
    conn = await connect(database_url, timeout_s=PREFLIGHT_TIMEOUT_S)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def migration_status(database_url: str) -> list[MigrationStatus]:
    """The migration report, changing nothing."""
    conn = await connect(database_url, timeout_s=PREFLIGHT_TIMEOUT_S)
    try:
        return await status(conn)
    finally:
        await conn.close()


def load_serve_config(settings: Settings) -> dict[str, Any]:
    """`serve_config.yaml` with the HTTP host and port taken from settings."""
    path = settings.serve_config_path
    if not path.is_file():
        raise ConfigurationError(f"the Serve config {path} does not exist")
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    http = dict(config.get("http_options") or {})
    http.update(host=settings.http_host, port=settings.http_port)
    config["http_options"] = http
    return config


def route_prefixes(config: dict[str, Any]) -> list[str]:
    """The HTTP route prefix of every application exposed over HTTP."""
    return [app["route_prefix"] for app in config["applications"] if app.get("route_prefix")]


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir / "run" / PID_FILE_NAME


class DataDirClaim:
    """This process's claim on a data folder: an exclusive lock on its pid file, held while
    `dwaybank up` runs and released by the kernel if the process dies. A second `up` on the
    same folder fails to take it and leaves the file alone (it names the running process);
    checking, then writing, would let two starts race, and a refused start that removed the
    file on its way out would hide the running one from `dwaybank down`."""

    def __init__(self, settings: Settings) -> None:
        self.path = _pid_file(settings)
        self._fd: int | None = None

    @property
    def is_held(self) -> bool:
        """True while this process holds the folder."""
        return self._fd is not None

    def take(self) -> None:
        """Lock the pid file and write this process's id in it.

        Raises:
            ConfigurationError: another process holds the folder.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigurationError(
                f"dwaybank is already running on {self.path.parent.parent} (pid {other})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the pid file and unlock, if this process holds the folder."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def holder(self) -> int | None:
        """The pid of the process that holds the folder, or None. A pid file nobody holds
        locked is left over from a crash: its pid may belong to another process by now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        else:
            return None  # the lock was free: nobody runs here
        finally:
            os.close(fd)  # closing releases a lock taken here


def _down_checks(response: httpx.Response) -> str:
    """`; down: a (reason), b (reason)` from a readiness answer, when it says."""
    try:
        checks = response.json().get("checks", {})
    except ValueError:
        return ""
    down = [
        f"{name} ({c.get('reason', '?')})" for name, c in checks.items() if c.get("status") != "up"
    ]
    return f"; down: {', '.join(down)}" if down else ""


class StartInterruptedError(ClusterUnavailableError):
    """Ctrl-C or `dwaybank down` arrived while starting."""

    code = "GEN_START_INTERRUPTED"


def _require_free_port(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            variable = {
                "HTTP": "HTTP_PORT",
                "dashboard": "DASHBOARD_PORT",
                "HAProxy metrics": "HAPROXY_METRICS_PORT",
                "HAProxy stats": "HAPROXY_STATS_PORT",
            }[what]
            raise ConfigurationError(
                f"the {what} port {host}:{port} is in use; stop what holds it or set "
                f"DWAYBANK_{variable}"
            ) from exc


def _terminate(processes: list[psutil.Process]) -> None:
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=TERMINATE_WAIT_S)
    for process in stubborn:
        with contextlib.suppress(psutil.Error):
            process.kill()


class Runtime:
    """The running product: servers, Ray, Serve."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.servers: Servers | None = None
        self.is_ray_started = False
        self.stop_requested = threading.Event()
        self.claim = DataDirClaim(settings)

    @property
    def base_url(self) -> str:
        """Where HTTP clients reach the product."""
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self) -> list[str]:
        """Everything up to "ready"; returns the lines to print."""
        self.claim.take()
        ports = [
            (self.settings.http_host, self.settings.http_port, "HTTP"),
            (self.settings.dashboard_host, self.settings.dashboard_port, "dashboard"),
        ]
        if self.settings.serve_ingress is ServeIngress.HAPROXY:
            ports += [
                ("0.0.0.0", self.settings.haproxy_metrics_port, "HAProxy metrics"),  # noqa: S104 - HAProxy binds all interfaces
                ("0.0.0.0", self.settings.haproxy_stats_port, "HAProxy stats"),  # noqa: S104
            ]
        for host, port, what in ports:
            _require_free_port(host, port, what)
        load_keyring(
            self.settings
        )  # creates the development KEK, or refuses production without one
        config = load_serve_config(self.settings)
        self.servers = resolve_servers(self.settings)
        warnings = asyncio.run(preflight(self.settings, self.servers))
        applied = asyncio.run(apply_migrations(self.servers.database_url))
        self._check_stop()
        self._start_ray()
        self.install_signal_handlers()  # Ray's init replaces the process's SIGTERM handler
        self._check_stop()
        self._deploy(config)
        self._wait_ready(route_prefixes(config))
        self._check_stop()
        api = f"{self.base_url}/api/v1"
        return [
            f"DwayBank is up ({len(applied)} migrations applied now).",
            f"  API:        {api}",
            f"  Docs:       {self.base_url}/docs",
            f"  Ledger:     {self.base_url}/ledger",
            f"  Health:     {self.base_url}/health/ready",
            f"  Metrics:    {self.base_url}/metrics",
            f"  Dashboard:  http://{self.settings.dashboard_host}:{self.settings.dashboard_port}",
            "Press Ctrl-C to stop (or run `dwaybank down`).",
            *warnings,
        ]

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise StartInterruptedError("start interrupted by a stop request")

    def _start_ray(self) -> None:
        import ray  # noqa: PLC0415 - only `up` needs Ray

        assert self.servers is not None
        env = {
            "DATABASE_URL": self.servers.database_url,
            "REDIS_URL": self.servers.redis_url,
            "DWAYBANK_DATA_DIR": str(self.settings.data_dir.resolve()),
            **SERVE_CLIENT_ADDRESS_ENV,
            **serve_controller_env(self.settings),
        }
        if self.settings.serve_ingress is ServeIngress.HAPROXY:
            env.update(serve_ingress_env(self.settings))
        os.environ.update(env)  # Ray's local processes inherit this environment
        ray.init(
            namespace="dwaybank",
            include_dashboard=True,
            dashboard_host=self.settings.dashboard_host,
            dashboard_port=self.settings.dashboard_port,
            num_cpus=self.settings.ray_num_cpus,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self.is_ray_started = True

    def _deploy(self, config: dict[str, Any]) -> None:
        # `serve run config.yaml` does exactly this; the two calls are Serve's own entry points
        # for deploying a whole config (Ray is pinned, so the private module is stable for us).
        from ray.serve._private.api import serve_start  # noqa: PLC0415
        from ray.serve.schema import ServeDeploySchema  # noqa: PLC0415

        schema = ServeDeploySchema.model_validate(config)
        client = serve_start(http_options=schema.http_options.model_dump())
        client.deploy_apps(schema)

    def _wait_ready(self, prefixes: list[str]) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        pending = {("" if p == "/" else p) + "/health/ready" for p in prefixes}
        last = "no answer yet"
        with httpx.Client(timeout=READY_REQUEST_TIMEOUT_S) as client:
            while pending and time.monotonic() < deadline and not self.stop_requested.is_set():
                for path in sorted(pending):
                    try:
                        response = client.get(self.base_url + path)
                    except httpx.HTTPError as exc:
                        last = f"{path}: {type(exc).__name__}"
                        continue
                    if response.status_code == 200:
                        pending.discard(path)
                    else:
                        last = f"{path}: HTTP {response.status_code}{_down_checks(response)}"
                if pending:
                    time.sleep(READY_POLL_S)
        if pending:
            raise ClusterUnavailableError(
                f"the applications were not ready within {self.settings.start_timeout_s:.0f}s "
                f"({last}); see the Ray dashboard and /tmp/ray/session_latest/logs/serve"
            )

    def wait(self) -> None:
        """Block until Ctrl-C, SIGTERM or `dwaybank down`."""
        self.stop_requested.wait()

    def install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM ask `wait` to return."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_requested.set())

    def stop(self) -> None:
        """Stop Serve, Ray and the embedded servers this process started."""
        if self.is_ray_started:
            import ray  # noqa: PLC0415
            from ray import serve  # noqa: PLC0415

            # Ray's processes (and the HAProxy a Serve actor spawns) descend from this one;
            # whatever survives Ray's own shutdown is terminated so no port stays taken.
            descendants = psutil.Process().children(recursive=True)
            with contextlib.suppress(Exception):
                serve.shutdown()  # type: ignore[no-untyped-call]  # Ray's API is untyped
            ray.shutdown()
            self.is_ray_started = False
            _terminate(descendants)
        if self.servers is not None:
            self.servers.stop_started()
        self.claim.release()


def request_down(settings: Settings) -> int | None:
    """Ask the running `dwaybank up` to stop and wait for it; returns its pid, or None."""
    claim = DataDirClaim(settings)
    pid = claim.holder()
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_WAIT_S
    while time.monotonic() < deadline:
        if claim.holder() is None:
            return pid
        time.sleep(READY_POLL_S)
    raise ClusterUnavailableError(f"dwaybank (pid {pid}) did not stop within {DOWN_WAIT_S:.0f}s")
