"""Refresh tokens (RFC 9700): rotation, reuse detection, the concurrent race, absolute expiry,
and revocation on logout and password change.

Method: every scenario goes through `POST /api/v1/auth/refresh` over HTTP with real PostgreSQL
row locks and Redis sessions; time moves only through the frozen clock. The database is read
directly to prove what the HTTP answers cannot show (one child per token).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from auth.dependencies import AuthDependencies
from auth.otp import token_digest
from kit.clock import FrozenClock
from kit.redis_client import KeySpace
from kit.settings import Settings
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    administrator,
    outbox_code,
    registered,
    second_session,
    with_totp,
)
from users import service as users

pytestmark = pytest.mark.db

REFRESH = "/api/v1/auth/refresh"
REDIRECT = "https://partner.example/callback"


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


class TestRotation:
    async def test_each_use_rotates(self, client: httpx.AsyncClient) -> None:
        """A refresh answers a new refresh token and a new access token for the same session."""
        account = await registered(client)
        first = await _refresh(client, account.refresh_token)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["refresh_token"] != account.refresh_token
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        second = await _refresh(client, body["refresh_token"])
        assert second.status_code == 200
        sessions = await client.get(
            "/api/v1/auth/sessions",
            headers={"Authorization": f"Bearer {second.json()['access_token']}"},
        )
        assert len(sessions.json()["sessions"]) == 1

    async def test_unknown_token_is_refused(self, client: httpx.AsyncClient) -> None:
        """A token we never issued answers AUTH_INVALID_REFRESH_TOKEN."""
        response = await _refresh(client, "x" * 43)
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_INVALID_REFRESH_TOKEN"


class TestReuse:
    async def test_replaying_a_used_token_revokes_the_family(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """After the grace period, the old token is refused and the newest one dies with it."""
        account = await registered(client)
        child = (await _refresh(client, account.refresh_token)).json()["refresh_token"]
        clock.advance(11)
        replay = await _refresh(client, account.refresh_token)
        assert replay.status_code == 401
        descendant = await _refresh(client, child)
        assert descendant.status_code == 401  # Supabase #52614: no descendant survives
        async with deps.db.connection() as conn:
            reason = await conn.fetchval(
                "SELECT f.revoked_reason FROM auth_refresh_families f JOIN auth_refresh_tokens t"
                " ON t.family_id = f.id WHERE t.token_hash = $1",
                token_digest(account.refresh_token),
            )
            events = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE new_values->>'event' ="
                " 'auth.refresh_reuse_detected'"
                " AND changed_by = (SELECT id FROM users WHERE email = $1)",
                account.email,
            )
        assert reason == "reuse_detected"
        assert events == 1

    async def test_concurrent_refreshes_mint_one_child(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Two simultaneous refreshes of one token both succeed with the same single child."""
        account = await registered(client)
        first, second = await asyncio.gather(
            _refresh(client, account.refresh_token), _refresh(client, account.refresh_token)
        )
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.json()["refresh_token"] == second.json()["refresh_token"]
        async with deps.db.connection() as conn:
            children = await conn.fetchval(
                "SELECT count(*) FROM auth_refresh_tokens c JOIN auth_refresh_tokens p"
                " ON c.parent_id = p.id WHERE p.token_hash = $1",
                token_digest(account.refresh_token),
            )
        assert children == 1
        assert (await _refresh(client, first.json()["refresh_token"])).status_code == 200

    async def test_grace_never_applies_once_the_child_was_used(
        self, client: httpx.AsyncClient
    ) -> None:
        """A retry of the parent after its child was used is a reuse, even within seconds."""
        account = await registered(client)
        child = (await _refresh(client, account.refresh_token)).json()["refresh_token"]
        assert (await _refresh(client, child)).status_code == 200
        assert (await _refresh(client, account.refresh_token)).status_code == 401


