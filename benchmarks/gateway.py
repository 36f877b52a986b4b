"""The edge stack's cost: one trivial route with and without the stack, measured in one run.

Three uvicorn servers (uvloop + httptools, one process each, outside Ray) serve the same
`GET /bench/ping`:

- `bare`: a plain FastAPI app;
- `stack, public route`: the same route behind `create_app`'s full stack with a public route
  (request id, security headers, observer with metrics and the audit line, size limit, bots,
  admin address check, CORS; the authentication and rate-limit layers pass it through);
- `stack, JWT + rate limit`: a protected route with an RS256 bearer token checked by the identity
  area's `TokenVerifier` (a client repeats its token, so after the first request the verifier's
  memory answers; the first verification's cost is printed apart) and a rate-limit rule decided
  by the in-process sliding-log limiter (100,000 per second: far above the load).

The audit line is formatted as in production (JSON, INFO) and written to /dev/null. The load
comes from this process over keep-alive connections with a minimal HTTP/1.1 client (a few
microseconds per request, so the servers, not the client, are measured), `CONCURRENCY`
connections at a time; the variants alternate over `ROUNDS` rounds to spread the noise of a
shared machine evenly. Two measurements per variant:

- saturated: every connection sends its next request as soon as the answer arrives, which gives
  the throughput; its latencies are mostly queueing (32 requests in line), so they grow as the
  throughput falls;
- paced: the same connections at `PACED_RATE_PER_S` in total, or at `PACED_SHARE` of the
  slowest variant's saturated rate in the first round when that is lower (on a slow machine a
  fixed rate can come close to saturation, and the p99 then measures queueing, not the stack),
  which gives the latency a request actually pays for the stack.

Targets (issue 5): p99 overhead <= 2 ms (paced), throughput loss <= 20 % (saturated).

The same three apps are then measured as deployed: one Ray Serve application each, in
throughput-optimized mode behind the HAProxy ingress as `dwaybank up` runs them, with the
ingress deployment's options and the logging configuration of `serve_config.yaml`, reached at
`/<variant>/bench/ping` through HAProxy. This is the cost a client of the product sees: the
stack's microseconds against everything a request costs on its way through Serve. The replica's
CPU per request (from /proc, via psutil) is printed beside each line.

A last table times the apps called directly as ASGI applications in one process, without HTTP
or a client: the CPU each variant spends per request, the figure least disturbed by a busy
machine (the best of `CPU_ROUNDS` interleaved rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import jwt
import psutil
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, FastAPI
from jwt.algorithms import RSAAlgorithm

from benchmarks.report import Result, free_port, percentiles, print_table

CONCURRENCY: Final = 32
WARMUP_S: Final = 1.0
MEASURE_S: Final = 4.0
ROUNDS: Final = 2
PACED_RATE_PER_S: Final = 1000
PACED_SHARE: Final = 0.25  # of the slowest variant's saturated rate, when below PACED_RATE_PER_S
PACED_S: Final = 3.0
CPU_ROUNDS: Final = 5
CPU_CALLS: Final = 3000
RECONNECTS_MAX: Final = 1000  # per load run: beyond this a closing server is an error
FRESH_TOKENS: Final = 300  # distinct tokens, for the cost of a first verification
SERVER_START_DEADLINE_S: Final = 30.0
SERVE_ROUNDS: Final = 3  # Serve shares the cores with more processes: more rounds, less noise
# Serve's own periodic work (metrics pushes, health checks, the controller's polls) lands in
# the tail of any one second: a p99 needs more samples there.
SERVE_PACED_S: Final = 9.0
SERVE_START_DEADLINE_S: Final = 240.0
# After every app answers: HAProxy is reloaded once more when the last app's replica joins
# its backend (the app may answer through Serve's fallback proxy first), closing idle
# keep-alive connections; the load waits that out rather than measure reconnects.
SERVE_SETTLE_S: Final = 3.0
SERVE_CONFIG: Final = Path(__file__).resolve().parents[1] / "serve_config.yaml"
SERVE_APPLICATION: Final = "api"  # whose ingress options the benchmark applications take
AUDIENCE: Final = "dwaybank-bench"
ISSUER: Final = "https://bench.dwaybank.test"
KID: Final = "bench-key"
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)

VARIANTS: Final = {
    "bare": "bare FastAPI",
    "public": "edge stack, public route",
    "protected": "edge stack, JWT + rate limit",
}


def _verifier(public_pem: bytes) -> Any:
    """The identity area's own `TokenVerifier` (RS256, header, key and claim checks, and its
    memory of verified tokens), holding the benchmark's one key."""
    from auth.tokens import TokenVerifier, VerificationKey  # noqa: PLC0415 - child process only
    from kit.clock import SystemClock  # noqa: PLC0415

    public_key = serialization.load_pem_public_key(public_pem)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("the benchmark key is RSA")
    jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
    verifier = TokenVerifier(_NoKeySource(), issuer=ISSUER, audience=AUDIENCE, clock=SystemClock())
    verifier.install(
        [VerificationKey(KID, {**jwk, "kid": KID, "alg": "RS256", "use": "sig"}, None)]
    )
    return verifier


