"""Second-factor rules an attacker would probe: TOTP windows and replays, out-of-band codes after
wrong guesses and resends, backup codes spent twice at once (or two racing on one challenge,
where only the winner's is spent), factor removal, and a challenge that outlives the account's
lock or the session it was meant to step up.

Method: every scenario drives the HTTP app (real PostgreSQL, Redis, argon2 and the local outbox);
TOTP codes are computed from the enrolled secret at the frozen clock's time, which only the test
moves. Where two attempts must meet, the test holds a PostgreSQL row lock until both wait on it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from auth.challenges import Attempt, Challenge
from auth.constants import MFA_CHALLENGE_ATTEMPTS_MAX, MFA_CHALLENGE_TTL_S
from auth.dependencies import AuthDependencies
from auth.otp import totp
from auth.service import admin
from kit.clock import FrozenClock
from tests.auth.conftest import (
    Account,
    login,
    mfa_token,
    outbox_code,
    registered,
    until_blocked,
    verify_second_step,
    with_totp,
)
from users import service as users

pytestmark = pytest.mark.db

MFA = "/api/v1/auth/mfa"


async def _with_email_codes(client: httpx.AsyncClient, account: Account) -> None:
    assert (await client.post(f"{MFA}/email/enroll", headers=account.bearer)).status_code == 200
    confirmed = await client.post(
        f"{MFA}/email/confirm",
        json={"code": await outbox_code(client, account.email)},
        headers=account.bearer,
    )
    assert confirmed.status_code == 200, confirmed.text
    account.access_token = confirmed.json()["access_token"]


class TestTotpWindow:
    async def test_one_step_of_skew_either_side_and_never_backwards(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """The previous and the next step's codes pass; once the next step's code was
        accepted, the current step's code is a replay; two steps ahead is out of the window."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        clock.advance(30)  # the step before now was never used
        step = timedelta(seconds=30)
        previous = totp(secret, clock.now() - step)
        assert (await login(client, account, mfa_code=previous)).status_code == 200
        upcoming = totp(secret, clock.now() + step)
        assert (await login(client, account, mfa_code=upcoming)).status_code == 200
        current = await login(client, account, mfa_code=totp(secret, clock.now()))
        assert current.status_code == 401
        assert current.json()["code"] == "AUTH_INVALID_MFA_CODE"
        far = await login(client, account, mfa_code=totp(secret, clock.now() + 2 * step))
        assert far.status_code == 401

    async def test_confirming_needs_an_enrolment_in_progress(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A code for a secret never enrolled, or a wrong first code, does not enable TOTP."""
        account = await registered(client)
        unstarted = await client.post(
            f"{MFA}/totp/confirm", json={"code": "123456"}, headers=account.bearer
        )
        assert unstarted.status_code == 401
        assert (await client.post(f"{MFA}/totp/enroll", headers=account.bearer)).status_code == 200
        wrong = await client.post(
            f"{MFA}/totp/confirm", json={"code": "not-a-code"}, headers=account.bearer
        )
        assert wrong.status_code == 401
        factors = (await client.get(f"{MFA}/factors", headers=account.bearer)).json()
        assert [(f["method"], f["is_enabled"]) for f in factors["factors"]] == [("totp", False)]

    async def test_an_enabled_factor_cannot_be_enrolled_again(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """Enrolling TOTP or email codes a second time answers 409 and keeps the first secret."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        await _with_email_codes(client, account)
        for method in ("totp", "email"):
            again = await client.post(f"{MFA}/{method}/enroll", headers=account.bearer)
            assert again.status_code == 409, again.text
            assert again.json()["code"] == "AUTH_FACTOR_ALREADY_ENROLLED"
        token = await mfa_token(client, account)
        response = await verify_second_step(client, token, "totp", totp(secret, clock.now()))
        assert response.status_code == 200, response.text


class TestOutOfBandCodes:
    async def test_an_enrolment_code_dies_after_five_wrong_guesses(
        self, client: httpx.AsyncClient
    ) -> None:
        """After five wrong codes even the right one is refused and the factor stays off."""
        account = await registered(client)
        assert (await client.post(f"{MFA}/email/enroll", headers=account.bearer)).status_code == 200
        code = await outbox_code(client, account.email)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            refused = await client.post(
                f"{MFA}/email/confirm", json={"code": wrong}, headers=account.bearer
            )
            assert refused.status_code == 422
            assert refused.json()["code"] == "AUTH_INVALID_CODE"
        late = await client.post(
            f"{MFA}/email/confirm", json={"code": code}, headers=account.bearer
        )
        assert late.status_code == 422
        factors = (await client.get(f"{MFA}/factors", headers=account.bearer)).json()
        assert [f["is_enabled"] for f in factors["factors"]] == [False]

    async def test_a_resent_code_replaces_the_previous_one(self, client: httpx.AsyncClient) -> None:
        """Only the newest code sent for a sign-in works; a code never sent does not."""
        account = await registered(client)
        await _with_email_codes(client, account)
        token = await mfa_token(client, account)
        unsent = await verify_second_step(client, token, "email", "000000")
        assert unsent.status_code == 401  # nothing was sent yet: no code can match
        send = {"mfa_token": token}
        assert (await client.post(f"{MFA}/email/send", json=send)).status_code == 200
        first = await outbox_code(client, account.email)
        assert (await client.post(f"{MFA}/email/send", json=send)).status_code == 200
        second = await outbox_code(client, account.email)
        if first != second:  # one chance in a million that both sends drew the same code
            assert (await verify_second_step(client, token, "email", first)).status_code == 401
        assert (await verify_second_step(client, token, "email", second)).status_code == 200

    async def test_a_sign_in_sends_at_most_three_codes(self, client: httpx.AsyncClient) -> None:
        """The fourth send for one challenge is refused and nothing more reaches the outbox."""
        account = await registered(client)
        await _with_email_codes(client, account)
        token = await mfa_token(client, account)
        answers = [
            await client.post(f"{MFA}/email/send", json={"mfa_token": token}) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 401]
        assert answers[3].json()["detail"] == "too many codes were sent for this sign-in"
        outbox = await client.get("/api/v1/dev/outbox", params={"to": account.email})
        # the verification, the enrolment and the three sign-in codes
        assert len(outbox.json()["messages"]) == 5

    async def test_a_factor_removed_during_a_sign_in_sends_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A challenge that named email codes cannot send one once the factor is gone."""
        account = await registered(client)
        await with_totp(client, account, clock)
        await _with_email_codes(client, account)
        token = await mfa_token(client, account)
        removed = await client.delete(f"{MFA}/factors/email", headers=account.bearer)
        assert removed.status_code == 204, removed.text
        response = await client.post(f"{MFA}/email/send", json={"mfa_token": token})
        assert response.status_code == 422
        assert response.json()["code"] == "AUTH_MFA_NOT_ENROLLED"

    async def test_a_method_outside_the_challenge_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A TOTP-only sign-in refuses an email code and an unknown mfa_token without a guess."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        token = await mfa_token(client, account)
        assert (await verify_second_step(client, token, "email", "123456")).status_code == 401
        assert (await verify_second_step(client, "x" * 43, "totp", "123456")).status_code == 401
        response = await verify_second_step(client, token, "totp", totp(secret, clock.now()))
        assert response.status_code == 200, response.text


class TestBackupCodes:
    async def test_one_code_spent_twice_at_once_finishes_one_sign_in(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Two sign-ins racing with the same backup code: exactly one gets a session."""
        account = await registered(client)
        await with_totp(client, account, clock)
        codes = (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).json()["codes"]
        first, second = await mfa_token(client, account), await mfa_token(client, account)
        answers = await asyncio.gather(
            verify_second_step(client, first, "backup_code", codes[0]),
            verify_second_step(client, second, "backup_code", codes[0]),
        )
        assert sorted(a.status_code for a in answers) == [200, 401]
        factors = (await client.get(f"{MFA}/factors", headers=account.bearer)).json()
        assert factors["backup_codes_remaining"] == 9

    async def test_one_challenge_opens_one_session(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Two right backup codes on one challenge at once: one session, one refusal."""
        account = await registered(client)
        await with_totp(client, account, clock)
        codes = (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).json()["codes"]
        token = await mfa_token(client, account)
        answers = await asyncio.gather(
            verify_second_step(client, token, "backup_code", codes[0]),
            verify_second_step(client, token, "backup_code", codes[1]),
        )
        assert sorted(a.status_code for a in answers) == [200, 401]
        sessions = (await client.get("/api/v1/auth/sessions", headers=account.bearer)).json()
        assert len(sessions["sessions"]) == 2  # the TOTP confirmation's and the one sign-in

    async def test_the_code_that_lost_the_race_is_not_spent(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Two right backup codes on one challenge at once: only the code that finished the
        sign-in is used up (and audited); the other still finishes a later sign-in. The codes'
        rows are held locked until both attempts wait on them, so both have checked the
        challenge and reached their code before either can finish."""
        account = await registered(client)
        await with_totp(client, account, clock)
        codes = (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).json()["codes"]
        token = await mfa_token(client, account)
        async with deps.db.transaction() as holder:
            user_id = await holder.fetchval("SELECT id FROM users WHERE email = $1", account.email)
            await holder.execute(
                "SELECT id FROM auth_backup_codes WHERE user_id = $1 FOR UPDATE", user_id
            )
            racing = asyncio.gather(
                verify_second_step(client, token, "backup_code", codes[0]),
                verify_second_step(client, token, "backup_code", codes[1]),
            )
            assert await until_blocked(deps, holder.get_server_pid(), count=2)
        answers = await racing
        assert sorted(a.status_code for a in answers) == [200, 401]
        loser = codes[0] if answers[0].status_code == 401 else codes[1]
        assert answers[codes.index(loser)].json()["code"] == "AUTH_INVALID_MFA_CODE"
        factors = (await client.get(f"{MFA}/factors", headers=account.bearer)).json()
        assert factors["backup_codes_remaining"] == 9
        async with deps.db.connection() as conn:
            used_events = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE table_name = 'auth_events'"
                " AND new_values->>'event' = 'auth.backup_code_used'"
                " AND changed_by = (SELECT id FROM users WHERE email = $1)",
                account.email,
            )
        assert used_events == 1
        later = await verify_second_step(
            client, await mfa_token(client, account), "backup_code", loser
        )
        assert later.status_code == 200, later.text


class TestAConsumedChallenge:
    """What a request that read a challenge just before another consumed it can still do."""

    async def _read_then_consumed(
        self, deps: AuthDependencies, redis_client: aioredis.Redis
    ) -> tuple[Challenge, bytes | str]:
        token = await deps.challenges.create(
            user_id=uuid.uuid4(), methods=("totp", "sms", "backup_code"), replaces_session=None
        )
        read = await deps.challenges.find(token)
        assert read is not None
        key = next(iter(await redis_client.keys(f"*mfa-challenge:{read.digest}")))
        assert await deps.challenges.consume(read)  # the other request finished first
        return read, key

    async def test_a_guess_counted_after_the_consume_ends_nothing(
        self, deps: AuthDependencies, redis_client: aioredis.Redis
    ) -> None:
        """Counting a guess at a consumed challenge finds it gone and writes nothing, so the
        challenge cannot be consumed, and a session opened, a second time."""
        read, key = await self._read_then_consumed(deps, redis_client)
        assert await deps.challenges.count_attempt(read) is Attempt.GONE
        assert await redis_client.exists(key) == 0
        assert not await deps.challenges.consume(read)

    async def test_a_send_or_a_code_after_the_consume_writes_nothing(
        self, deps: AuthDependencies, redis_client: aioredis.Redis
    ) -> None:
        """Counting a send and attaching a code hash or a WebAuthn challenge to a consumed
        challenge find it gone: no field-only challenge without TTL or owner is left."""
        read, key = await self._read_then_consumed(deps, redis_client)
        assert await deps.challenges.count_send(read) is None
        assert not await deps.challenges.remember(read, "sms_code", "ab" * 32)
        assert not await deps.challenges.remember(read, "webauthn", "Y2hhbGxlbmdl")
        assert await redis_client.exists(key) == 0
        assert not await deps.challenges.consume(read)

    async def test_a_live_challenge_counts_and_ends_at_its_last_guess(
        self, deps: AuthDependencies, redis_client: aioredis.Redis
    ) -> None:
        """The checked counters still count a live challenge, keep its TTL, and end it one
        guess past MFA_CHALLENGE_ATTEMPTS_MAX."""
        token = await deps.challenges.create(
            user_id=uuid.uuid4(), methods=("totp",), replaces_session=None
        )
        read = await deps.challenges.find(token)
        assert read is not None
        key = next(iter(await redis_client.keys(f"*mfa-challenge:{read.digest}")))
        assert await deps.challenges.count_send(read) == 1
        assert await deps.challenges.remember(read, "sms_code", "cd" * 32)
        assert (await deps.challenges.find(token)) == replace(read, sms_code="cd" * 32)
        for _ in range(MFA_CHALLENGE_ATTEMPTS_MAX):
            assert await deps.challenges.count_attempt(read) is Attempt.COUNTED
        assert 0 < await redis_client.ttl(key) <= MFA_CHALLENGE_TTL_S
        assert await deps.challenges.count_attempt(read) is Attempt.EXHAUSTED
        assert await redis_client.exists(key) == 0
        assert await deps.challenges.find(token) is None

    async def test_a_challenge_without_its_owner_is_unknown(
        self, deps: AuthDependencies, redis_client: aioredis.Redis
    ) -> None:
        """A challenge key holding only a counter (what a counter on a consumed challenge left
        behind before counters checked first) is an unknown challenge, not an error."""
        token = await deps.challenges.create(
            user_id=uuid.uuid4(), methods=("totp",), replaces_session=None
        )
        read = await deps.challenges.find(token)
        assert read is not None
        key = next(iter(await redis_client.keys(f"*mfa-challenge:{read.digest}")))
        await redis_client.delete(key)
        await redis_client.hset(key, "attempts", "1")
        assert await deps.challenges.find(token) is None


class TestRemoval:
    async def test_backup_codes_can_be_removed_once(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """Deleting the backup codes ends the set; deleting again (or a factor never enrolled)
        answers 404 AUTH_FACTOR_NOT_FOUND."""
        account = await registered(client)
        await with_totp(client, account, clock)
        codes = (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).json()["codes"]
        removed = await client.delete(f"{MFA}/factors/backup_code", headers=account.bearer)
        assert removed.status_code == 204
        for method in ("backup_code", "sms"):
            missing = await client.delete(f"{MFA}/factors/{method}", headers=account.bearer)
            assert missing.status_code == 404
            assert missing.json()["code"] == "AUTH_FACTOR_NOT_FOUND"
        token = await mfa_token(client, account)
        assert token
        assert (await verify_second_step(client, token, "backup_code", codes[0])).status_code == 401


class TestChallengeOutlivesItsContext:
    async def test_a_lock_during_the_second_step_refuses_the_session(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An account locked between the password and the second factor gets no session."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        token = await mfa_token(client, account)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, account.email)
            assert user is not None
            await admin.lock_account(conn, deps, user_id=user.id, admin_id=uuid.uuid4())
        response = await verify_second_step(client, token, "totp", totp(secret, clock.now()))
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "AUTH_ACCOUNT_DISABLED"
        async with deps.db.connection() as conn:
            live = await conn.fetchval(
                "SELECT count(*) FROM user_sessions WHERE user_id = $1 AND is_active", user.id
            )
        assert live == 0

    async def test_a_step_up_of_an_ended_session_is_refused(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A step-up finished after its session was signed out mints nothing: sign in again."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        challenge = await client.post(f"{MFA}/challenge", headers=account.bearer)
        assert challenge.status_code == 200, challenge.text
        assert (await client.post("/api/v1/auth/logout", headers=account.bearer)).status_code == 204
        response = await verify_second_step(
            client, challenge.json()["mfa_token"], "totp", totp(secret, clock.now())
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "AUTH_SESSION_REVOKED"

    async def test_the_second_steps_document_these_refusals(
        self, client: httpx.AsyncClient
    ) -> None:
        """Both second steps list the locked account's and the ended session's codes."""
        paths = (await client.get("/openapi.json")).json()["paths"]
        for path in (f"{MFA}/verify", f"{MFA}/webauthn/authenticate/verify"):
            responses = paths[path]["post"]["responses"]
            assert "AUTH_ACCOUNT_DISABLED" in responses["403"]["description"], path
            assert "AUTH_SESSION_REVOKED" in responses["401"]["description"], path


class TestAddingAFactor:
    async def test_a_session_without_a_second_factor_cannot_add_one_to_an_account_with_one(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A password-only session opened before the first factor (a stolen password, say)
        cannot enrol a factor of its own once the account has one: it would pass every later
        second step. It must step up first; the session that enrolled may go on adding."""
        owner = await registered(client)
        earlier = Account(email=owner.email)
        assert (await login(client, earlier)).status_code == 200  # password only
        await with_totp(client, owner, clock)
        for path, body in (
            (f"{MFA}/email/enroll", None),
            (f"{MFA}/email/confirm", {"code": "123456"}),
            (f"{MFA}/totp/enroll", None),
            (f"{MFA}/webauthn/register/options", None),
        ):
            refused = await client.post(path, json=body, headers=earlier.bearer)
            assert refused.status_code == 401, (path, refused.text)  # RFC 9470 step-up
            assert refused.json()["code"] == "AUTH_MFA_STEP_UP_REQUIRED", path
        factors = await client.get(f"{MFA}/factors", headers=earlier.bearer)
        assert [f["method"] for f in factors.json()["factors"]] == ["totp"]
        await _with_email_codes(client, owner)  # the session that verified a factor
        factors = await client.get(f"{MFA}/factors", headers=owner.bearer)
        assert sorted(f["method"] for f in factors.json()["factors"]) == ["email", "totp"]
