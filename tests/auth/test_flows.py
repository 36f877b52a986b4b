"""Full identity flows over HTTP, as a mobile app would drive them.

register -> verify via the outbox -> enrol TOTP -> login with MFA -> refresh -> list and revoke
sessions -> reset password; then the same second step with backup codes, SMS and email codes,
step-up before removing a factor, and the audit trail the flows leave (with no secret in it).
Only the message providers are local (the outbox); PostgreSQL, Redis, argon2, RSA and the
FastAPI app are the real ones.
"""

from __future__ import annotations

import unicodedata
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from auth.dependencies import AuthDependencies, AuthLimits
from auth.otp import totp
from kit.clock import FrozenClock
from kit.ratelimit import RateLimitPolicy, Window
from kit.settings import Environment
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    Account,
    build_app,
    login,
    new_email,
    outbox_code,
    registered,
    with_totp,
)

pytestmark = pytest.mark.db


async def _mfa_required(
    client: httpx.AsyncClient, account: Account, password: str = PASSWORD
) -> dict[str, object]:
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": password}
    )
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "AUTH_MFA_REQUIRED"
    return dict(body["details"])


async def _verify(
    client: httpx.AsyncClient, account: Account, token: object, method: str, code: str
) -> httpx.Response:
    response = await client.post(
        "/api/v1/auth/mfa/verify", json={"mfa_token": token, "method": method, "code": code}
    )
    if response.status_code == 200:
        account.access_token = response.json()["access_token"]
        account.refresh_token = response.json()["refresh_token"]
    return response


