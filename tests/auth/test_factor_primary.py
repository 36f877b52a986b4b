"""One primary second factor per user: never two, and never none while a factor is enabled.

The primary factor is the one a sign-in offers first. It is decided when a factor is confirmed
(the first one confirmed becomes primary) and when one is removed (removing the primary one
promotes the oldest enabled factor left). Two such decisions for one user at once must not
both act on a snapshot that misses the other: two confirmations would both become primary, and
a removal would promote nothing while another factor is being confirmed.

Method: each race is played explicitly, never left to timing. The first request runs inside a
transaction the test keeps open (its writes uncommitted), the second is started and the test
waits until it is blocked by the first (or has finished, which is what happened before the
decisions were serialised), then commits the first. Real PostgreSQL, Redis and crypto
throughout; the database's own guarantee (a unique partial index and a CHECK) is proved by
writing bad rows with raw SQL, past the service.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from auth.dependencies import AuthDependencies
from auth.models import IssuedTokens, MfaMethod, Outcome, RequestContext
from auth.otp import totp
from auth.service import mfa
from kit.clock import FrozenClock
from kit.migrations import MIGRATIONS_DIR
from tests.auth.conftest import (
    Account,
    login,
    outbox_code,
    registered,
    start_totp,
    until_waiting,
    with_totp,
)
from tests.auth.test_webauthn import SoftAuthenticator
from users import service as users

pytestmark = pytest.mark.db

MFA = "/api/v1/auth/mfa"
CONTEXT = RequestContext(ip="203.0.113.24", user_agent="phone")
PHONE = "+14155550177"
REPAIR_MIGRATION = MIGRATIONS_DIR / "0204_one_primary_factor.sql"
ONE_PRIMARY_INDEX = "idx_user_mfa_one_primary"
PRIMARY_IS_ENABLED_CHECK = "user_mfa_primary_is_enabled"


async def _user_id(deps: AuthDependencies, email: str) -> uuid.UUID:
    async with deps.db.connection() as conn:
        user = await users.find_by_email(conn, email)
    assert user is not None
    return user.id


def _session_of(deps: AuthDependencies, account: Account) -> str:
    """The session id of the account's latest access token."""
    return deps.verifier.verify(account.access_token).sid


async def _listed(client: httpx.AsyncClient, account: Account) -> list[tuple[str, bool, bool]]:
    """(method, is_enabled, is_primary) of every factor, as the factor list route reports."""
    response = await client.get(f"{MFA}/factors", headers=account.bearer)
    assert response.status_code == 200, response.text
    return [(f["method"], f["is_enabled"], f["is_primary"]) for f in response.json()["factors"]]


async def _primaries(client: httpx.AsyncClient, account: Account) -> list[str]:
    return [method for method, _, is_primary in await _listed(client, account) if is_primary]


async def _confirm_route(
    client: httpx.AsyncClient, account: Account, method: str, code: str
) -> None:
    """Confirm an SMS or email enrolment through its route; the account takes the new tokens."""
    response = await client.post(
        f"{MFA}/{method}/confirm", json={"code": code}, headers=account.bearer
    )
    assert response.status_code == 200, response.text
    account.access_token = response.json()["access_token"]
    account.refresh_token = response.json()["refresh_token"]


def _take(account: Account, outcome: Outcome[IssuedTokens]) -> None:
    assert outcome.error is None, outcome.error
    assert outcome.value is not None
    account.access_token = outcome.value.access_token
    account.refresh_token = outcome.value.refresh_token


