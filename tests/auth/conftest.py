"""Fixtures of the identity tests: the domain wired to the real test servers, and the HTTP app.

`deps` assembles `AuthDependencies` exactly as the wiring does, but with the in-process
`LoginGuard` (the UserShard-backed one is tested in tests/actors), a `FrozenClock` the tests
move by hand, and the local outbox as both message providers. `client` drives the FastAPI app
built by `gateway.app.create_app` through httpx's ASGI transport: real HTTP semantics, real
PostgreSQL and Redis, real crypto. Each test uses fresh email addresses, since the identity
tables are committed to (the flows span many transactions).
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from auth.assembly import assemble
from auth.dependencies import AuthDependencies, AuthLimits
from auth.endpoints import build_routers
from auth.lockout import AccountLockouts, InProcessLoginGuard, LockoutPolicy, RedisLockoutStore
from auth.messaging import Messenger, OutboxProvider
from auth.otp import totp
from gateway.admin import admin_router
from gateway.app import create_app
from gateway.limiter import SlidingLogLimiter as EdgeLimiter
from gateway.policy import GatewayPolicy
from kit.clock import FrozenClock
from kit.crypto import EnvelopeCipher, load_keyring
from kit.db import Database
from kit.ratelimit import SlidingLogLimiter
from kit.redis_client import KeySpace
from kit.settings import Settings
from users import service as users
from users.models import Role

PASSWORD = "Correct-Horse-Battery-9"
LOCK_WAIT_LOOKS_MAX = 500  # how often a test looks for requests waiting on a lock
LOCK_WAIT_LOOK_S = 0.01
NEW_PASSWORD = "Tranquil-Meadow-Lantern-42"


def new_email() -> str:
    """A fresh address (tests share committed tables)."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that moves only when a test says so."""
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="session")
def cipher(settings: Settings) -> EnvelopeCipher:
    """Envelope encryption under the test data folder's development key."""
    return EnvelopeCipher(load_keyring(settings))


def in_process_guard(
    redis_client: aioredis.Redis, settings: Settings, clock: FrozenClock
) -> InProcessLoginGuard:
    """The single-process LoginGuard over the test Redis."""
    policy = LockoutPolicy.from_settings(settings)
    store = RedisLockoutStore(redis_client, KeySpace(settings.redis_key_prefix), policy)
    return InProcessLoginGuard(AccountLockouts(store, policy, clock), SlidingLogLimiter(clock))


async def wire(
    settings: Settings,
    db: Database,
    redis_client: aioredis.Redis,
    cipher: EnvelopeCipher,
    clock: FrozenClock,
    *,
    limits: AuthLimits | None = None,
) -> AuthDependencies:
    """The identity domain on the test servers (the local outbox for messages); the caller
    closes its hasher."""
    outbox = OutboxProvider(db)
    return await assemble(
        settings,
        db=db,
        redis=redis_client,
        cipher=cipher,
        guard=in_process_guard(redis_client, settings, clock),
        clock=clock,
        messenger=Messenger(sms=outbox, email=outbox),
        limits=limits or AuthLimits(),
    )


@pytest.fixture
async def deps(
    settings: Settings,
    db: Database,
    redis_client: aioredis.Redis,
    cipher: EnvelopeCipher,
    clock: FrozenClock,
) -> AsyncIterator[AuthDependencies]:
    """The identity domain, wired to the test servers."""
    wired = await wire(settings, db, redis_client, cipher, clock)
    yield wired
    wired.hasher.close()


def build_app(deps: AuthDependencies) -> FastAPI:
    """The ingress app with the identity routers, as a replica builds it: the default edge
    policy (which `config/gateway.yaml` spells out), its authentication slot filled by the
    identity area's verifier."""
    return create_app(
        title="DwayBank API",
        version="test",
        routers=build_routers(deps),
        checks=list,
        verifier=deps.verifier,
        clock=deps.clock,
    )


def build_admin_app(deps: AuthDependencies, policy: GatewayPolicy) -> FastAPI:
    """The API as a replica builds it with the admin surface: the edge stack under `policy`,
    the identity area's verifier, an exact in-process limiter, the identity routers and the
    admin router."""
    limiter = EdgeLimiter(deps.clock)
    return create_app(
        title="DwayBank API",
        version="test",
        routers=[
            *build_routers(deps),
            admin_router(deps, limiter=limiter, rate_policy=policy.rate_limits),
        ],
        checks=list,
        policy=policy,
        verifier=deps.verifier,
        limiter=limiter,
        clock=deps.clock,
    )


