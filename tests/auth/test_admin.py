"""The admin surface: list accounts, lock and unlock them, end their sessions, see their limits.

The app is built as a replica builds it, with the edge's token verifier, an exact in-process
rate limiter and the admin router; the admin is a real account promoted to the admin role.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from auth.dependencies import AuthDependencies
from gateway.policy import AdminAccessPolicy, GatewayPolicy
from kit.clock import FrozenClock
from tests.auth.conftest import (
    PASSWORD,
    Account,
    administrator,
    build_admin_app,
    login,
    outbox_code,
    registered,
)
from users import service as users
from users.models import Role

pytestmark = pytest.mark.db

LOOPBACK_ADMIN = GatewayPolicy(
    admin=AdminAccessPolicy(allow=(ipaddress.ip_network("127.0.0.0/8"),))
)


@pytest.fixture
async def admin_client(
    deps: AuthDependencies, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the edge's verifier and limiter, and the admin router."""
    app = build_admin_app(deps, LOOPBACK_ADMIN)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        yield http


async def _user_id(deps: AuthDependencies, email: str) -> str:
    async with deps.db.connection() as conn:
        user = await users.find_by_email(conn, email)
    assert user is not None
    return str(user.id)


class TestAdminSurface:
    async def test_a_user_token_is_refused(self, admin_client: httpx.AsyncClient) -> None:
        """Only the admin role reaches /api/v1/admin."""
        account = await registered(admin_client)
        response = await admin_client.get("/api/v1/admin/users", headers=account.bearer)
        assert response.status_code == 403

    async def test_list_users(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The admin finds an account by email prefix."""
        admin = await administrator(admin_client, deps, clock)
        target = await registered(admin_client)
        response = await admin_client.get(
            "/api/v1/admin/users", params={"email": target.email[:12]}, headers=admin.bearer
        )
        assert response.status_code == 200, response.text
        assert target.email in [u["email"] for u in response.json()["users"]]

    async def test_lock_ends_sessions_and_refuses_login_until_unlocked(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A locked account cannot refresh or sign in; unlocking restores sign-in."""
        admin = await administrator(admin_client, deps, clock)
        target = await registered(admin_client)
        user_id = await _user_id(deps, target.email)
        locked = await admin_client.post(
            f"/api/v1/admin/users/{user_id}/lock", headers=admin.bearer
        )
        assert locked.status_code == 200, locked.text
        assert locked.json()["sessions_ended"] >= 1
        refreshed = await admin_client.post(
            "/api/v1/auth/refresh", json={"refresh_token": target.refresh_token}
        )
        assert refreshed.status_code == 401
        refused = await login(admin_client, target)
        assert refused.status_code == 403
        assert refused.json()["code"] == "AUTH_ACCOUNT_DISABLED"
        unlocked = await admin_client.post(
            f"/api/v1/admin/users/{user_id}/unlock", headers=admin.bearer
        )
        assert unlocked.status_code == 200
        assert unlocked.json()["is_active"] is True
        assert (await login(admin_client, target)).status_code == 200

    async def test_an_administrator_cannot_lock_their_own_account(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Locking oneself is 409 and changes nothing: the account stays active and the
        session that asked lives on (another administrator can lock it)."""
        admin = await administrator(admin_client, deps, clock)
        own_id = await _user_id(deps, admin.email)
        refused = await admin_client.post(
            f"/api/v1/admin/users/{own_id}/lock", headers=admin.bearer
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "AUTH_ADMIN_SELF_LOCK"
        listed = await admin_client.get("/api/v1/admin/users", headers=admin.bearer)
        assert listed.status_code == 200
        (mine,) = [u for u in listed.json()["users"] if u["email"] == admin.email]
        assert mine["is_active"] is True

    async def test_revoke_sessions(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Ending a user's sessions kills their refresh tokens."""
        admin = await administrator(admin_client, deps, clock)
        target = await registered(admin_client)
        user_id = await _user_id(deps, target.email)
        response = await admin_client.post(
            f"/api/v1/admin/users/{user_id}/sessions/revoke", headers=admin.bearer
        )
        assert response.status_code == 200
        assert response.json()["sessions_ended"] >= 1
        refreshed = await admin_client.post(
            "/api/v1/auth/refresh", json={"refresh_token": target.refresh_token}
        )
        assert refreshed.status_code == 401

    async def test_rate_limit_state(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The admin sees the user's counts under each per-user rule, without counting."""
        admin = await administrator(admin_client, deps, clock)
        target = await registered(admin_client)
        user_id = await _user_id(deps, target.email)

        async def remaining() -> int:
            response = await admin_client.get(
                f"/api/v1/admin/users/{user_id}/rate-limits", headers=admin.bearer
            )
            assert response.status_code == 200, response.text
            rule = next(r for r in response.json()["rules"] if r["rule"] == "users")
            value: int = rule["windows"][0]["remaining_after_next"]
            return value

        before = await remaining()
        assert before == await remaining(), "looking does not count"
        for _ in range(2):
            assert (
                await admin_client.get("/api/v1/auth/sessions", headers=target.bearer)
            ).status_code == 200
        assert await remaining() == before - 2

    async def test_unknown_user_is_404(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Acting on a user that does not exist is a problem+json 404."""
        admin = await administrator(admin_client, deps, clock)
        response = await admin_client.post(
            "/api/v1/admin/users/00000000-0000-4000-8000-000000000000/lock", headers=admin.bearer
        )
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"

    async def test_an_ended_session_loses_the_surface_at_once(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An administrator who signed out (or was locked, or had every session ended) is
        refused with the same, unexpired access token: the edge checks the token alone, the
        admin routes the session too."""
        admin = await administrator(admin_client, deps, clock)
        assert (await admin_client.get("/api/v1/admin/users", headers=admin.bearer)).is_success
        logout = await admin_client.post("/api/v1/auth/logout", headers=admin.bearer)
        assert logout.status_code in {200, 204}, logout.text
        for method, path in [
            ("GET", "/api/v1/admin/users"),
            ("POST", f"/api/v1/admin/users/{await _user_id(deps, admin.email)}/unlock"),
        ]:
            refused = await admin_client.request(method, path, headers=admin.bearer)
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"] == "AUTH_SESSION_REVOKED"

    async def test_a_withdrawn_admin_role_loses_the_surface_at_once(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The edge reads the role from the token, which outlives a withdrawal until it
        expires: the admin routes read it from the account, so the same token is refused at
        once, reads and actions alike, and the action changes nothing."""
        admin = await administrator(admin_client, deps, clock)
        target = await registered(admin_client)
        target_id = await _user_id(deps, target.email)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, admin.email)
            assert user is not None
            await users.set_role(conn, user.id, Role.USER)
        for method, path in [
            ("GET", "/api/v1/admin/users"),
            ("GET", f"/api/v1/admin/users/{target_id}/rate-limits"),
            ("POST", f"/api/v1/admin/users/{target_id}/lock"),
        ]:
            refused = await admin_client.request(method, path, headers=admin.bearer)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "AUTH_ADMIN_REQUIRED"
        assert (await login(admin_client, target)).status_code == 200


class TestLockBeforeVerification:
    async def test_a_lock_outlasts_the_verification_of_the_address(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An account locked before its address was proven stays locked when it is proven:
        the verification records the address, only an unlock enables sign-in."""
        admin = await administrator(admin_client, deps, clock)
        target = Account(email=f"locked-{uuid.uuid4().hex[:12]}@example.com")
        registered_now = await admin_client.post(
            "/api/v1/auth/register", json={"email": target.email, "password": PASSWORD}
        )
        assert registered_now.status_code == 201, registered_now.text
        user_id = await _user_id(deps, target.email)
        locked = await admin_client.post(
            f"/api/v1/admin/users/{user_id}/lock", headers=admin.bearer
        )
        assert locked.status_code == 200, locked.text

        code = await outbox_code(admin_client, target.email)
        verified = await admin_client.post(
            "/api/v1/auth/verify-email", json={"email": target.email, "code": code}
        )
        assert verified.status_code == 200, verified.text
        listed = await admin_client.get(
            "/api/v1/admin/users", params={"email": target.email}, headers=admin.bearer
        )
        (account,) = listed.json()["users"]
        assert account["is_verified"] is True
        assert account["is_active"] is False
        assert account["is_locked"] is True
        refused = await login(admin_client, target)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "AUTH_ACCOUNT_DISABLED"

        unlocked = await admin_client.post(
            f"/api/v1/admin/users/{user_id}/unlock", headers=admin.bearer
        )
        assert unlocked.status_code == 200, unlocked.text
        assert unlocked.json()["is_active"] is True
        assert (await login(admin_client, target)).status_code == 200

    async def test_an_unverified_account_unlocked_waits_for_its_verification(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Unlocking lifts the lock, not the need to prove the address; proving it after the
        unlock enables sign-in."""
        admin = await administrator(admin_client, deps, clock)
        target = Account(email=f"unlocked-{uuid.uuid4().hex[:12]}@example.com")
        response = await admin_client.post(
            "/api/v1/auth/register", json={"email": target.email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        user_id = await _user_id(deps, target.email)
        for action in ("lock", "unlock"):
            response = await admin_client.post(
                f"/api/v1/admin/users/{user_id}/{action}", headers=admin.bearer
            )
            assert response.status_code == 200, response.text
        assert response.json()["is_active"] is False
        code = await outbox_code(admin_client, target.email)
        verified = await admin_client.post(
            "/api/v1/auth/verify-email", json={"email": target.email, "code": code}
        )
        assert verified.status_code == 200, verified.text
        assert (await login(admin_client, target)).status_code == 200

    async def test_postgresql_refuses_an_active_locked_account(
        self, admin_client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A write that would enable a locked account without lifting the lock is refused by
        the table's CHECK, whatever the code above it does."""
        target = await registered(admin_client)
        user_id = await _user_id(deps, target.email)
        async with deps.db.connection() as conn:
            await conn.execute(
                "UPDATE users SET is_active = false, locked_at = now() WHERE id = $1::uuid",
                user_id,
            )
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE users SET is_active = true WHERE id = $1::uuid", user_id)
