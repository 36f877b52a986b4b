"""What an administrator may do to an account: list, lock, unlock, end every session.

Locking disables sign-in (`users.is_active = false`, with `locked_at`), which the login and the
refresh paths already refuse, and ends every session and refresh family at once; the lock
stands until an unlock, even if the address is proven meanwhile. Unlocking lifts it, enables
sign-in again (for a verified address) and clears the failed-login lockout in the account's
shard.
Every action is audited with the administrator as the actor.
"""

from __future__ import annotations

import uuid

import asyncpg

from auth.audit import record_event
from auth.dependencies import AuthDependencies
from auth.errors import SelfLockError
from auth.lockout import account_key
from auth.models import AuthEvent, RevokeReason
from auth.service.sessions import end_other_sessions
from users import service as users
from users.models import User


async def list_accounts(
    conn: asyncpg.Connection, *, limit: int, offset: int, email_prefix: str | None
) -> list[User]:
    """A page of accounts, newest first."""
    return await users.list_users(conn, limit=limit, offset=offset, email_prefix=email_prefix)


async def lock_account(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, admin_id: uuid.UUID
) -> int:
    """Disable sign-in and end every session; returns how many sessions ended.

    Raises:
        SelfLockError: the administrator named their own account (it would end the session
            asking, and with the last administrator, every way back in).
    """
    if user_id == admin_id:
        raise SelfLockError()
    await users.lock(conn, user_id, at=deps.clock.now())
    ended = await end_other_sessions(
        conn, deps, user_id=user_id, keep_session=None, reason=RevokeReason.ADMIN
    )
    await record_event(
        conn, AuthEvent.ACCOUNT_LOCKED, user_id=user_id, admin_id=str(admin_id), sessions=ended
    )
    return ended


async def unlock_account(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, admin_id: uuid.UUID
) -> bool:
    """Lift the lock, enable sign-in again (verified accounts only) and clear the failed-login
    lockout; whether the account can now sign in."""
    user = await users.get_user(conn, user_id)
    # Judged in the UPDATE itself, not on `user`: a verification committed after the read
    # above would otherwise be undone (a verified account left disabled).
    is_active = await users.unlock(conn, user_id)
    await deps.guard.reset_lockout(account_key(user.email))
    await record_event(conn, AuthEvent.ACCOUNT_UNLOCKED, user_id=user_id, admin_id=str(admin_id))
    return is_active


async def end_all_sessions(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID
) -> int:
    """End every session and refresh family of the account.

    The account row is locked first, as a lock's UPDATE does: a login that has opened its
    session but not committed is waited for, and its session is then ended in full (in Redis,
    its mirror row, its refresh family) rather than only in Redis."""
    await users.get_user_for_change(conn, user_id)
    return await end_other_sessions(
        conn, deps, user_id=user_id, keep_session=None, reason=RevokeReason.ADMIN
    )
