"""An account changed while a request about it is in flight: the change is never undone, and a
request checked against the account as it was gets nothing the account as it is would refuse.

Each scenario is a race that a loaded machine can produce between two requests: an
administrator's lock between a login's password check and its session, a password reset while
a password change is being checked, two regenerations of the backup codes, two requests for a
one-time code.

Method: the interleaving is played explicitly, never left to timing. A login is split where
the endpoint splits it (`check_password` outside any transaction, `login` inside one), with the
other change committed between the halves. Where a request must be caught in the middle of its
transaction, the test holds a PostgreSQL lock (a row lock, or the other request's own
uncommitted writes) until the request waits on it, commits the competing change, and then lets
the request go on. Real PostgreSQL, Redis and argon2 throughout.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from auth.constants import BACKUP_CODE_COUNT
from auth.dependencies import AuthDependencies
from auth.errors import AccountDisabledError, InvalidCredentialsError
from auth.models import CodePurpose, Outcome, RequestContext
from auth.otp import totp
from auth.repository import mfa as mfa_repository
from auth.service import admin, mfa, recovery
from auth.service import login as login_service
from auth.service.recovery import Done
from kit.clock import FrozenClock
from tests.auth.conftest import (
    NEW_PASSWORD,
    PASSWORD,
    mfa_token,
    outbox_code,
    registered,
    start_totp,
    until_blocked,
    until_waiting,
    verify_second_step,
    with_totp,
)
from users import service as users

pytestmark = pytest.mark.db

MFA = "/api/v1/auth/mfa"
CHANGED_PASSWORD = "Quiet-Harbour-Compass-73"
CONTEXT = RequestContext(ip="203.0.113.9", user_agent="laptop")


async def _user_id(deps: AuthDependencies, email: str) -> uuid.UUID:
    async with deps.db.connection() as conn:
        user = await users.find_by_email(conn, email)
    assert user is not None
    return user.id


async def _live_sessions(deps: AuthDependencies, user_id: uuid.UUID) -> int:
    """The user's live sessions (Redis is the authority on which are alive)."""
    return len(await deps.sessions.list_for(user_id))


class TestLockDuringLogin:
    @pytest.mark.parametrize("factor", ["none", "totp_challenge", "totp_at_once"])
    async def test_a_password_checked_before_a_lock_signs_in_no_more(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock, factor: str
    ) -> None:
        """A login whose password was accepted just before an administrator locked the account
        gets neither a session nor a challenge: the account is disabled, and stays sessionless."""
        account = await registered(client)
        secret = None if factor == "none" else await with_totp(client, account, clock)
        check = await login_service.check_password(deps, email=account.email, password=PASSWORD)
        assert check.is_right
        user_id = await _user_id(deps, account.email)
        async with deps.db.transaction() as conn:
            await admin.lock_account(conn, deps, user_id=user_id, admin_id=uuid.uuid4())
        code = totp(secret, clock.now()) if secret and factor == "totp_at_once" else None
        async with deps.db.transaction() as conn:
            outcome = await login_service.login(
                conn, deps, check=check, password=PASSWORD, mfa_code=code, ctx=CONTEXT
            )
        assert isinstance(outcome.error, AccountDisabledError), outcome
        assert await _live_sessions(deps, user_id) == 0


class TestLockDuringFactorConfirmation:
    async def test_a_lock_during_a_totp_confirmation_leaves_no_session(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An administrator's lock arriving while a TOTP confirmation is opening its upgraded
        session waits for it and then ends that session: the account is left with none. The
        confirmation is held just before it touches its sessions (a share lock on
        user_sessions) until the lock has come to wait on the confirmation itself."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        secret = await start_totp(client, account)

        async def lock() -> None:
            async with deps.db.transaction() as conn:
                await admin.lock_account(conn, deps, user_id=user_id, admin_id=uuid.uuid4())

        async with deps.db.transaction() as holder:
            await holder.execute("LOCK TABLE user_sessions IN SHARE MODE")
            holder_pid = holder.get_server_pid()
            confirming = asyncio.create_task(
                client.post(
                    f"{MFA}/totp/confirm",
                    json={"code": totp(secret, clock.now())},
                    headers=account.bearer,
                )
            )
            assert await until_blocked(deps, holder_pid)
            locking = asyncio.create_task(lock())
            # The lock waits on the confirmation (its account row), not on this holder.
            assert await until_waiting(
                deps, lambda blockers: holder_pid not in blockers, done=locking
            )
        confirmed, _ = await asyncio.gather(confirming, locking)
        assert confirmed.status_code == 200, confirmed.text
        assert await _live_sessions(deps, user_id) == 0
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": confirmed.json()["refresh_token"]}
        )
        assert refreshed.status_code == 401

    async def test_a_confirmation_after_a_lock_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A TOTP confirmation whose session was checked before an administrator's lock
        committed is refused (403 AUTH_ACCOUNT_DISABLED) and enables nothing."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        secret = await start_totp(client, account)
        async with deps.db.transaction() as conn:
            user = await users.get_user(conn, user_id)
        async with deps.db.transaction() as conn:
            await admin.lock_account(conn, deps, user_id=user_id, admin_id=uuid.uuid4())
        async with deps.db.transaction() as conn:
            outcome = await mfa.confirm_totp(
                conn,
                deps,
                user=user,  # as the request read it, before the lock
                code=totp(secret, clock.now()),
                session_id="ses_" + str(uuid.uuid4()),
                ctx=CONTEXT,
            )
        assert isinstance(outcome.error, AccountDisabledError), outcome
        async with deps.db.connection() as conn:
            assert await mfa.enabled_methods(conn, user_id) == ()
        assert await _live_sessions(deps, user_id) == 0


