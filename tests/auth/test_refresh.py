"""Refresh tokens (RFC 9700): rotation, reuse detection, the concurrent race, absolute expiry,
and revocation on logout and password change.

Method: every scenario goes through `POST /api/v1/auth/refresh` over HTTP with real PostgreSQL
row locks and Redis sessions; time moves only through the frozen clock. The database is read
directly to prove what the HTTP answers cannot show (one child per token).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from auth.dependencies import AuthDependencies
from auth.otp import token_digest
from kit.clock import FrozenClock
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    registered,
    second_session,
    with_totp,
)

pytestmark = pytest.mark.db

REFRESH = "/api/v1/auth/refresh"


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
