"""An administrator's action or a sign-in racing another change to the same account: neither
undoes the other, and a user's sessions never drop below what the cap requires.

Method: as in test_account_races, the interleaving is played explicitly, never left to timing.
Where a request must be caught in the middle of its transaction, the test holds a PostgreSQL
lock (the competing change's own uncommitted row) until the request waits on it, then commits.
Where the step to hold is a Redis one (a login's eviction of its oldest sessions), the login
runs through a store that stops between counting the index and evicting, until told to go on.
Real PostgreSQL and Redis throughout.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any, Final

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from auth.constants import SESSIONS_LISTED_MAX
from auth.dependencies import AuthDependencies
from auth.models import AuthEvent
from auth.service import admin
from auth.sessions import Session, SessionStore
from kit.clock import Clock, FrozenClock
from kit.ids import IdPrefix, parse_id
from kit.redis_client import KeySpace
from kit.settings import Settings
from tests.auth.conftest import (
    PASSWORD,
    administrator,
    build_app,
    new_email,
    registered,
    until_blocked,
    until_waiting,
)
from tests.auth.test_admin import admin_client  # noqa: F401 - the admin surface's app
from users import service as users

pytestmark = pytest.mark.db

PAUSE_WAIT_S: Final = 5.0  # how long a test waits for a held login to reach its stop
AMR: Final = ("pwd",)


async def _user_id(deps: AuthDependencies, email: str) -> uuid.UUID:
    async with deps.db.connection() as conn:
        user = await users.find_by_email(conn, email)
    assert user is not None
    return user.id


async def _mirrored_sessions(deps: AuthDependencies, user_id: uuid.UUID) -> set[uuid.UUID]:
    async with deps.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT id FROM user_sessions WHERE user_id = $1 AND is_active", user_id
        )
    return {row["id"] for row in rows}


async def _live_sessions(deps: AuthDependencies, user_id: uuid.UUID) -> set[uuid.UUID]:
    return {parse_id(s.session_id, IdPrefix.SESSION) for s in await deps.sessions.list_for(user_id)}


def _store_options(
    redis_client: aioredis.Redis, settings: Settings, clock: Clock
) -> dict[str, Any]:
    """What a session store on the test servers is built with, as `deps.sessions` is."""
    return {
        "client": redis_client,
        "keys": KeySpace(settings.redis_key_prefix),
        "idle_ttl_s": settings.auth_session_idle_s,
        "index_ttl_s": settings.auth_refresh_family_lifetime_s,
        "clock": clock,
    }


class _HeldEviction(SessionStore):
    """The session store of one login, stopped after its new session is indexed and counted
    and before it ends the oldest ones, until `go_on` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted = asyncio.Event()
        self.go_on = asyncio.Event()

    async def _evict_oldest(self, conn: asyncpg.Connection, user_id: str, **kwargs: Any) -> None:
        self.counted.set()
        await self.go_on.wait()
        await super()._evict_oldest(conn, user_id, **kwargs)