class TestResetDuringChange:
    async def test_a_reset_committed_while_a_change_is_checked_stands(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A password change that checked the current password just before a reset committed
        does not overwrite the reset's password: it is refused, and the reset's password (not
        the change's, not the old one) signs in."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        (session,) = await deps.sessions.list_for(user_id)
        requested = await client.post(
            "/api/v1/auth/password/reset/request", json={"email": account.email}
        )
        assert requested.status_code == 202
        code = await outbox_code(client, account.email)

        async def change() -> Outcome[Done]:
            async with deps.db.transaction() as conn:
                return await recovery.change_password(
                    conn,
                    deps,
                    user_id=user_id,
                    session_id=session.session_id,
                    current_password=PASSWORD,
                    new_password=CHANGED_PASSWORD,
                )

        async with deps.db.transaction() as reset:
            confirmed = await recovery.confirm_reset(
                reset, deps, email=account.email, code=code, new_password=NEW_PASSWORD
            )
            assert confirmed.error is None
            # The change reads the committed (old) hash, checks the old password against it,
            # and then waits on the reset's row lock to write its own.
            changing = asyncio.create_task(change())
            assert await until_blocked(deps, reset.get_server_pid())
        changed = await changing
        assert isinstance(changed.error, InvalidCredentialsError), changed
        for password, status in ((NEW_PASSWORD, 200), (CHANGED_PASSWORD, 401), (PASSWORD, 401)):
            response = await client.post(
                "/api/v1/auth/login", json={"email": account.email, "password": password}
            )
            assert response.status_code == status, (password, response.text)


class TestRegeneratedTwice:
    async def test_two_regenerations_of_backup_codes_leave_one_set(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Two regenerations at once leave BACKUP_CODE_COUNT codes, the set of the one that
        committed last: the other answer's codes, shown once, never work."""
        account = await registered(client)
        await with_totp(client, account, clock)
        user_id = await _user_id(deps, account.email)
        assert (await client.post(f"{MFA}/backup-codes", headers=account.bearer)).status_code == 200

        async def regenerate() -> list[str]:
            async with deps.db.transaction() as conn:
                return await mfa.regenerate_backup_codes(conn, deps, user_id=user_id)

        async with deps.db.transaction() as first:
            earlier = await mfa.regenerate_backup_codes(first, deps, user_id=user_id)
            regenerating = asyncio.create_task(regenerate())
            assert await until_blocked(deps, first.get_server_pid())
        later = await regenerating
        async with deps.db.connection() as conn:
            assert await mfa_repository.count_backup_codes(conn, user_id) == BACKUP_CODE_COUNT
        refused = await verify_second_step(
            client, await mfa_token(client, account), "backup_code", earlier[0]
        )
        assert refused.status_code == 401, refused.text
        finished = await verify_second_step(
            client, await mfa_token(client, account), "backup_code", later[0]
        )
        assert finished.status_code == 200, finished.text

    async def test_two_reset_requests_leave_one_open_code(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Two password reset requests at once leave one open code, the last one's: once it
        has reset the password, the other request's code resets nothing."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        reset = "/api/v1/auth/password/reset/request"
        assert (await client.post(reset, json={"email": account.email})).status_code == 202

        async def request() -> Outcome[Done]:
            async with deps.db.transaction() as conn:
                return await recovery.request_reset(conn, deps, email=account.email)

        async with deps.db.transaction() as first:
            earlier = await recovery.request_reset(first, deps, email=account.email)
            requesting = asyncio.create_task(request())
            assert await until_blocked(deps, first.get_server_pid())
        later = await requesting
        async with deps.db.connection() as conn:
            open_codes = await conn.fetchval(
                "SELECT count(*) FROM auth_codes WHERE user_id = $1 AND purpose = $2"
                " AND consumed_at IS NULL",
                user_id,
                CodePurpose.RESET_PASSWORD.value,
            )
        assert open_codes == 1
        confirm = "/api/v1/auth/password/reset/confirm"
        for outcome, status in ((later, 200), (earlier, 422)):
            body = {"email": account.email, "code": _code_in(outcome), "new_password": NEW_PASSWORD}
            response = await client.post(confirm, json=body)
            assert response.status_code == status, response.text

    async def test_the_database_refuses_a_second_open_code(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A second open code of one purpose written with raw SQL, past the service and its
        lock, is refused by PostgreSQL; a code of another purpose, or a consumed one, is not."""
        account = await registered(client)
        user_id = await _user_id(deps, account.email)
        reset = "/api/v1/auth/password/reset/request"
        assert (await client.post(reset, json={"email": account.email})).status_code == 202
        insert = (
            "INSERT INTO auth_codes (user_id, purpose, code_hash, attempts_max, expires_at,"
            " consumed_at) VALUES ($1, $2, $3, 5, now() + interval '5 minutes', $4)"
        )
        async with deps.db.connection() as conn:
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, user_id, "reset_password", bytes(32), None)
            await conn.execute(insert, user_id, "enroll_email", bytes(32), None)
            await conn.execute(insert, user_id, "reset_password", bytes(32), datetime.now(UTC))


def _code_in(outcome: Outcome[Done]) -> str:
    """The 6-digit code of the one message an outcome sends."""
    (message,) = outcome.messages
    found = re.search(r"\b(\d{6})\b", message.body)
    assert found is not None
    return found.group(1)
