"""Sessions as a user with several devices, and another user, meet them: the list shows only the
caller's own, another user's session cannot be ended (nor its existence confirmed), signing out
everywhere else keeps the caller's, and the per-user cap holds even when old sessions expired
(the session it ends takes its refresh tokens with it, and the ending is audited).

Method: the listing and revocation go through the HTTP app; the cap needs more sessions than the
login rate limit allows, so it is exercised on the session store itself (real Redis and
PostgreSQL), with Redis's idle expiry played by deleting the session's key.
"""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from auth.constants import SESSIONS_LISTED_MAX
from auth.dependencies import AuthDependencies
from auth.otp import token_digest
from auth.sessions import Session
from kit.clock import FrozenClock
from kit.ids import IdPrefix, parse_id
from kit.redis_client import KeySpace
from kit.settings import Settings
from tests.auth.conftest import Account, registered, second_session, with_totp
from users import service as users

pytestmark = pytest.mark.db

SESSIONS = "/api/v1/auth/sessions"


def session_of(account: Account) -> str:
    """The `sid` claim of the account's access token (read, not verified)."""
    payload = account.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


class TestOwnSessionsOnly:
    async def test_the_list_never_shows_another_users_sessions(
        self, client: httpx.AsyncClient
    ) -> None:
        """Two users each see exactly their own session, marked current."""
        alice, bob = await registered(client), await registered(client)
        for account, other in ((alice, bob), (bob, alice)):
            listed = (await client.get(SESSIONS, headers=account.bearer)).json()["sessions"]
            assert [s["session_id"] for s in listed] == [session_of(account)]
            assert listed[0]["is_current"] is True
            assert session_of(other) not in {s["session_id"] for s in listed}

    async def test_an_expired_session_leaves_the_list(
        self,
        client: httpx.AsyncClient,
        clock: FrozenClock,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """A device whose session Redis expired is no longer listed."""
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        await redis_client.delete(
            KeySpace(settings.redis_key_prefix).key("session", session_of(other))
        )
        listed = (await client.get(SESSIONS, headers=account.bearer)).json()["sessions"]
        assert [s["session_id"] for s in listed] == [session_of(account)]

    async def test_another_users_session_is_not_found(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Ending a live session of another user answers 404, as an unknown or malformed id
        does, and that session and its refresh token live on."""
        alice, bob = await registered(client), await registered(client)
        answers = [
            await client.delete(f"{SESSIONS}/{sid}", headers=alice.bearer)
            for sid in (session_of(bob), "ses_00000000-0000-4000-8000-000000000000", "nope")
        ]
        assert [a.status_code for a in answers] == [404, 404, 404]
        assert {a.json()["code"] for a in answers} == {"AUTH_SESSION_NOT_FOUND"}
        assert answers[0].json()["detail"] == answers[1].json()["detail"]
        assert (await client.get(SESSIONS, headers=bob.bearer)).status_code == 200
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": bob.refresh_token}
        )
        assert refreshed.status_code == 200
        async with deps.db.connection() as conn:
            active = await conn.fetchval(
                "SELECT is_active FROM user_sessions WHERE id = $1",
                parse_id(session_of(bob), IdPrefix.SESSION),
            )
        assert active is True

    async def test_signing_out_elsewhere_keeps_this_session(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """`DELETE /sessions` ends the other devices' sessions and refresh tokens; alone, it
        ends nothing."""
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        ended = await client.delete(SESSIONS, headers=account.bearer)
        assert ended.json() == {"revoked": 1}
        assert (await client.get(SESSIONS, headers=other.bearer)).status_code == 401
        refused = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": other.refresh_token}
        )
        assert refused.status_code == 401
        assert (await client.delete(SESSIONS, headers=account.bearer)).json() == {"revoked": 0}
        async with deps.db.connection() as conn:
            reason = await conn.fetchval(
                "SELECT f.revoked_reason FROM auth_refresh_families f JOIN auth_refresh_tokens t"
                " ON t.family_id = f.id WHERE t.token_hash = $1",
                token_digest(other.refresh_token),
            )
        assert reason == "session_revoked"


class TestSessionCap:
    async def _sessions(
        self, deps: AuthDependencies, clock: FrozenClock, account: Account, count: int
    ) -> list[Session]:
        created = []
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, account.email)
            assert user is not None
            for _ in range(count):
                clock.advance(1)  # one creation time each: "oldest" is well defined
                created.append(
                    await deps.sessions.create(
                        conn,
                        user_id=user.id,
                        ip="203.0.113.7",
                        user_agent="phone",
                        amr=("pwd",),
                        auth_time=clock.now(),
                    )
                )
        return created

    async def test_the_oldest_session_is_ended_beyond_the_cap(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The session past the hundredth ends the oldest, in Redis and in its mirror row."""
        account = await registered(client)
        oldest = session_of(account)
        created = await self._sessions(deps, clock, account, SESSIONS_LISTED_MAX)
        assert await deps.sessions.get(oldest) is None
        listed = await deps.sessions.list_for(uuid.UUID(created[0].user_id))
        assert len(listed) == SESSIONS_LISTED_MAX
        assert oldest not in {s.session_id for s in listed}
        async with deps.db.connection() as conn:
            active = await conn.fetchval(
                "SELECT is_active FROM user_sessions WHERE id = $1",
                parse_id(oldest, IdPrefix.SESSION),
            )
        assert active is False

    async def test_the_ended_session_takes_its_refresh_tokens_and_is_audited(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Ending the oldest session at the cap revokes its refresh families with the reason
        `session_cap` and audits the ending as `session_cap`, both in the transaction that
        opens the new session (seen inside it, not outside it before it commits); its refresh
        token is refused after."""
        account = await registered(client)
        oldest = session_of(account)
        families_of = "SELECT revoked_reason FROM auth_refresh_families WHERE session_id = $1"
        endings = (
            "SELECT new_values->>'reason' FROM audit_log WHERE table_name = 'auth_events'"
            " AND new_values->>'event' = 'auth.session_revoked'"
            " AND new_values->>'session_id' = $1"
        )
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, account.email)
            assert user is not None
            for _ in range(SESSIONS_LISTED_MAX):
                clock.advance(1)
                await deps.sessions.create(
                    conn,
                    user_id=user.id,
                    ip="203.0.113.7",
                    user_agent="phone",
                    amr=("pwd",),
                    auth_time=clock.now(),
                )
            assert [r[0] for r in await conn.fetch(families_of, oldest)] == ["session_cap"]
            assert [r[0] for r in await conn.fetch(endings, oldest)] == ["session_cap"]
            async with deps.db.connection() as outside:  # not committed yet: not visible
                assert [r[0] for r in await outside.fetch(families_of, oldest)] == [None]
                assert await outside.fetch(endings, oldest) == []
        refused = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refused.status_code == 401
        async with deps.db.connection() as conn:
            assert [r[0] for r in await conn.fetch(families_of, oldest)] == ["session_cap"]
            assert [r[0] for r in await conn.fetch(endings, oldest)] == ["session_cap"]

    async def test_an_expired_session_does_not_lift_the_cap(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """When the oldest session already expired, the cap still ends the oldest live one:
        never more live sessions than the list (and "sign out everywhere") can reach."""
        account = await registered(client)
        expired = session_of(account)
        await redis_client.delete(KeySpace(settings.redis_key_prefix).key("session", expired))
        created = await self._sessions(deps, clock, account, SESSIONS_LISTED_MAX + 2)
        alive = [s for s in created if await deps.sessions.get(s.session_id) is not None]
        assert len(alive) == SESSIONS_LISTED_MAX
        assert alive == created[2:]  # the two oldest live ones were ended