@pytest.fixture
async def client(deps: AuthDependencies) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to the app, in process."""
    transport = httpx.ASGITransport(app=build_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        yield http


async def outbox_code(client: httpx.AsyncClient, to: str) -> str:
    """The 6-digit code of the newest message to `to`, read through the dev outbox route."""
    response = await client.get("/api/v1/dev/outbox", params={"to": to})
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    assert messages, f"no message to {to}"
    found = re.search(r"\b(\d{6})\b", messages[0]["body"])
    assert found is not None
    return found.group(1)


@dataclass
class Account:
    """A registered, verified user and the tokens of its latest login."""

    email: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def bearer(self) -> dict[str, str]:
        """The Authorization header of the latest access token."""
        return {"Authorization": f"Bearer {self.access_token}"}


async def registered(client: httpx.AsyncClient, *, phone: str | None = None) -> Account:
    """Register and verify a fresh user, then sign in (password only)."""
    email = new_email()
    body = {"email": email, "password": PASSWORD}
    if phone:
        body["phone_number"] = phone
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    code = await outbox_code(client, email)
    response = await client.post("/api/v1/auth/verify-email", json={"email": email, "code": code})
    assert response.status_code == 200, response.text
    account = Account(email=email)
    await login(client, account)
    return account


async def login(client: httpx.AsyncClient, account: Account, **extra: str) -> httpx.Response:
    """Sign in; on success, keep the tokens on the account."""
    body = {"email": account.email, "password": PASSWORD, **extra}
    response = await client.post("/api/v1/auth/login", json=body)
    if response.status_code == 200:
        account.access_token = response.json()["access_token"]
        account.refresh_token = response.json()["refresh_token"]
    return response


async def mfa_token(client: httpx.AsyncClient, account: Account, password: str = PASSWORD) -> str:
    """The `mfa_token` of a sign-in that asks for its second step."""
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": password}
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "AUTH_MFA_REQUIRED"
    return str(response.json()["details"]["mfa_token"])


async def verify_second_step(
    client: httpx.AsyncClient, token: str, method: str, code: str
) -> httpx.Response:
    """Finish a sign-in's second step (`POST /mfa/verify`)."""
    return await client.post(
        "/api/v1/auth/mfa/verify", json={"mfa_token": token, "method": method, "code": code}
    )


async def start_totp(client: httpx.AsyncClient, account: Account) -> bytes:
    """Start TOTP enrolment for a signed-in account (not confirmed yet); its secret."""
    response = await client.post("/api/v1/auth/mfa/totp/enroll", headers=account.bearer)
    assert response.status_code == 200, response.text
    text = response.json()["secret"]
    return base64.b32decode(text + "=" * (-len(text) % 8))


async def with_totp(client: httpx.AsyncClient, account: Account, clock: FrozenClock) -> bytes:
    """Enrol and confirm TOTP for a signed-in account; its secret."""
    secret = await start_totp(client, account)
    code = totp(secret, clock.now())
    response = await client.post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": code}, headers=account.bearer
    )
    assert response.status_code == 200, response.text
    account.access_token = response.json()["access_token"]
    account.refresh_token = response.json()["refresh_token"]
    clock.advance(30)  # the next code belongs to a new step (codes are accepted once)
    return secret


async def second_session(
    client: httpx.AsyncClient, account: Account, secret: bytes, clock: FrozenClock
) -> Account:
    """Another sign-in of the same user (password and TOTP): a second session."""
    other = Account(email=account.email)
    response = await login(client, other, mfa_code=totp(secret, clock.now()))
    assert response.status_code == 200, response.text
    return other


async def administrator(
    client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
) -> Account:
    """A registered user promoted to the admin role, signed in with a password and TOTP."""
    account = await registered(client)
    secret = await with_totp(client, account, clock)
    async with deps.db.transaction() as conn:
        user = await users.find_by_email(conn, account.email)
        assert user is not None
        await users.set_role(conn, user.id, Role.ADMIN)
    assert (await login(client, account, mfa_code=totp(secret, clock.now()))).status_code == 200
    return account


async def until_waiting(
    deps: AuthDependencies,
    blocked_by: Callable[[list[int]], bool],
    *,
    done: asyncio.Task[Any] | None = None,
    count: int = 1,
) -> bool:
    """Whether, within a bounded number of looks, `count` backends of this database came to
    wait on locks held by backends that `blocked_by` accepts (given their pids), or `done`
    finished. A test asserts it: its interleaving is then the one it names."""
    async with deps.db.connection() as conn:
        for _ in range(LOCK_WAIT_LOOKS_MAX):
            if done is not None and done.done():
                return True
            rows = await conn.fetch(
                "SELECT pg_blocking_pids(pid) AS blockers FROM pg_stat_activity"
                " WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
            )
            if sum(blocked_by(list(row["blockers"])) for row in rows) >= count:
                return True
            await asyncio.sleep(LOCK_WAIT_LOOK_S)
    return False


async def until_blocked(deps: AuthDependencies, holder_pid: int, *, count: int = 1) -> bool:
    """Whether `count` backends came to wait on a lock the `holder_pid` backend holds, within a
    bounded number of looks."""
    async with deps.db.connection() as conn:
        for _ in range(LOCK_WAIT_LOOKS_MAX):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder_pid,
            )
            if waiting >= count:
                return True
            await asyncio.sleep(LOCK_WAIT_LOOK_S)
    return False