class TestTotpJourney:
    async def test_register_verify_totp_login_refresh_sessions_reset(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """The whole journey of the issue, step by step."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)

        details = await _mfa_required(client, account)
        assert details["methods"] == ["totp"]
        response = await _verify(
            client, account, details["mfa_token"], "totp", totp(secret, clock.now())
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "scope"}
        assert body["token_type"] == "Bearer"
        assert "openid" in body["scope"]

        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 200
        account.access_token = refreshed.json()["access_token"]

        sessions = (await client.get("/api/v1/auth/sessions", headers=account.bearer)).json()[
            "sessions"
        ]
        assert len(sessions) == 2  # the TOTP-confirm session and this login
        other = next(s for s in sessions if not s["is_current"])
        assert (
            await client.delete(
                f"/api/v1/auth/sessions/{other['session_id']}", headers=account.bearer
            )
        ).status_code == 204
        assert (
            await client.delete(
                f"/api/v1/auth/sessions/{other['session_id']}", headers=account.bearer
            )
        ).status_code == 404
        assert (
            len(
                (await client.get("/api/v1/auth/sessions", headers=account.bearer)).json()[
                    "sessions"
                ]
            )
            == 1
        )

        assert (
            await client.post("/api/v1/auth/password/reset/request", json={"email": account.email})
        ).status_code == 202
        code = await outbox_code(client, account.email)
        reset = await client.post(
            "/api/v1/auth/password/reset/confirm",
            json={"email": account.email, "code": code, "new_password": NEW_PASSWORD},
        )
        assert reset.status_code == 200, reset.text
        assert reset.json()["revoked"] == 1
        assert (
            await client.get("/api/v1/auth/sessions", headers=account.bearer)
        ).status_code == 401
        assert (
            await client.post(
                "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
            )
        ).status_code == 401
        clock.advance(30)
        details = await _mfa_required(client, account, NEW_PASSWORD)  # a reset never skips MFA
        assert (
            await _verify(client, account, details["mfa_token"], "totp", totp(secret, clock.now()))
        ).status_code == 200

    async def test_one_step_login_with_mfa_code_and_replay(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """The seed's {email, password, mfa_code} works once per code; a replay is refused."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        code = totp(secret, clock.now())
        assert (await login(client, account, mfa_code=code)).status_code == 200
        replay = await login(client, account, mfa_code=code)
        assert replay.status_code == 401
        assert replay.json()["code"] == "AUTH_INVALID_MFA_CODE"
        clock.advance(90)
        fresh = totp(secret, clock.now())
        old = totp(secret, clock.now() - timedelta(seconds=60))
        assert (await login(client, account, mfa_code=old)).status_code == 401  # out of window
        assert (await login(client, account, mfa_code=fresh)).status_code == 200

    async def test_mfa_challenge_allows_three_guesses(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A challenge dies after 3 wrong codes (the seed's max_attempts)."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        details = await _mfa_required(client, account)
        for _ in range(3):
            assert (
                await _verify(client, account, details["mfa_token"], "totp", "000000")
            ).status_code == 401
        right = await _verify(
            client, account, details["mfa_token"], "totp", totp(secret, clock.now())
        )
        assert right.status_code == 401


class TestMfaRateLimit:
    async def test_mfa_verify_is_limited_per_account(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """The seed's 10 MFA verifications per 5 minutes per account, across challenges."""
        account = await registered(client)
        await with_totp(client, account, clock)
        answers = []
        for _ in range(4):
            details = await _mfa_required(client, account)
            token = details["mfa_token"]
            answers.extend(
                [await _verify(client, account, token, "totp", "000000") for _ in range(3)]
            )
        # The TOTP confirmation was the account's first of its 10 verifications.
        assert [r.status_code for r in answers[:9]] == [401] * 9
        assert answers[9].status_code == 429
        assert answers[9].json()["details"]["policy"] == "mfa_verify"


class TestBackupCodes:
    async def test_backup_codes_finish_a_login_once(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """10 codes; one finishes a login; reused it fails; regenerating kills the old set."""
        account = await registered(client)
        await with_totp(client, account, clock)
        issued = await client.post("/api/v1/auth/mfa/backup-codes", headers=account.bearer)
        assert issued.status_code == 200, issued.text
        codes = issued.json()["codes"]
        assert len(codes) == 10
        assert len(set(codes)) == 10

        details = await _mfa_required(client, account)
        assert "backup_code" in details["methods"]  # type: ignore[operator]
        assert (
            await _verify(client, account, details["mfa_token"], "backup_code", codes[0].lower())
        ).status_code == 200
        details = await _mfa_required(client, account)
        assert (
            await _verify(client, account, details["mfa_token"], "backup_code", codes[0])
        ).status_code == 401

        factors = (await client.get("/api/v1/auth/mfa/factors", headers=account.bearer)).json()
        assert factors["backup_codes_remaining"] == 9
        renewed = (
            await client.post("/api/v1/auth/mfa/backup-codes", headers=account.bearer)
        ).json()["codes"]
        assert not set(renewed) & set(codes)
        details = await _mfa_required(client, account)
        assert (
            await _verify(client, account, details["mfa_token"], "backup_code", codes[1])
        ).status_code == 401

    async def test_backup_codes_need_an_mfa_session(self, client: httpx.AsyncClient) -> None:
        """A password-only session cannot mint backup codes."""
        account = await registered(client)
        response = await client.post("/api/v1/auth/mfa/backup-codes", headers=account.bearer)
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_MFA_STEP_UP_REQUIRED"
        assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]


class TestOutOfBandCodes:
    async def test_sms_enrol_and_login(self, client: httpx.AsyncClient) -> None:
        """Enrol a phone by SMS code, then finish a login with a code sent by SMS."""
        account = await registered(client)
        phone = "+14155550123"
        sent = await client.post(
            "/api/v1/auth/mfa/sms/enroll",
            json={"phone_number": "+1 (415) 555-0123"},
            headers=account.bearer,
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["sent_to"] == "***0123"
        confirmed = await client.post(
            "/api/v1/auth/mfa/sms/confirm",
            json={"code": await outbox_code(client, phone)},
            headers=account.bearer,
        )
        assert confirmed.status_code == 200, confirmed.text

        details = await _mfa_required(client, account)
        assert details["methods"] == ["sms"]
        assert (
            await client.post("/api/v1/auth/mfa/sms/send", json={"mfa_token": details["mfa_token"]})
        ).status_code == 200
        response = await _verify(
            client, account, details["mfa_token"], "sms", await outbox_code(client, phone)
        )
        assert response.status_code == 200, response.text

    async def test_email_enrol_and_login(self, client: httpx.AsyncClient) -> None:
        """Enrol email codes, then finish a login with a code sent by email."""
        account = await registered(client)
        assert (
            await client.post("/api/v1/auth/mfa/email/enroll", headers=account.bearer)
        ).status_code == 200
        code = await outbox_code(client, account.email)
        assert (
            await client.post(
                "/api/v1/auth/mfa/email/confirm", json={"code": code}, headers=account.bearer
            )
        ).status_code == 200
        details = await _mfa_required(client, account)
        await client.post("/api/v1/auth/mfa/email/send", json={"mfa_token": details["mfa_token"]})
        wrong = await _verify(client, account, details["mfa_token"], "email", "000000")
        assert wrong.status_code == 401
        response = await _verify(
            client, account, details["mfa_token"], "email", await outbox_code(client, account.email)
        )
        assert response.status_code == 200, response.text

    async def test_sms_code_cannot_finish_an_email_challenge(
        self, client: httpx.AsyncClient
    ) -> None:
        """A method that is not enrolled is refused for the challenge."""
        account = await registered(client)
        await client.post("/api/v1/auth/mfa/email/enroll", headers=account.bearer)
        code = await outbox_code(client, account.email)
        await client.post(
            "/api/v1/auth/mfa/email/confirm", json={"code": code}, headers=account.bearer
        )
        details = await _mfa_required(client, account)
        response = await client.post(
            "/api/v1/auth/mfa/sms/send", json={"mfa_token": details["mfa_token"]}
        )
        assert response.status_code == 401


class TestStepUp:
    async def test_factor_removal_needs_a_fresh_second_factor(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """After 5 minutes removal is refused; a step-up mints a new session that may remove."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        clock.advance(301)
        stale = await client.delete("/api/v1/auth/mfa/factors/totp", headers=account.bearer)
        assert stale.status_code == 401
        assert stale.json()["code"] == "AUTH_MFA_STEP_UP_REQUIRED"
        assert "max_age=300" in stale.headers["www-authenticate"]
        old_session = account.access_token
        challenge = await client.post("/api/v1/auth/mfa/challenge", headers=account.bearer)
        assert challenge.status_code == 200
        response = await _verify(
            client, account, challenge.json()["mfa_token"], "totp", totp(secret, clock.now())
        )
        assert response.status_code == 200, response.text
        assert (
            await client.get(
                "/api/v1/auth/sessions", headers={"Authorization": f"Bearer {old_session}"}
            )
        ).status_code == 401
        assert (
            await client.delete("/api/v1/auth/mfa/factors/totp", headers=account.bearer)
        ).status_code == 204
        assert (await client.get("/api/v1/auth/mfa/factors", headers=account.bearer)).json()[
            "factors"
        ] == []


class TestRegistration:
    async def test_policy_names_the_failed_rule(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Each rule of the seed's policy, the blocklist and the email check are named."""
        deps.limits = AuthLimits(register=RateLimitPolicy("register", (Window(100, 3600),)))
        email = new_email()
        cases = {
            "Short-1a": "min_length",
            "no-upper-case-123!": "uppercase",
            "NO-LOWER-CASE-123!": "lowercase",
            "No-Digits-At-All!": "digit",
            "NoSymbolsAtAll123": "symbol",
            "P@ssw0rd2024!": "common_password",
            "Password123!": "common_password",
            f"{email.split('@')[0].upper()}-x1": "email",
            "A1!" + "a" * 130: "max_length",
        }
        for password, rule in cases.items():
            response = await client.post(
                "/api/v1/auth/register", json={"email": email, "password": password}
            )
            assert response.status_code == 422, (password, response.text)
            assert response.json()["details"]["rule"] == rule, password

    async def test_unicode_passwords_are_nfkc_and_never_truncated(
        self, client: httpx.AsyncClient
    ) -> None:
        """A long Unicode password registers; its NFKC twin signs in; a prefix does not."""
        email = new_email()
        # Full-width letters and digits (NFKC folds them to ASCII), accents, Cyrillic: 110 code
        # points, far past bcrypt's 72 bytes.
        password = "\uff30\uff41\uff53\uff53-\uff57\uff4f\uff52\uff44-\uff19-Ünïcödé-" + "ж" * 90
        assert (
            await client.post("/api/v1/auth/register", json={"email": email, "password": password})
        ).status_code == 201
        code = await outbox_code(client, email)
        await client.post("/api/v1/auth/verify-email", json={"email": email, "code": code})
        twin = unicodedata.normalize("NFKC", password)
        assert (
            await client.post("/api/v1/auth/login", json={"email": email, "password": twin})
        ).status_code == 200
        cut = twin[:-1]
        assert (
            await client.post("/api/v1/auth/login", json={"email": email, "password": cut})
        ).status_code == 401

    async def test_register_is_rate_limited_per_ip(self, client: httpx.AsyncClient) -> None:
        """The seed's 3 registrations per hour: the 4th from one address is 429."""
        answers = [
            await client.post(
                "/api/v1/auth/register", json={"email": new_email(), "password": PASSWORD}
            )
            for _ in range(4)
        ]
        assert [r.status_code for r in answers] == [201, 201, 201, 429]
        assert answers[-1].headers["retry-after"] == "3600"

    async def test_duplicate_address_answers_the_same(self, client: httpx.AsyncClient) -> None:
        """Registering a taken address answers 201 alike and mails the owner a notice."""
        account = await registered(client)
        again = await client.post(
            "/api/v1/auth/register", json={"email": account.email.upper(), "password": PASSWORD}
        )
        assert again.status_code == 201
        assert again.json() == {"email": account.email, "status": "verification_required"}
        messages = (await client.get("/api/v1/dev/outbox", params={"to": account.email})).json()[
            "messages"
        ]
        assert messages[0]["subject"] == "Someone tried to register with your address"

    async def test_unverified_account_cannot_sign_in(self, client: httpx.AsyncClient) -> None:
        """Until the code comes back the account is inactive; a wrong code counts."""
        email = new_email()
        await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "phone_number": "+442079460958"},
        )
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 403
        assert response.json()["code"] == "AUTH_EMAIL_NOT_VERIFIED"
        wrong = await client.post(
            "/api/v1/auth/verify-email", json={"email": email, "code": "000000"}
        )
        assert wrong.status_code == 422
        assert wrong.json()["code"] == "AUTH_INVALID_CODE"

    async def test_phone_is_stored_as_e164(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A national-format phone with country code is stored as E.164; email lower-cased."""
        email = new_email()
        await client.post(
            "/api/v1/auth/register",
            json={"email": email.upper(), "password": PASSWORD, "phone_number": "+44 20 7946 0958"},
        )
        async with deps.db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT email, phone_number, is_active, role, tier FROM users WHERE email = $1",
                email,
            )
        assert row is not None
        assert (row["phone_number"], row["is_active"], row["role"], row["tier"]) == (
            "+442079460958",
            False,
            "user",
            "basic",
        )


class TestPasswordRecovery:
    async def test_an_unknown_address_gets_the_same_answers_and_no_mail(
        self, client: httpx.AsyncClient
    ) -> None:
        """Reset for an address with no account: 202, nothing sent, and its confirmation is
        refused exactly like a wrong code."""
        email = new_email()
        request = await client.post("/api/v1/auth/password/reset/request", json={"email": email})
        assert request.status_code == 202
        outbox = await client.get("/api/v1/dev/outbox", params={"to": email})
        assert outbox.json()["messages"] == []
        confirm = await client.post(
            "/api/v1/auth/password/reset/confirm",
            json={"email": email, "code": "123456", "new_password": NEW_PASSWORD},
        )
        assert confirm.status_code == 422
        assert confirm.json()["code"] == "AUTH_INVALID_CODE"

    async def test_a_wrong_reset_code_changes_nothing(self, client: httpx.AsyncClient) -> None:
        """A wrong code keeps the password and the sessions; the right one then works."""
        account = await registered(client)
        await client.post("/api/v1/auth/password/reset/request", json={"email": account.email})
        code = await outbox_code(client, account.email)
        body = {"email": account.email, "new_password": NEW_PASSWORD}
        wrong = await client.post(
            "/api/v1/auth/password/reset/confirm",
            json={**body, "code": f"{(int(code) + 1) % 1_000_000:06d}"},
        )
        assert wrong.status_code == 422
        assert (
            await client.get("/api/v1/auth/sessions", headers=account.bearer)
        ).status_code == 200
        right = await client.post(
            "/api/v1/auth/password/reset/confirm", json={**body, "code": code}
        )
        assert right.status_code == 200, right.text
        assert right.json()["revoked"] == 1

    async def test_a_wrong_current_password_changes_nothing(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Changing the password with a wrong current one answers 401, ends no session and is
        audited as a failed password check."""
        account = await registered(client)
        await with_totp(client, account, clock)
        response = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": "Wrong-Password-11", "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_INVALID_CREDENTIALS"
        assert response.json()["detail"] == "the current password is incorrect"
        assert (
            await client.get("/api/v1/auth/sessions", headers=account.bearer)
        ).status_code == 200
        async with deps.db.connection() as conn:
            reasons = await conn.fetch(
                "SELECT new_values->>'reason' AS reason FROM audit_log"
                " WHERE table_name = 'auth_events' AND new_values->>'event' = 'auth.login_failed'"
                " AND changed_by = (SELECT id FROM users WHERE email = $1)",
                account.email,
            )
        assert [r["reason"] for r in reasons] == ["password_change_wrong_current"]
        assert (await login(client, account)).json()["code"] == "AUTH_MFA_REQUIRED"


class TestAudit:
    async def test_events_are_recorded_without_secrets(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The flows leave audit rows with ip and user agent, and no secret anywhere."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "Wrong-Password-11"}
        )
        clock.advance(5)
        details = await _mfa_required(client, account)
        await _verify(client, account, details["mfa_token"], "totp", totp(secret, clock.now()))
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        account.access_token = refreshed.json()["access_token"]
        await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        await client.post("/api/v1/auth/logout", headers=account.bearer)
        async with deps.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT new_values, ip_address, user_agent FROM audit_log"
                " WHERE table_name = 'auth_events'"
                " AND changed_by = (SELECT id FROM users WHERE email = $1)",
                account.email,
            )
        events = {r["new_values"]["event"] for r in rows}
        assert {
            "auth.registered",
            "auth.email_verified",
            "auth.login_succeeded",
            "auth.login_failed",
            "auth.mfa_enrolled",
            "auth.mfa_challenged",
            "auth.refreshed",
            "auth.password_changed",
            "auth.logout",
            "auth.step_up",
        } - events == {"auth.step_up"}
        assert all(str(r["ip_address"]) == "127.0.0.1" for r in rows)
        text = str([dict(r["new_values"]) for r in rows])
        for secret_text in (PASSWORD, NEW_PASSWORD, account.refresh_token, account.access_token):
            assert secret_text not in text
        failed = next(
            r["new_values"] for r in rows if r["new_values"]["event"] == "auth.login_failed"
        )
        assert failed["factor"] == "password"


class TestSurface:
    async def test_outbox_route_does_not_exist_in_production(self, deps: AuthDependencies) -> None:
        """In production mode /api/v1/dev/outbox is a 404."""
        deps.settings = deps.settings.model_copy(update={"env": Environment.PRODUCTION})
        app: FastAPI = build_app(deps)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            response = await http.get("/api/v1/dev/outbox")
        assert response.status_code == 404

    async def test_every_auth_route_documents_its_problems(self, client: httpx.AsyncClient) -> None:
        """Each identity route in OpenAPI lists problem responses besides its success."""
        schema = (await client.get("/openapi.json")).json()
        routes = {
            (path, method): op
            for path, item in schema["paths"].items()
            for method, op in item.items()
            if path.startswith(("/api/v1/auth", "/oauth"))
        }
        assert len(routes) >= 35
        for (path, method), op in routes.items():
            problems = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert problems, (method, path)