class _HeldAfterRead(SessionStore):
    """A session store that stops at its `hold_at`-th read of a session, once it has read
    it alive, until `go_on` is set (a logout reads its session twice: the route's check of
    the caller, then the ending itself)."""

    def __init__(self, *args: Any, hold_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_at = hold_at
        self.reads = 0
        self.read = asyncio.Event()
        self.go_on = asyncio.Event()

    async def get(self, session_id: str) -> Session | None:
        session = await super().get(session_id)
        self.reads += 1
        if self.reads == self.hold_at:
            self.read.set()
            await self.go_on.wait()
        return session


async def _open(store: SessionStore, deps: AuthDependencies, user_id: uuid.UUID) -> Session:
    async with deps.db.transaction() as conn:
        return await store.create(
            conn, user_id=user_id, ip=None, user_agent=None, amr=AMR, auth_time=deps.clock.now()
        )


class TestSessionCapEviction:
    async def test_two_logins_at_the_cap_end_no_more_sessions_than_needed(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """Two logins of a user at the cap, the second one indexed and evicting between the
        first one's count and its eviction: together they end two sessions, not three, and
        the user is left with exactly the cap, both new sessions among them."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        async with deps.db.transaction() as conn:
            for _ in range(SESSIONS_LISTED_MAX - 1):
                clock.advance(1)
                await deps.sessions.create(
                    conn, user_id=user_id, ip=None, user_agent=None, amr=AMR, auth_time=clock.now()
                )
        assert len(await deps.sessions.list_for(user_id)) == SESSIONS_LISTED_MAX
        held = _HeldEviction(**_store_options(redis_client, settings, clock))
        clock.advance(1)
        first = asyncio.create_task(_open(held, deps, user_id))
        await asyncio.wait_for(held.counted.wait(), PAUSE_WAIT_S)
        clock.advance(1)
        second = await _open(deps.sessions, deps, user_id)
        held.go_on.set()
        opened = await first
        live = {s.session_id for s in await deps.sessions.list_for(user_id)}
        assert len(live) == SESSIONS_LISTED_MAX
        assert {opened.session_id, second.session_id} <= live
        async with deps.db.connection() as conn:
            mirrored = await conn.fetchval(
                "SELECT count(*) FROM user_sessions WHERE user_id = $1 AND is_active", user_id
            )
        assert mirrored == SESSIONS_LISTED_MAX


class TestUnlockDuringVerification:
    async def test_an_unlock_does_not_undo_a_verification_committed_meanwhile(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An unlock that read the account before its address was verified, and writes after
        the verification committed, leaves the (now verified) account enabled."""
        email = new_email()
        response = await client.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        user_id = await _user_id(deps, email)

        async def unlock() -> None:
            async with deps.db.transaction() as conn:
                await admin.unlock_account(conn, deps, user_id=user_id, admin_id=uuid.uuid4())

        async with deps.db.transaction() as verifying:
            await users.mark_email_verified(verifying, user_id, clock.now())
            # The unlock reads the committed (unverified) row, then waits on this one to write.
            unlocking = asyncio.create_task(unlock())
            assert await until_blocked(deps, verifying.get_server_pid())
        await unlocking
        async with deps.db.connection() as conn:
            user = await users.get_user(conn, user_id)
        assert user.is_verified
        assert user.is_active


class TestEndAllSessionsDuringLogin:
    async def test_a_login_in_flight_is_ended_in_full_or_not_at_all(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """An administrator ending every session while a login has opened its session but not
        committed: the login's session ends everywhere (Redis, its mirror row, its refresh
        family) or nowhere. The login is held at its audit event (a share lock on audit_log),
        after its session is in Redis, until the ending has come to wait too."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)

        async def end_all() -> int:
            async with deps.db.transaction() as conn:
                return await admin.end_all_sessions(conn, deps, user_id=user_id)

        async with deps.db.transaction() as holder:
            await holder.execute("LOCK TABLE audit_log IN SHARE MODE")
            logging_in = asyncio.create_task(
                client.post(
                    "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
                )
            )
            assert await until_blocked(deps, holder.get_server_pid())
            ending = asyncio.create_task(end_all())
            assert await until_waiting(deps, lambda _blockers: True, count=2)
        signed_in, ended = await asyncio.gather(logging_in, ending)
        assert signed_in.status_code == 200, signed_in.text
        assert ended >= 1
        live = await _live_sessions(deps, user_id)
        assert await _mirrored_sessions(deps, user_id) == live
        async with deps.db.connection() as conn:
            families = await conn.fetchval(
                "SELECT count(*) FROM auth_refresh_families"
                " WHERE user_id = $1 AND revoked_at IS NULL",
                user_id,
            )
        assert families == len(live)


class TestTwoEndingsOfOneSession:
    async def test_a_logout_racing_an_end_all_is_counted_once(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """A logout that found its session alive (at the route's check and again in the
        ending), then an administrator's end-all ending it before the logout does: the end-all
        counts it; the logout is answered as for an ended session (401 AUTH_SESSION_REVOKED)
        and audits no logout of its own."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        held = _HeldAfterRead(hold_at=2, **_store_options(redis_client, settings, deps.clock))
        transport = httpx.ASGITransport(app=build_app(replace(deps, sessions=held)))
        async with httpx.AsyncClient(
            transport=transport, base_url=str(client.base_url)
        ) as held_client:
            logging_out = asyncio.create_task(
                held_client.post("/api/v1/auth/logout", headers=account.bearer)
            )
            await asyncio.wait_for(held.read.wait(), PAUSE_WAIT_S)
            async with deps.db.transaction() as conn:
                assert await admin.end_all_sessions(conn, deps, user_id=user_id) == 1
            held.go_on.set()
            response = await logging_out
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "AUTH_SESSION_REVOKED"
        async with deps.db.connection() as conn:
            logouts = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE table_name = 'auth_events'"
                " AND new_values->>'event' = $2 AND changed_by = $1",
                user_id,
                AuthEvent.LOGOUT.value,
            )
        assert logouts == 0
        assert await _live_sessions(deps, user_id) == set()
        assert await _mirrored_sessions(deps, user_id) == set()


class TestAdministratorsLockingEachOther:
    async def test_an_administrator_locked_meanwhile_locks_no_one(
        self,
        admin_client: httpx.AsyncClient,  # noqa: F811 - the imported fixture
        deps: AuthDependencies,
        clock: FrozenClock,
    ) -> None:
        """Two administrators locking each other at once: the one whose request was checked
        (live session) before the other's lock committed, and waits on the account row, is
        refused (401 AUTH_SESSION_REVOKED) once it goes on; one of them stays enabled. The
        waiting request is held on a share lock on the other administrator's row."""
        first = await administrator(admin_client, deps, clock)
        second = await administrator(admin_client, deps, clock)
        by_id = {await _user_id(deps, a.email): a for a in (first, second)}
        low_id, high_id = sorted(by_id)
        # The lower id is the one waited on, so its own lock of the other runs freely.
        locker, waiter = by_id[low_id], by_id[high_id]

        async with deps.db.transaction() as holder:
            await holder.execute("SELECT 1 FROM users WHERE id = $1 FOR SHARE", low_id)
            waiting = asyncio.create_task(
                admin_client.post(f"/api/v1/admin/users/{low_id}/lock", headers=waiter.bearer)
            )
            assert await until_blocked(deps, holder.get_server_pid())
            locked = await admin_client.post(
                f"/api/v1/admin/users/{high_id}/lock", headers=locker.bearer
            )
            assert locked.status_code == 200, locked.text
        refused = await waiting
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "AUTH_SESSION_REVOKED"
        async with deps.db.connection() as conn:
            assert (await users.get_user(conn, low_id)).is_active
            assert not (await users.get_user(conn, high_id)).is_active
