"""Password reset and change.

Reset: a request always answers 202 (no enumeration); for an active account a 6-digit code
(10 minutes, single use, 5 guesses) goes to its address. Confirming sets the new password,
revokes every session and refresh family, and does not sign in: the next login still needs
the enrolled second factor, so a reset never bypasses MFA (ASVS V6.4.3).

Change: needs the current password (and, at the edge, a session with a second factor); it
revokes every other session and refresh family, keeping the one that asked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from auth.audit import record_event, record_password_refusal
from auth.dependencies import AuthDependencies
from auth.errors import InvalidCodeError, InvalidCredentialsError
from auth.models import AuthEvent, CodePurpose, OutboundMessage, Outcome, RevokeReason
from auth.service.codes import check_code, issue_code
from auth.service.sessions import end_other_sessions
from users import service as users


@dataclass(frozen=True, slots=True)
class Done:
    """An accepted request with nothing else to say."""

    sessions_ended: int = 0


async def request_reset(
    conn: asyncpg.Connection, deps: AuthDependencies, *, email: str
) -> Outcome[Done]:
    """Send a reset code if the account exists and is active."""
    normalised = users.normalise_email(email)
    user = await users.find_by_email(conn, normalised)
    if user is None or not user.is_active:
        return Outcome(value=Done())
    code = await issue_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=CodePurpose.RESET_PASSWORD,
        destination=normalised,
        now=deps.clock.now(),
    )
    await record_event(
        conn, AuthEvent.PASSWORD_RESET_REQUESTED, user_id=user.id, factor="email_code"
    )
    message = OutboundMessage(
        channel="email",
        recipient=normalised,
        subject="Reset your DwayBank password",
        body=f"Your DwayBank password reset code is {code}. It expires in 10 minutes."
        " If you did not ask for it, ignore this email.",
    )
    return Outcome(value=Done(), messages=[message])


async def confirm_reset(
    conn: asyncpg.Connection, deps: AuthDependencies, *, email: str, code: str, new_password: str
) -> Outcome[Done]:
    """Set a new password with a reset code; every session and refresh family ends."""
    normalised = users.normalise_email(email)
    user = await users.find_by_email(conn, normalised)
    if user is None or not user.is_active:
        return Outcome(error=InvalidCodeError())
    checked = deps.policy.check(new_password, email=normalised)
    result = await check_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=CodePurpose.RESET_PASSWORD,
        code=code,
        now=deps.clock.now(),
    )
    if not result.is_valid:
        return Outcome(error=InvalidCodeError())
    await users.set_password_hash(conn, user.id, await deps.hasher.hash(checked))
    ended = await end_other_sessions(
        conn, deps, user_id=user.id, keep_session=None, reason=RevokeReason.PASSWORD_RESET
    )
    await record_event(
        conn, AuthEvent.PASSWORD_RESET, user_id=user.id, factor="email_code", sessions_ended=ended
    )
    return Outcome(value=Done(sessions_ended=ended))


async def _wrong_current_password(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str
) -> Outcome[Done]:
    await record_password_refusal(conn, user_id, reason=reason)
    return Outcome(error=InvalidCredentialsError("the current password is incorrect"))


async def change_password(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    session_id: str,
    current_password: str,
    new_password: str,
) -> Outcome[Done]:
    """Replace the password; every other session and refresh family ends."""
    user = await users.get_user(conn, user_id)
    if not await deps.hasher.verify(user.password_hash, current_password):
        return await _wrong_current_password(conn, user.id, "password_change_wrong_current")
    checked = deps.policy.check(new_password, email=user.email)
    # Written only over the hash the current password was checked against: a reset (or another
    # change) that committed meanwhile stands, and this change is refused as a wrong password.
    new_hash = await deps.hasher.hash(checked)
    if not await users.replace_password_hash(
        conn, user.id, current_hash=user.password_hash, new_hash=new_hash
    ):
        return await _wrong_current_password(conn, user.id, "password_replaced")
    ended = await end_other_sessions(
        conn, deps, user_id=user.id, keep_session=session_id, reason=RevokeReason.PASSWORD_CHANGED
    )
    await record_event(
        conn, AuthEvent.PASSWORD_CHANGED, user_id=user.id, factor="password", sessions_ended=ended
    )
    return Outcome(value=Done(sessions_ended=ended))