class _NoKeySource:
    """The benchmark installs its key directly; nothing is ever loaded."""

    async def verification_keys(self) -> list[Any]:
        raise NotImplementedError

    async def signing_key(self) -> Any:
        raise NotImplementedError


def _ping_router() -> APIRouter:
    router = APIRouter()

    @router.get("/bench/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return router


def _build(variant: str, public_pem: bytes, *, echo_request_id: bool = True) -> FastAPI:
    from gateway.app import FASTAPI_TELEMETRY_OFF, create_app  # noqa: PLC0415 - child only
    from gateway.constants import RATE_LIMIT_LIMIT_MAX  # noqa: PLC0415
    from gateway.limiter import SlidingLogLimiter  # noqa: PLC0415
    from gateway.policy import (  # noqa: PLC0415
        AuthPolicy,
        GatewayPolicy,
        LimitWindow,
        RateLimitPolicy,
        RateLimitRule,
        RouteMatch,
    )
    from kit.clock import SystemClock  # noqa: PLC0415

    if variant == "bare":
        # Configured as ours are (FastAPI's own OpenTelemetry off), so that the difference is
        # the stack alone.
        app = FastAPI(telemetry=FASTAPI_TELEMETRY_OFF)
        app.include_router(_ping_router())
        return app
    is_public = variant == "public"
    rule = RateLimitRule(
        name="bench",
        routes=(RouteMatch(path="/bench"),),
        windows=(LimitWindow(name="second", seconds=1, limit=RATE_LIMIT_LIMIT_MAX),),
    )
    public = (*AuthPolicy().public, RouteMatch(path="/bench")) if is_public else AuthPolicy().public
    policy = GatewayPolicy(
        auth=AuthPolicy(public=public),
        rate_limits=RateLimitPolicy(rules=() if is_public else (rule,)),
    )
    return create_app(
        title="bench",
        version="1",
        routers=[_ping_router()],
        checks=list,
        policy=policy,
        verifier=_verifier(public_pem),
        limiter=SlidingLogLimiter(SystemClock(), keys_max=10),
        echo_request_id=echo_request_id,
    )


def _log_like_production() -> None:
    from kit.telemetry import configure_logging  # noqa: PLC0415 - child process only

    # The audit lines' sink, for good: the log handler writes to the process's real stderr.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stderr__.fileno() if sys.__stderr__ else 2)
    configure_logging("INFO", is_json=True)
    logging.getLogger("gateway.app").setLevel(logging.ERROR)


def _serve(variant: str, public_pem: bytes, sock: socket.socket) -> None:
    import uvicorn  # noqa: PLC0415 - child process only

    _log_like_production()
    config = uvicorn.Config(
        _build(variant, public_pem),
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
    )
    uvicorn.Server(config).run(sockets=[sock])


def _cpu_per_request(
    public_pem: bytes, authorization: bytes, fresh_tokens: list[str]
) -> dict[str, float]:
    """Microseconds per request of each variant called as an ASGI app (best of the rounds)."""
    _log_like_production()
    apps = {variant: _build(variant, public_pem) for variant in VARIANTS}

    def scope(variant: str) -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"dwaybank-bench/1.0")]
        if variant == "protected":
            headers.append((b"authorization", authorization))
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/bench/ping",
            "raw_path": b"/bench/ping",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"the benchmark route answered {message['status']}")

    async def time_calls(variant: str) -> float:
        app = apps[variant]
        started = time.perf_counter()
        for _ in range(CPU_CALLS):
            await app(scope(variant), receive, send)
        return (time.perf_counter() - started) / CPU_CALLS * 1e6

    verifier = _verifier(public_pem)
    token = authorization.decode().removeprefix("Bearer ")

    def time_verification() -> float:
        started = time.perf_counter()
        for _ in range(CPU_CALLS):
            verifier.verify(token)
        return (time.perf_counter() - started) / CPU_CALLS * 1e6

    def time_first_verification() -> float:
        fresh = _verifier(public_pem)  # remembers nothing yet
        started = time.perf_counter()
        for each in fresh_tokens:
            fresh.verify(each)
        return (time.perf_counter() - started) / len(fresh_tokens) * 1e6

    best = dict.fromkeys([*VARIANTS, "verify", "verify_first"], float("inf"))
    for _ in range(CPU_ROUNDS):
        for variant in VARIANTS:
            best[variant] = min(best[variant], asyncio.run(time_calls(variant)))
        best["verify"] = min(best["verify"], time_verification())
        best["verify_first"] = min(best["verify_first"], time_first_verification())
    return best