class TestExpiry:
    async def test_family_has_an_absolute_lifetime(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Refreshing every 13 minutes keeps a family alive only until its 12 hours are up."""
        account = await registered(client)
        token = account.refresh_token
        lifetime_s = deps.settings.auth_refresh_family_lifetime_s
        elapsed = 0
        while elapsed + 780 < lifetime_s:
            clock.advance(780)
            elapsed += 780
            response = await _refresh(client, token)
            assert response.status_code == 200, (elapsed, response.text)
            token = response.json()["refresh_token"]
        clock.advance(lifetime_s - elapsed + 1)
        assert (await _refresh(client, token)).status_code == 401

    async def test_idle_token_expires(self, client: httpx.AsyncClient, clock: FrozenClock) -> None:
        """A refresh token unused for longer than the session idle time is refused."""
        account = await registered(client)
        clock.advance(901)
        assert (await _refresh(client, account.refresh_token)).status_code == 401


class TestRevocation:
    async def test_logout_revokes_the_family_and_the_session(
        self, client: httpx.AsyncClient
    ) -> None:
        """After logout the refresh token and the access token's session are dead."""
        account = await registered(client)
        response = await client.post("/api/v1/auth/logout", headers=account.bearer)
        assert response.status_code == 204
        assert (await _refresh(client, account.refresh_token)).status_code == 401
        sessions = await client.get("/api/v1/auth/sessions", headers=account.bearer)
        assert sessions.status_code == 401
        assert sessions.json()["code"] == "AUTH_SESSION_REVOKED"

    async def test_password_change_revokes_every_other_family(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """Changing the password ends the other sessions' refresh tokens, not the caller's."""
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        change = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert change.status_code == 200, change.text
        assert change.json()["revoked"] == 1
        assert (await _refresh(client, other.refresh_token)).status_code == 401
        assert (await _refresh(client, account.refresh_token)).status_code == 200


class TestReuseEndsTheSession:
    async def test_a_replay_after_rotation_ends_the_session_too(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Whoever holds the rotated family's access token loses the session at once."""
        account = await registered(client)
        stolen = await _refresh(client, account.refresh_token)  # the thief refreshes first
        assert stolen.status_code == 200
        thief = {"Authorization": f"Bearer {stolen.json()['access_token']}"}
        assert (await client.get("/api/v1/auth/sessions", headers=thief)).status_code == 200
        clock.advance(11)
        assert (await _refresh(client, account.refresh_token)).status_code == 401
        locked_out = await client.get("/api/v1/auth/sessions", headers=thief)
        assert locked_out.status_code == 401
        assert locked_out.json()["code"] == "AUTH_SESSION_REVOKED"
        enrol = await client.post("/api/v1/auth/mfa/totp/enroll", headers=thief)
        assert enrol.status_code == 401  # no factor of the thief's can be enrolled either
        async with deps.db.connection() as conn:
            active = await conn.fetchval(
                "SELECT bool_or(is_active) FROM user_sessions"
                " WHERE user_id = (SELECT id FROM users WHERE email = $1)",
                account.email,
            )
        assert active is False

    async def test_a_replay_after_its_session_expired_touches_no_other_session(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """A used token of an idle-expired session revokes its family; other devices live."""
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        assert (await _refresh(client, other.refresh_token)).status_code == 200
        sid = session_of(other.access_token)
        await redis_client.delete(KeySpace(settings.redis_key_prefix).key("session", sid))
        clock.advance(11)
        assert (await _refresh(client, other.refresh_token)).status_code == 401
        assert await _family_revoked_reason(deps, other.refresh_token) == "reuse_detected"
        assert (
            await client.get("/api/v1/auth/sessions", headers=account.bearer)
        ).status_code == 200
        assert (await _refresh(client, account.refresh_token)).status_code == 200

    async def test_a_partners_token_is_refused_here_and_kept_there(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An OAuth client's refresh token does not work at the first-party route, and trying
        it there does not revoke it: the partner still refreshes at /oauth/token."""
        admin = await administrator(client, deps, clock)
        partner = await client.post(
            "/api/v1/auth/oauth/clients",
            json={"name": "Partner", "redirect_uris": [REDIRECT], "scopes": ["openid"]},
            headers=admin.bearer,
        )
        assert partner.status_code == 201, partner.text
        credentials = {
            "client_id": partner.json()["client_id"],
            "client_secret": partner.json()["client_secret"],
        }
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        authorize = await client.get(
            "/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": credentials["client_id"],
                "redirect_uri": REDIRECT,
                "scope": "openid",
                "state": "s1",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            headers=admin.bearer,
        )
        code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
        issued = await client.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                **credentials,
            },
        )
        assert issued.status_code == 200, issued.text
        token = issued.json()["refresh_token"]
        assert (await _refresh(client, token)).status_code == 401
        refreshed = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": token, **credentials},
        )
        assert refreshed.status_code == 200, refreshed.text


class TestRefreshAfterItsSessionEnded:
    async def test_a_revoked_session_cannot_refresh(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """Ending a session from another device kills that session's refresh token."""
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        sid = session_of(other.access_token)
        revoked = await client.delete(f"/api/v1/auth/sessions/{sid}", headers=account.bearer)
        assert revoked.status_code == 204
        assert (await _refresh(client, other.refresh_token)).status_code == 401
        assert (await _refresh(client, account.refresh_token)).status_code == 200

    async def test_a_password_reset_kills_every_refresh_token(
        self, client: httpx.AsyncClient
    ) -> None:
        """After a reset no refresh token of the account works, not even the newest."""
        account = await registered(client)
        newest = (await _refresh(client, account.refresh_token)).json()["refresh_token"]
        await client.post("/api/v1/auth/password/reset/request", json={"email": account.email})
        confirm = await client.post(
            "/api/v1/auth/password/reset/confirm",
            json={
                "email": account.email,
                "code": await outbox_code(client, account.email),
                "new_password": NEW_PASSWORD,
            },
        )
        assert confirm.status_code == 200, confirm.text
        assert confirm.json()["revoked"] == 1
        assert (await _refresh(client, newest)).status_code == 401

    async def test_an_expired_session_revokes_its_family(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        settings: Settings,
        redis_client: aioredis.Redis,
    ) -> None:
        """A refresh for a session Redis has expired is refused and its family revoked."""
        account = await registered(client)
        sid = session_of(account.access_token)
        await redis_client.delete(KeySpace(settings.redis_key_prefix).key("session", sid))
        assert (await _refresh(client, account.refresh_token)).status_code == 401
        assert await _family_revoked_reason(deps, account.refresh_token) == "session_revoked"

    async def test_a_disabled_account_cannot_refresh(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A refresh for an account no longer active is refused and its family revoked."""
        account = await registered(client)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, account.email)
            assert user is not None
            await users.lock(conn, user.id, at=deps.clock.now())
        assert (await _refresh(client, account.refresh_token)).status_code == 401
        assert await _family_revoked_reason(deps, account.refresh_token) == "session_revoked"

    async def test_an_over_long_token_is_refused(self, client: httpx.AsyncClient) -> None:
        """A token longer than any we issue answers the same 401 as an unknown one."""
        response = await _refresh(client, "x" * 129)
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_INVALID_REFRESH_TOKEN"


def session_of(access_token: str) -> str:
    """The `sid` claim of an access token (read, not verified: the server verifies)."""
    payload = access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sid"])


async def _family_revoked_reason(deps: AuthDependencies, token: str) -> str | None:
    async with deps.db.connection() as conn:
        reason: str | None = await conn.fetchval(
            "SELECT f.revoked_reason FROM auth_refresh_families f JOIN auth_refresh_tokens t"
            " ON t.family_id = f.id WHERE t.token_hash = $1",
            token_digest(token),
        )
    return reason
