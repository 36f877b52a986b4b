"""A password reset or change ends the sign-ins waiting for their second factor.

Someone who knows the old password (a thief, the reason for the reset) may have a sign-in
waiting for its second factor; the new password must end it as it ends sessions, or a backup
code, a stolen phone's code or a later TOTP code would still open a session on the old
password. Finishing such a sign-in answers exactly what an unknown or expired one answers, and
spends nothing (a backup code offered to it stays usable).

Method: the flows drive the HTTP app (real PostgreSQL, Redis, argon2 and the local outbox),
with TOTP codes computed at the frozen clock's time. The sign-in whose password was checked
before a reset but whose challenge is created after it is played on the login service itself,
with the reset committed between its two halves.
"""

from __future__ import annotations

import httpx
import pytest

from auth.dependencies import AuthDependencies
from auth.errors import InvalidCredentialsError
from auth.models import RequestContext
from auth.otp import totp
from auth.service import login as login_service
from kit.clock import FrozenClock
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    Account,
    mfa_token,
    outbox_code,
    registered,
    verify_second_step,
    with_totp,
)

pytestmark = pytest.mark.db

MFA = "/api/v1/auth/mfa"
UNKNOWN_TOKEN = "x" * 43


async def _reset(client: httpx.AsyncClient, account: Account) -> None:
    request = await client.post(
        "/api/v1/auth/password/reset/request", json={"email": account.email}
    )
    assert request.status_code == 202
    code = await outbox_code(client, account.email)
    confirmed = await client.post(
        "/api/v1/auth/password/reset/confirm",
        json={"email": account.email, "code": code, "new_password": NEW_PASSWORD},
    )
    assert confirmed.status_code == 200, confirmed.text


def _refusal(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert "code" in body, response.text  # a refusal, not tokens
    return response.status_code, body["code"], body["detail"]


async def _active_sessions(deps: AuthDependencies, account: Account) -> int:
    async with deps.db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM user_sessions WHERE is_active"
            " AND user_id = (SELECT id FROM users WHERE email = $1)",
            account.email,
        )
    return count


class TestResetEndsPendingSignIns:
    async def test_a_sign_in_started_before_a_reset_cannot_be_finished(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A TOTP code offered to a sign-in begun before the reset is refused as an unknown
        sign-in is, and opens no session; a sign-in with the new password still works."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        stale = await mfa_token(client, account, PASSWORD)
        await _reset(client, account)
        unknown = await verify_second_step(client, UNKNOWN_TOKEN, "totp", totp(secret, clock.now()))
        refused = await verify_second_step(client, stale, "totp", totp(secret, clock.now()))
        assert _refusal(refused) == _refusal(unknown)
        assert refused.json()["code"] == "AUTH_INVALID_MFA_CODE"
        assert await _active_sessions(deps, account) == 0
        fresh = await mfa_token(client, account, NEW_PASSWORD)
        response = await verify_second_step(client, fresh, "totp", totp(secret, clock.now()))
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize("factor", ["none", "totp_challenge", "totp_at_once"])
    async def test_a_password_checked_before_a_reset_signs_in_no_more(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock, factor: str
    ) -> None:
        """A login whose old password was accepted just before the reset committed gets no
        session and no challenge after it, whatever its factors: refused as a wrong password."""
        account = await registered(client)
        secret = None if factor == "none" else await with_totp(client, account, clock)
        check = await login_service.check_password(deps, email=account.email, password=PASSWORD)
        assert check.is_right
        await _reset(client, account)
        code = totp(secret, clock.now()) if secret and factor == "totp_at_once" else None
        async with deps.db.transaction() as conn:
            outcome = await login_service.login(
                conn,
                deps,
                check=check,
                password=PASSWORD,
                mfa_code=code,
                ctx=RequestContext(ip="203.0.113.9", user_agent="laptop"),
            )
        assert isinstance(outcome.error, InvalidCredentialsError)
        assert await _active_sessions(deps, account) == 0
        fresh = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": NEW_PASSWORD}
        )
        # The new password signs in (with a factor enrolled, to its second step).
        assert fresh.status_code == (200 if factor == "none" else 401), fresh.text
        if factor != "none":
            assert fresh.json()["code"] == "AUTH_MFA_REQUIRED"


class TestChangeEndsPendingSignIns:
    async def test_a_backup_code_offered_to_an_ended_sign_in_is_refused_and_kept(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """After a password change, the other device's waiting sign-in refuses a backup code
        as an unknown sign-in would, the code is not used up, and the session that changed
        the password lives on."""
        account = await registered(client)
        await with_totp(client, account, clock)
        codes = (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).json()["codes"]
        stale = await mfa_token(client, account, PASSWORD)
        changed = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert changed.status_code == 200, changed.text
        unknown = await verify_second_step(client, UNKNOWN_TOKEN, "backup_code", codes[0])
        refused = await verify_second_step(client, stale, "backup_code", codes[0])
        assert _refusal(refused) == _refusal(unknown)
        factors = (await client.get(f"{MFA}/factors", headers=account.bearer)).json()
        assert factors["backup_codes_remaining"] == 10
        assert await _active_sessions(deps, account) == 1
        fresh = await mfa_token(client, account, NEW_PASSWORD)
        response = await verify_second_step(client, fresh, "backup_code", codes[0])
        assert response.status_code == 200, response.text

    async def test_an_ended_sign_in_sends_no_code(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A waiting sign-in ended by a password change cannot have an email code sent."""
        account = await registered(client)
        await with_totp(client, account, clock)
        assert (await client.post(f"{MFA}/email/enroll", headers=account.bearer)).status_code == 200
        confirmed = await client.post(
            f"{MFA}/email/confirm",
            json={"code": await outbox_code(client, account.email)},
            headers=account.bearer,
        )
        assert confirmed.status_code == 200, confirmed.text
        account.access_token = confirmed.json()["access_token"]
        stale = await mfa_token(client, account, PASSWORD)
        changed = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert changed.status_code == 200, changed.text
        before = await client.get("/api/v1/dev/outbox", params={"to": account.email})
        unknown = await client.post(f"{MFA}/email/send", json={"mfa_token": UNKNOWN_TOKEN})
        refused = await client.post(f"{MFA}/email/send", json={"mfa_token": stale})
        assert _refusal(refused) == _refusal(unknown)
        after = await client.get("/api/v1/dev/outbox", params={"to": account.email})
        assert len(after.json()["messages"]) == len(before.json()["messages"])