class _Load(NamedTuple):
    samples: list[float]  # seconds per answered request
    failures: int  # answers other than 200
    elapsed_s: float
    reconnects: int  # keep-alive connections the server closed between requests


async def _load(
    port: int, request: bytes, duration_s: float, *, rate_per_s: float | None = None
) -> _Load:
    """Keep-alive load from `CONCURRENCY` connections; paced at `rate_per_s` when given.

    A server may close a keep-alive connection between two requests (HAProxy does on every
    graceful reload, which Serve triggers whenever an application's replicas change); as any
    HTTP client would, the worker then reconnects and sends the request again, at most
    `RECONNECTS_MAX` times. The request's time counts from the resend."""
    samples: list[float] = []
    failures = reconnects = 0
    deadline = time.perf_counter() + duration_s
    interval_s = 0.0 if rate_per_s is None else CONCURRENCY / rate_per_s

    async def worker(offset_s: float) -> None:
        nonlocal failures, reconnects
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        next_at = time.perf_counter() + offset_s
        try:
            while time.perf_counter() < deadline:
                if interval_s:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval_s
                started = time.perf_counter()
                writer.write(request)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    # No byte of an answer came: the server closed (or reset) the idle line.
                    is_closed_between = not getattr(exc, "partial", b"")
                    if not is_closed_between or reconnects >= RECONNECTS_MAX:
                        raise
                    reconnects += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    started = time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                length = _LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                samples.append(time.perf_counter() - started)
                failures += not head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    began = time.perf_counter()
    spread_s = interval_s / CONCURRENCY
    await asyncio.gather(*(worker(i * spread_s) for i in range(CONCURRENCY)))
    return _Load(samples, failures, time.perf_counter() - began, reconnects)


def _request(path: str, headers: bytes) -> bytes:
    """The benchmark's keep-alive GET of `path` with these extra header lines."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"User-Agent: dwaybank-bench/1.0\r\n"
        + headers
        + b"\r\n"
    )


def _wait_answering(port: int, path: str, headers: bytes) -> None:
    """Until `path` answers 200: an application Serve reports ready may not be routed by the
    HAProxy ingress yet (its configuration is reloaded after), which closes the connection."""
    request = _request(path, headers)
    deadline = time.monotonic() + SERVE_START_DEADLINE_S
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ):
            sock.sendall(request)
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{path} did not answer 200 through the Serve ingress")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + SERVER_START_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the benchmark server on port {port} did not start")


def _token(private_key: rsa.RSAPrivateKey) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "sub": str(uuid.uuid4()),
        "sid": "ses_bench",
        "scope": "wallets:read",
        "amr": ["pwd", "mfa"],
        "acr": "mfa",
        "auth_time": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "role": "user",
        "tier": "basic",
        "kyc_status": "approved",
    }
    headers = {"kid": KID, "typ": "at+jwt"}
    return jwt.encode(claims, private_key, algorithm="RS256", headers=headers)


class _BenchIngress:
    """A Serve ingress replica serving one variant's app (built on the replica, as ours are)."""

    def __init__(self, variant: str, public_pem: bytes) -> None:
        self.variant = variant
        self.public_pem = public_pem

    async def __serve_build_asgi_app__(self) -> FastAPI:
        _log_like_production()
        # As in `deployments.ingress`: Serve's proxy layer already echoes the request id.
        return _build(self.variant, self.public_pem, echo_request_id=False)


def _serve_options() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ingress deployment options and logging configuration of `serve_config.yaml`
    (one replica: the benchmark measures a replica, not the autoscaler)."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    application = next(a for a in config["applications"] if a["name"] == SERVE_APPLICATION)
    ingress = next(d for d in application["deployments"] if d["name"] == "Ingress")
    options = {
        "num_replicas": 1,
        "max_ongoing_requests": ingress["max_ongoing_requests"],
        "max_queued_requests": ingress["max_queued_requests"],
        "ray_actor_options": ingress["ray_actor_options"],
    }
    return options, config["logging_config"]


