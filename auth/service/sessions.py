"""Minting tokens for an authenticated user, refreshing them, and ending sessions."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg

from auth import refresh as refresh_tokens
from auth.audit import record_event
from auth.dependencies import AuthDependencies
from auth.errors import InvalidRefreshTokenError, SessionNotFoundError
from auth.models import AuthEvent, AuthGrant, IssuedTokens, Outcome, RequestContext, RevokeReason
from auth.tokens import TokenSubject
from users import service as users
from users.errors import UserNotFoundError
from users.models import User


def subject_of(user: User) -> TokenSubject:
    """The token subject of a user row."""
    return TokenSubject(
        user_id=user.id,
        role=user.role.value,
        tier=user.tier.value,
        kyc_status=user.kyc_status.value,
    )


async def issue_tokens(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    grant: AuthGrant,
    ctx: RequestContext,
) -> IssuedTokens:
    """A new session, a new refresh family and an access token for it."""
    settings = deps.settings
    session = await deps.sessions.create(
        conn,
        user_id=user.id,
        ip=ctx.ip,
        user_agent=ctx.user_agent,
        amr=grant.amr,
        auth_time=grant.auth_time,
        client_id=grant.client_id,
    )
    refresh_token, family_id = await refresh_tokens.start_family(
        conn,
        grant_user=user.id,
        session_id=session.session_id,
        client_id=grant.client_id,
        scope=grant.scope,
        amr=grant.amr,
        acr=grant.acr,
        auth_time=grant.auth_time,
        now=deps.clock.now(),
        lifetime_s=settings.auth_refresh_family_lifetime_s,
        idle_s=settings.auth_session_idle_s,
    )
    access = deps.signer.sign_access(
        subject_of(user),
        session_id=session.session_id,
        scope=grant.scope,
        amr=grant.amr,
        acr=grant.acr,
        auth_time=grant.auth_time,
        client_id=grant.client_id,
    )
    return IssuedTokens(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=deps.signer.access_ttl_s,
        scope=grant.scope,
        session_id=session.session_id,
        family_id=family_id,
    )


async def refresh(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    token: str,
    client_id: str | None = None,
    narrow: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None,
) -> Outcome[IssuedTokens]:
    """Rotate a refresh token and mint a fresh access token for its session.

    `narrow` maps the family's granted scope to the scope of the new access token (an OAuth
    refresh asking for less, RFC 6749 section 6); it runs only for a token that rotated, and
    may raise to refuse, which rolls the rotation back with the caller's transaction. The
    refresh token keeps the whole grant."""
    now = deps.clock.now()
    rotated = await refresh_tokens.rotate(
        conn,
        token=token,
        cipher=deps.cipher,
        now=now,
        idle_s=deps.settings.auth_session_idle_s,
        client_id=client_id,
    )
    if rotated.error is not None or rotated.value is None:
        return Outcome(error=rotated.error or InvalidRefreshTokenError())
    if isinstance(rotated.value, refresh_tokens.Reused):
        await _end_reused_session(conn, deps, grant=rotated.value.grant)
        return Outcome(error=InvalidRefreshTokenError())
    grant = rotated.value.grant
    session = await deps.sessions.touch(conn, grant.session_id)
    found = await _live_user(conn, grant.user_id)
    if session is None or found is None:
        await refresh_tokens.revoke_session(
            conn, grant.session_id, reason=RevokeReason.SESSION_REVOKED, now=now
        )
        return Outcome(error=InvalidRefreshTokenError())
    scope = grant.scope if narrow is None else narrow(grant.scope)
    access = deps.signer.sign_access(
        subject_of(found),
        session_id=grant.session_id,
        scope=scope,
        amr=grant.amr,
        acr=grant.acr,
        auth_time=grant.auth_time,
        client_id=grant.client_id,
    )
    return Outcome(
        value=IssuedTokens(
            access_token=access,
            refresh_token=rotated.value.refresh_token,
            expires_in=deps.signer.access_ttl_s,
            scope=scope,
            session_id=grant.session_id,
        )
    )


async def _end_reused_session(
    conn: asyncpg.Connection, deps: AuthDependencies, *, grant: refresh_tokens.FamilyGrant
) -> None:
    # Either holder of a replayed token may be the thief: the family is already revoked, and
    # the session ends too, so the access token minted from the stolen token stops working on
    # the routes that check the session (it could otherwise enrol a factor and open a new one).
    if await deps.sessions.revoke(conn, grant.user_id, grant.session_id):
        await refresh_tokens.revoke_session(
            conn, grant.session_id, reason=RevokeReason.REUSE_DETECTED, now=deps.clock.now()
        )
        await record_event(
            conn,
            AuthEvent.SESSION_REVOKED,
            user_id=grant.user_id,
            session_id=grant.session_id,
            reason=RevokeReason.REUSE_DETECTED.value,
        )


async def _live_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    try:
        user = await users.get_user(conn, user_id)
    except UserNotFoundError:
        return None
    return user if user.is_active else None


async def end_session(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    session_id: str,
    reason: RevokeReason,
) -> None:
    """End one of the user's sessions and its refresh families."""
    is_ended = await deps.sessions.revoke(conn, user_id, session_id)
    if not is_ended:
        raise SessionNotFoundError()
    await refresh_tokens.revoke_session(conn, session_id, reason=reason, now=deps.clock.now())
    event = AuthEvent.LOGOUT if reason is RevokeReason.LOGOUT else AuthEvent.SESSION_REVOKED
    await record_event(conn, event, user_id=user_id, session_id=session_id, reason=reason.value)


async def end_other_sessions(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    keep_session: str | None,
    reason: RevokeReason,
) -> int:
    """End every session and family of the user but `keep_session`; how many sessions."""
    ended = await deps.sessions.revoke_all(conn, user_id, except_session=keep_session)
    await refresh_tokens.revoke_user(
        conn, user_id, reason=reason, now=deps.clock.now(), except_session=keep_session
    )
    if ended:
        await record_event(
            conn,
            AuthEvent.SESSION_REVOKED,
            user_id=user_id,
            sessions=len(ended),
            reason=reason.value,
        )
    return len(ended)
