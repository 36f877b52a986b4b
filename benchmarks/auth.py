"""Identity costs: login latency at 10 concurrent users, and token verification per request.

Login is measured twice: in bursts (all 10 users sign in at the same moment, again and again:
the latency a user sees when 10 sign in together) and back to back (each user signs in again
as soon as answered: the saturation throughput, where latency is only 10 / throughput). Login
runs through the real FastAPI app (httpx's ASGI transport, in this process) on a scratch
database: argon2id at the documented cost (settings: 19 MiB, 2 passes, 1 lane) in the
dedicated hash pool, the lockout guard, a Redis session, a refresh family in PostgreSQL, an
RS256 access token, and the audit row, for 10 users signing in concurrently and repeatedly.
Rate limits are lifted for the run (they would stop a benchmark, which is their job). Token
verification is `TokenVerifier.verify` on one core, the per-request cost the gateway pays: for a
token seen for the first time (RS256 and every claim) and for a repeat (the verifier remembers
verified tokens, re-checking only the key and the times).
The seed's target is p95 < 200 ms for authentication.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
from pydantic import SecretStr

from auth.assembly import assemble
from auth.dependencies import AuthDependencies, AuthLimits
from auth.endpoints import build_routers
from auth.lockout import AccountLockouts, InProcessLoginGuard, LockoutPolicy, RedisLockoutStore
from auth.messaging import Messenger, OutboxProvider
from auth.tokens import TokenSubject
from benchmarks.report import Result, percentiles, time_sync
from gateway.app import create_app
from kit.clock import SystemClock
from kit.crypto import EnvelopeCipher, KeyRing, decode_kek, generate_kek
from kit.db import Database, connect, dsn_with_database
from kit.embedded import EmbeddedRedis
from kit.migrations import migrate
from kit.ratelimit import RateLimitPolicy, SlidingLogLimiter, Window
from kit.redis_client import KeySpace, create_redis
from kit.settings import Settings
from users import service as users

USERS: Final = 10
LOGIN_DURATION_S: Final = 5.0
VERIFY_DURATION_S: Final = 1.0
FRESH_TOKENS: Final = 2_000  # distinct tokens: each is verified in full once
PASSWORD: Final = "Benchmark-Password-2026!"  # noqa: S105 - the benchmark users' password
UNLIMITED: Final = RateLimitPolicy("bench", (Window(100_000, 1),))


async def _accounts(deps: AuthDependencies) -> list[str]:
    emails = [f"bench-{uuid.uuid4().hex[:10]}@example.com" for _ in range(USERS)]
    password_hash = await deps.hasher.hash(PASSWORD)
    async with deps.db.transaction() as conn:
        for email in emails:
            user = await users.create_user(
                conn, email=email, password_hash=password_hash, phone_number=None
            )
            await users.mark_email_verified(conn, user.id, datetime.now(UTC))
    return emails


async def _login_loop(
    http: httpx.AsyncClient, email: str, deadline: float, *, once: bool = False
) -> list[float]:
    samples: list[float] = []
    while once or time.perf_counter() < deadline:
        started = time.perf_counter()
        response = await http.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"login failed during the benchmark: {response.status_code}")
        if once:
            break
    return samples


async def _bursts(http: httpx.AsyncClient, emails: list[str]) -> tuple[list[float], float]:
    """Every user signs in at the same moment; the next burst starts when all are done."""
    samples: list[float] = []
    started = time.perf_counter()
    deadline = started + LOGIN_DURATION_S
    while time.perf_counter() < deadline:
        runs = await asyncio.gather(*(_login_loop(http, e, 0.0, once=True) for e in emails))
        samples.extend(s for run in runs for s in run)
    return samples, time.perf_counter() - started


async def _measure(settings: Settings, dsn: str, redis_url: str) -> list[Result]:
    db = await Database.open(settings, dsn)
    redis = create_redis(settings, redis_url)
    cipher = EnvelopeCipher(KeyRing(decode_kek(generate_kek())))
    clock = SystemClock()
    policy = LockoutPolicy.from_settings(settings)
    guard = InProcessLoginGuard(
        AccountLockouts(
            RedisLockoutStore(redis, KeySpace(settings.redis_key_prefix), policy), policy, clock
        ),
        SlidingLogLimiter(clock),
    )
    outbox = OutboxProvider(db)
    limits = AuthLimits(login=UNLIMITED, register=UNLIMITED, refresh=UNLIMITED)
    deps = await assemble(
        settings,
        db=db,
        redis=redis,
        cipher=cipher,
        guard=guard,
        clock=clock,
        messenger=Messenger(sms=outbox, email=outbox),
        limits=limits,
    )
    try:
        emails = await _accounts(deps)
        app = create_app(title="bench", version="bench", routers=build_routers(deps), checks=list)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await _login_loop(http, emails[0], time.perf_counter() + 0.5)  # warm up
            bursts, burst_s = await _bursts(http, emails)
            deadline = time.perf_counter() + LOGIN_DURATION_S
            started = time.perf_counter()
            runs = await asyncio.gather(*(_login_loop(http, e, deadline) for e in emails))
            elapsed = time.perf_counter() - started
            token = (
                await http.post(
                    "/api/v1/auth/login", json={"email": emails[0], "password": PASSWORD}
                )
            ).json()["access_token"]
        cost = settings.auth_argon2_memory_kib // 1024, settings.auth_argon2_time_cost
        note = f"argon2id {cost[0]} MiB x {cost[1]} passes, target p95 < 200 ms"
        p50, p95, p99 = percentiles(bursts)
        burst = Result(
            f"login over HTTP, {USERS} users at once (bursts)",
            "login",
            len(bursts) / burst_s,
            p50,
            p95,
            p99,
            note=note,
        )
        samples = [s for run in runs for s in run]
        p50, p95, p99 = percentiles(samples)
        saturated = Result(
            f"login over HTTP, {USERS} users back to back",
            "login",
            len(samples) / elapsed,
            p50,
            p95,
            p99,
            note="saturation: no think time",
        )
        claims = deps.verifier.verify(token)
        subject = TokenSubject(claims.sub, claims.role, claims.tier, claims.kyc_status)
        fresh = iter(
            [
                deps.signer.sign_access(
                    subject,
                    session_id=claims.sid,
                    scope=claims.scope,
                    amr=claims.amr,
                    acr=claims.acr,
                    auth_time=claims.auth_time,
                )
                for _ in range(FRESH_TOKENS)
            ]
        )
        first = time_sync(
            "access token verification, first sight (RS256 + claims)",
            "token",
            lambda: deps.verifier.verify(next(fresh)),
            calls=FRESH_TOKENS,
        )
        again = time_sync(
            "access token verification, a token seen before",
            "token",
            lambda: deps.verifier.verify(token),
            duration_s=VERIFY_DURATION_S,
        )
        return [burst, saturated, first, again]
    finally:
        deps.hasher.close()
        await redis.aclose()
        await db.close()


def run(admin_dsn: str, server_label: str) -> list[Result]:
    """Measure on a scratch database of the given server (dropped afterwards)."""
    del server_label
    name = f"dwaybank_bench_auth_{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="dwaybank-bench-auth-"))
    embedded: EmbeddedRedis | None = None
    redis_url = os.environ.get("REDIS_URL")
    if redis_url is None:
        embedded = EmbeddedRedis(folder)
        redis_url = embedded.start()

    async def main() -> list[Result]:
        admin = await connect(admin_dsn, timeout_s=10)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        dsn = dsn_with_database(admin_dsn, name)
        try:
            conn = await connect(dsn, timeout_s=10)
            await migrate(conn)
            await conn.close()
            settings = Settings(
                DATABASE_URL=SecretStr(dsn),
                REDIS_URL=SecretStr(str(redis_url)),
                data_dir=folder,
                redis_key_prefix=f"bench-{uuid.uuid4().hex[:6]}:",
            )
            return await _measure(settings, dsn, str(redis_url))
        finally:
            admin = await connect(admin_dsn, timeout_s=10)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    try:
        return asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)