def _serve_host(public_pem: bytes, ports: tuple[int, int, int], ready: Any, stop: Any) -> None:
    """Child process: a local Ray running Serve as `dwaybank up` does, one app per variant."""
    from deployments.runtime import serve_ingress_env  # noqa: PLC0415 - child process only
    from kit.settings import Settings  # noqa: PLC0415

    http_port, metrics_port, stats_port = ports
    settings = Settings(haproxy_metrics_port=metrics_port, haproxy_stats_port=stats_port)
    os.environ.update(serve_ingress_env(settings))
    # The replicas import this module by name.
    root = str(SERVE_CONFIG.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    options, logging_config = _serve_options()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        for variant in VARIANTS:
            deployment = serve.deployment(
                name=f"Bench_{variant}", logging_config=logging_config, **options
            )(serve.ingress()(_BenchIngress))
            serve.run(
                deployment.bind(variant, public_pem),
                name=variant,
                route_prefix=f"/{variant}",
                logging_config=logging_config,
            )
        ready.set()
        stop.wait(SERVE_START_DEADLINE_S * 10)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray's API is untyped
        ray.shutdown()


def _replica_cpu_s(variant: str) -> float:
    """CPU seconds the Serve replica of `variant` has used so far."""
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        if f"ServeReplica:{variant}:" in " ".join(process.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def _measure(
    targets: dict[str, tuple[int, str]],
    headers: dict[str, bytes],
    rounds: int,
    paced_s: float,
    cpu_s: Callable[[str], float] | None = None,
) -> tuple[list[Result], list[Result]]:
    """Saturated and paced results per variant; `targets` maps a variant to (port, path);
    `paced_s` of paced load per variant in all."""
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    paced: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    elapsed: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    failures: dict[str, int] = dict.fromkeys(VARIANTS, 0)
    reconnects: dict[str, int] = dict.fromkeys(VARIANTS, 0)
    round_rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    cpu_used: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    pace_per_s = 0.0
    for _ in range(rounds):
        for variant, (port, path) in targets.items():
            request = _request(path, headers.get(variant, b""))
            asyncio.run(_load(port, request, WARMUP_S))
            before = cpu_s(variant) if cpu_s else 0.0
            load = asyncio.run(_load(port, request, MEASURE_S))
            cpu_used[variant] += (cpu_s(variant) - before) if cpu_s else 0.0
            samples[variant] += load.samples
            elapsed[variant] += load.elapsed_s
            failures[variant] += load.failures
            reconnects[variant] += load.reconnects
            round_rates[variant].append(len(load.samples) / load.elapsed_s)
        if not pace_per_s:  # fixed after the first round, so every paced sample has one rate
            slowest_per_s = min(rates[0] for rates in round_rates.values())
            pace_per_s = min(PACED_RATE_PER_S, max(1, round(PACED_SHARE * slowest_per_s)))
        for variant, (port, path) in targets.items():
            request = _request(path, headers.get(variant, b""))
            load = asyncio.run(_load(port, request, paced_s / rounds, rate_per_s=pace_per_s))
            paced[variant] += load.samples
            failures[variant] += load.failures
            reconnects[variant] += load.reconnects
    saturated: list[Result] = []
    at_rate: list[Result] = []
    for variant, label in VARIANTS.items():
        notes = [f"{failures[variant]} non-200"] if failures[variant] else []
        if reconnects[variant]:
            notes.append(f"{reconnects[variant]} reconnects")
        if variant != "bare":  # the spread within this run, against bare in the same round
            pairs = zip(round_rates[variant], round_rates["bare"], strict=True)
            notes.append("loss by round " + " / ".join(f"{1 - r / b:.0%}" for r, b in pairs))
        if cpu_s is not None and samples[variant]:
            notes.append(f"replica CPU {cpu_used[variant] / len(samples[variant]) * 1e6:.0f} us")
        rate = len(samples[variant]) / elapsed[variant]
        saturated.append(
            Result(label, "req", rate, *percentiles(samples[variant]), "; ".join(notes))
        )
        at_rate.append(Result(label, "req", pace_per_s, *percentiles(paced[variant])))
    return saturated, at_rate


def _on_uvicorn(public_pem: bytes, headers: dict[str, bytes]) -> tuple[list[Result], list[Result]]:
    context = multiprocessing.get_context("spawn")
    servers: dict[str, tuple[Any, int]] = {}
    try:
        for variant in VARIANTS:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(CONCURRENCY * 4)
            process = context.Process(target=_serve, args=(variant, public_pem, sock), daemon=True)
            process.start()
            servers[variant] = (process, sock.getsockname()[1])
            sock.close()
        for _, port in servers.values():
            _wait_listening(port)
        targets = {variant: (port, "/bench/ping") for variant, (_, port) in servers.items()}
        return _measure(targets, headers, ROUNDS, PACED_S)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.join(timeout=10)


def _on_serve(public_pem: bytes, headers: dict[str, bytes]) -> tuple[list[Result], list[Result]]:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    http_port = free_port()
    ports = (http_port, free_port(), free_port())
    host = context.Process(target=_serve_host, args=(public_pem, ports, ready, stop))
    host.start()
    try:
        if not ready.wait(SERVE_START_DEADLINE_S):
            raise RuntimeError("the benchmark's Serve applications did not start")
        targets = {variant: (http_port, f"/{variant}/bench/ping") for variant in VARIANTS}
        for variant, (port, path) in targets.items():
            _wait_answering(port, path, headers.get(variant, b""))
        time.sleep(SERVE_SETTLE_S)  # Serve's proxy may answer before HAProxy's last reload
        return _measure(targets, headers, SERVE_ROUNDS, SERVE_PACED_S, _replica_cpu_s)
    finally:
        stop.set()
        host.join(timeout=SERVE_START_DEADLINE_S)
        if host.is_alive():
            host.kill()


def results() -> dict[str, Any]:
    """Saturated and paced results on uvicorn and on Serve, and the CPU us per request."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = _token(private_key)
    headers = {"protected": f"Authorization: Bearer {token}\r\n".encode()}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        fresh_tokens = [_token(private_key) for _ in range(FRESH_TOKENS)]
        cpu_us = pool.apply(
            _cpu_per_request, (public_pem, f"Bearer {token}".encode(), fresh_tokens)
        )
    return {
        "uvicorn": _on_uvicorn(public_pem, headers),
        "serve": _on_serve(public_pem, headers),
        "cpu_us": cpu_us,
    }


def _print_overhead(saturated: list[Result], at_rate: list[Result]) -> None:
    for index in range(1, len(saturated)):
        loss = 1 - saturated[index].rate_per_s / saturated[0].rate_per_s
        p99_ms = (at_rate[index].p99_ms or 0.0) - (at_rate[0].p99_ms or 0.0)
        saturated_p99_ms = (saturated[index].p99_ms or 0.0) - (saturated[0].p99_ms or 0.0)
        print(
            f"  {saturated[index].name}: throughput loss {loss:.0%} (target <= 20%), "
            f"p99 overhead {p99_ms:+.2f} ms paced (target <= 2 ms), "
            f"{saturated_p99_ms:+.2f} ms saturated"
        )


def run() -> None:
    """Measure and print the tables and the overhead against the targets."""
    measured = results()
    saturated, at_rate = measured["serve"]
    title = f"Gateway edge stack as deployed: Ray Serve + HAProxy, saturated ({CONCURRENCY} conns)"
    print_table(title, saturated)
    print_table(
        f"Gateway edge stack on Serve, paced at {at_rate[0].rate_per_s:,.0f} requests/s", at_rate
    )
    _print_overhead(saturated, at_rate)
    saturated, at_rate = measured["uvicorn"]
    title = f"Gateway edge stack alone on uvicorn, saturated ({CONCURRENCY} keep-alive connections)"
    print_table(title, saturated)
    print_table(
        f"Gateway edge stack on uvicorn, paced at {at_rate[0].rate_per_s:,.0f} requests/s", at_rate
    )
    _print_overhead(saturated, at_rate)
    cpu_us = measured["cpu_us"]
    print("\nGateway edge stack, CPU per request called in-process (no HTTP)")
    for variant, label in VARIANTS.items():
        extra = cpu_us[variant] - cpu_us["bare"]
        print(f"  {label:<60} {cpu_us[variant]:8.1f} us   (stack {extra:+.1f} us)")
    first_us, verify_us = cpu_us["verify_first"], cpu_us["verify"]
    print(f"  {'  token verification, first sight (PyJWT, RS256)':<60} {first_us:8.1f} us")
    print(f"  {'  token verification, a token seen before':<60} {verify_us:8.1f} us")