class TestTwoConfirmationsAtOnce:
    async def test_two_confirmations_at_once_leave_one_primary(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A TOTP and an email confirmation of one user, the second run while the first's
        transaction is still open: only the first becomes primary, and the factor list route
        reports exactly one primary."""
        account = await registered(client)
        other = Account(email=account.email)
        assert (await login(client, other)).status_code == 200
        user_id = await _user_id(deps, account.email)
        secret = await start_totp(client, account)
        sent = await client.post(f"{MFA}/email/enroll", headers=other.bearer)
        assert sent.status_code == 200, sent.text
        email_code = await outbox_code(client, account.email)

        async def confirm_email() -> Outcome[IssuedTokens]:
            async with deps.db.transaction() as conn:
                user = await users.get_user(conn, user_id)
                return await mfa.confirm_oob(
                    conn,
                    deps,
                    user=user,
                    method=MfaMethod.EMAIL,
                    code=email_code,
                    session_id=_session_of(deps, other),
                    ctx=CONTEXT,
                )

        async with deps.db.transaction() as first:
            user = await users.get_user(first, user_id)
            confirmed = await mfa.confirm_totp(
                first,
                deps,
                user=user,
                code=totp(secret, clock.now()),
                session_id=_session_of(deps, account),
                ctx=CONTEXT,
            )
            first_pid = first.get_server_pid()
            confirming = asyncio.create_task(confirm_email())
            assert await until_waiting(deps, lambda pids: first_pid in pids, done=confirming)
        _take(account, confirmed)
        _take(other, await confirming)
        assert await _listed(client, account) == [("totp", True, True), ("email", True, False)]
        assert await _primaries(client, other) == ["totp"]

    async def test_a_removal_during_a_confirmation_leaves_the_confirmed_factor_primary(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Removing the primary TOTP while an email confirmation is still uncommitted waits
        for it, then promotes the email factor: the user is never left without a primary."""
        account = await registered(client)
        await with_totp(client, account, clock)
        user_id = await _user_id(deps, account.email)
        sent = await client.post(f"{MFA}/email/enroll", headers=account.bearer)
        assert sent.status_code == 200, sent.text
        email_code = await outbox_code(client, account.email)

        async def remove_totp() -> None:
            async with deps.db.transaction() as conn:
                await mfa.remove_factor(conn, deps, user_id=user_id, method=MfaMethod.TOTP)

        async with deps.db.transaction() as first:
            user = await users.get_user(first, user_id)
            confirmed = await mfa.confirm_oob(
                first,
                deps,
                user=user,
                method=MfaMethod.EMAIL,
                code=email_code,
                session_id=_session_of(deps, account),
                ctx=CONTEXT,
            )
            first_pid = first.get_server_pid()
            removing = asyncio.create_task(remove_totp())
            assert await until_waiting(deps, lambda pids: first_pid in pids, done=removing)
        await removing
        _take(account, confirmed)
        assert await _listed(client, account) == [("email", True, True)]


class TestRemovingThePrimary:
    async def test_removing_the_primary_promotes_the_oldest_enabled_factor(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """TOTP (primary), then SMS enrolment started before email's but confirmed after it:
        removing TOTP makes SMS, the oldest factor left, the primary one."""
        account = await registered(client)
        await with_totp(client, account, clock)
        sms = await client.post(
            f"{MFA}/sms/enroll", json={"phone_number": PHONE}, headers=account.bearer
        )
        assert sms.status_code == 200, sms.text
        sms_code = await outbox_code(client, PHONE)
        email = await client.post(f"{MFA}/email/enroll", headers=account.bearer)
        assert email.status_code == 200, email.text
        await _confirm_route(client, account, "email", await outbox_code(client, account.email))
        await _confirm_route(client, account, "sms", sms_code)
        assert await _primaries(client, account) == ["totp"]

        removed = await client.delete(f"{MFA}/factors/totp", headers=account.bearer)
        assert removed.status_code == 204, removed.text
        assert await _listed(client, account) == [("sms", True, True), ("email", True, False)]

    async def test_removing_another_factor_keeps_the_primary(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """Removing a factor that is not primary leaves the primary one as it was."""
        account = await registered(client)
        await with_totp(client, account, clock)
        email = await client.post(f"{MFA}/email/enroll", headers=account.bearer)
        assert email.status_code == 200, email.text
        await _confirm_route(client, account, "email", await outbox_code(client, account.email))

        removed = await client.delete(f"{MFA}/factors/email", headers=account.bearer)
        assert removed.status_code == 204, removed.text
        assert await _listed(client, account) == [("totp", True, True)]


class TestConfirmingAgain:
    async def test_a_second_passkey_keeps_the_biometric_factor_primary(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Registering a second passkey confirms the enabled biometric factor again; it stays
        the primary factor (it must not count itself as another primary)."""
        account = await registered(client)
        origin = deps.settings.auth_webauthn_origins
        for authenticator in (SoftAuthenticator("localhost", origin) for _ in range(2)):
            options = await client.post(f"{MFA}/webauthn/register/options", headers=account.bearer)
            assert options.status_code == 200, options.text
            response = await client.post(
                f"{MFA}/webauthn/register/verify",
                json={"credential": authenticator.register(options.json())},
                headers=account.bearer,
            )
            assert response.status_code == 200, response.text
            account.access_token = response.json()["access_token"]
            assert await _listed(client, account) == [("biometric", True, True)]


_INSERT_FACTOR = (
    "INSERT INTO user_mfa (user_id, method, is_enabled, is_primary, created_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)


async def _raw_user(conn: asyncpg.Connection) -> uuid.UUID:
    user_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"raw-{uuid.uuid4().hex[:12]}@example.com",
    )
    return user_id


class TestTheDatabaseHoldsIt:
    async def test_a_second_enabled_primary_is_refused(self, conn: asyncpg.Connection) -> None:
        """A second enabled primary factor written with raw SQL, past the service and its
        lock, is refused by PostgreSQL; an enabled factor that is not primary is not."""
        user_id = await _raw_user(conn)
        now = datetime.now(UTC)
        await conn.execute(_INSERT_FACTOR, user_id, "totp", True, True, now)
        await conn.execute(_INSERT_FACTOR, user_id, "email", True, False, now)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():  # a savepoint: the refusal leaves the test's rows
                await conn.execute(_INSERT_FACTOR, user_id, "sms", True, True, now)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "UPDATE user_mfa SET is_primary = true WHERE user_id = $1 AND method = 'email'",
                user_id,
            )

    async def test_a_pending_factor_is_never_primary(self, conn: asyncpg.Connection) -> None:
        """A factor not yet confirmed marked primary with raw SQL is refused by PostgreSQL."""
        user_id = await _raw_user(conn)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(_INSERT_FACTOR, user_id, "sms", False, True, datetime.now(UTC))

    async def test_the_migration_repairs_existing_factors(self, conn: asyncpg.Connection) -> None:
        """Rows written before the guarantee (two primaries, none, a pending primary) are
        repaired by the migration: the oldest enabled primary stays, a user without one gets
        the oldest enabled factor, and a pending factor is primary no more. Played in the
        test's transaction with the index and CHECK dropped, then rolled back."""
        await conn.execute(f"DROP INDEX {ONE_PRIMARY_INDEX}")
        await conn.execute(f"ALTER TABLE user_mfa DROP CONSTRAINT {PRIMARY_IS_ENABLED_CHECK}")
        start = datetime.now(UTC) - timedelta(days=1)
        rows = {
            # user: [(method, is_enabled, is_primary, minutes after start)]
            "two_primaries": [
                ("sms", True, True, 2),
                ("totp", True, True, 1),
                ("email", True, False, 0),
            ],
            "no_primary": [
                ("email", True, False, 3),
                ("sms", True, False, 1),
                ("totp", False, False, 0),
            ],
            "pending_primary": [("totp", False, True, 0), ("sms", True, False, 1)],
            "only_pending": [("email", False, True, 0)],
        }
        user_ids = {name: await _raw_user(conn) for name in rows}
        for name, factors in rows.items():
            for method, is_enabled, is_primary, minutes in factors:
                at = start + timedelta(minutes=minutes)
                await conn.execute(
                    _INSERT_FACTOR, user_ids[name], method, is_enabled, is_primary, at
                )

        await conn.execute(REPAIR_MIGRATION.read_text())

        primaries = {
            name: [
                row["method"]
                for row in await conn.fetch(
                    "SELECT method FROM user_mfa WHERE user_id = $1 AND is_primary", user_id
                )
            ]
            for name, user_id in user_ids.items()
        }
        assert primaries == {
            "two_primaries": ["totp"],
            "no_primary": ["sms"],
            "pending_primary": ["sms"],
            "only_pending": [],
        }
