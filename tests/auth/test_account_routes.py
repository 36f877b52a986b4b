"""Account and factor routes no other test drove: a password change with the wrong current
password, a new verification code, ending every other session, the bound on codes one sign-in
may send, and removing a factor that is not there.

Each goes over HTTP through the identity app with the edge's authentication slot filled, on the
real database and the dev outbox.
"""

from __future__ import annotations

import httpx
import pytest

from auth.otp import totp
from kit.clock import FrozenClock
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    Account,
    login,
    new_email,
    outbox_code,
    registered,
    second_session,
    with_totp,
)

pytestmark = pytest.mark.db


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def _outbox(client: httpx.AsyncClient, to: str) -> list[dict[str, str]]:
    response = await client.get("/api/v1/dev/outbox", params={"to": to})
    assert response.status_code == 200, response.text
    messages: list[dict[str, str]] = response.json()["messages"]
    return messages


class TestPasswordChange:
    async def test_a_wrong_current_password_changes_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """With the second factor the route asks for, a wrong current password is 401
        AUTH_INVALID_CREDENTIALS; the old password still signs in, the new one does not, and
        the caller's session goes on."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        response = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": "Not-The-Password-1", "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "AUTH_INVALID_CREDENTIALS"
        assert NEW_PASSWORD not in response.text
        assert (await _refresh(client, account.refresh_token)).status_code == 200
        refused = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": NEW_PASSWORD}
        )
        assert refused.status_code == 401
        again = await login(
            client, Account(email=account.email), mfa_code=totp(secret, clock.now())
        )
        assert again.status_code == 200, again.text


class TestVerificationResend:
    async def test_a_new_code_verifies_the_account(self, client: httpx.AsyncClient) -> None:
        email = new_email()
        registered_ = await client.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert registered_.status_code == 201, registered_.text
        assert len(await _outbox(client, email)) == 1
        resent = await client.post("/api/v1/auth/verify-email/resend", json={"email": email})
        assert resent.status_code == 202, resent.text
        assert len(await _outbox(client, email)) == 2
        code = await outbox_code(client, email)  # the newest message
        verified = await client.post(
            "/api/v1/auth/verify-email", json={"email": email, "code": code}
        )
        assert verified.status_code == 200, verified.text
        assert (await login(client, Account(email=email))).status_code == 200

    async def test_the_same_answer_for_any_address_and_no_message(
        self, client: httpx.AsyncClient
    ) -> None:
        """A verified or unknown address answers 202 like any other, and nothing is sent:
        the route does not tell who has an account."""
        account = await registered(client)
        before = len(await _outbox(client, account.email))
        unknown = new_email()
        for email in (account.email, unknown):
            response = await client.post("/api/v1/auth/verify-email/resend", json={"email": email})
            assert response.status_code == 202, response.text
        assert len(await _outbox(client, account.email)) == before
        assert await _outbox(client, unknown) == []


class TestEndOtherSessions:
    async def test_every_other_session_ends_and_the_callers_goes_on(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        account = await registered(client)
        other = await second_session(
            client, account, await with_totp(client, account, clock), clock
        )
        ended = await client.delete("/api/v1/auth/sessions", headers=account.bearer)
        assert ended.status_code == 200, ended.text
        assert ended.json()["revoked"] == 1
        assert (await _refresh(client, other.refresh_token)).status_code == 401
        assert (await _refresh(client, account.refresh_token)).status_code == 200
        listed = await client.get("/api/v1/auth/sessions", headers=account.bearer)
        assert len(listed.json()["sessions"]) == 1


async def _pending_login(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "AUTH_MFA_REQUIRED"
    token: str = response.json()["details"]["mfa_token"]
    return token


class TestSecondFactorBounds:
    async def test_one_sign_in_sends_at_most_three_codes(self, client: httpx.AsyncClient) -> None:
        """MFA_CHALLENGE_SENDS_MAX: a pending sign-in may ask for three email codes; the fourth
        request is refused and sends nothing."""
        account = await registered(client)
        enrolled = await client.post("/api/v1/auth/mfa/email/enroll", headers=account.bearer)
        assert enrolled.status_code == 200, enrolled.text
        confirm = await client.post(
            "/api/v1/auth/mfa/email/confirm",
            json={"code": await outbox_code(client, account.email)},
            headers=account.bearer,
        )
        assert confirm.status_code == 200, confirm.text
        token = await _pending_login(client, account)
        before = len(await _outbox(client, account.email))
        answers = [
            (await client.post("/api/v1/auth/mfa/email/send", json={"mfa_token": token}))
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 401], answers[-1].text
        assert answers[-1].json()["code"] == "AUTH_INVALID_MFA_CODE"
        assert len(await _outbox(client, account.email)) == before + 3

    async def test_removing_a_factor_that_is_not_there_is_404(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """With a fresh second factor, removing SMS (never enrolled) is 404; removing the
        backup codes works once, then is 404 too."""
        account = await registered(client)
        await with_totp(client, account, clock)
        created = await client.post("/api/v1/auth/mfa/backup-codes", headers=account.bearer)
        assert created.status_code in {200, 201}, created.text
        sms = await client.delete("/api/v1/auth/mfa/factors/sms", headers=account.bearer)
        assert sms.status_code == 404, sms.text
        first = await client.delete("/api/v1/auth/mfa/factors/backup_code", headers=account.bearer)
        assert first.status_code == 204, first.text
        again = await client.delete("/api/v1/auth/mfa/factors/backup_code", headers=account.bearer)
        assert again.status_code == 404, again.text
