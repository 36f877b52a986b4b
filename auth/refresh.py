"""Refresh tokens: opaque 256-bit values, rotated on every use, grouped in families (RFC 9700).

* A login (or an OAuth code exchange) starts a family bound to its session, with an absolute
  lifetime (`auth_refresh_family_lifetime_s`) that no amount of refreshing extends; each token
  also dies after the session's idle time.
* Only SHA-256 hashes are stored. Presenting a token locks its family row, so refreshes of one
  family are serialised by PostgreSQL, and mints exactly one child (the unique index on
  `parent_id` makes a second child impossible).
* Presenting a token that was already used revokes the whole family (reuse detection): the
  child and every later descendant die with it. The one exception is a retry of the immediate
  parent within `REFRESH_GRACE_S` whose child is still unused: two concurrent refreshes, or a
  client that lost the first answer, receive the *same* child, never a new branch. For that the
  child is kept sealed (envelope encryption) on the parent until its own rotation erases it.
* Logout, session revocation, password change and reset revoke families.

`rotate` returns an `Outcome` because a detected reuse must commit its revocation before the
refusal is raised; a reuse is a `Reused` value, so that the caller also ends the session.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from auth.audit import record_event
from auth.constants import REFRESH_GRACE_S, REFRESH_TOKEN_BYTES
from auth.errors import InvalidRefreshTokenError
from auth.models import AuthEvent, Outcome, RevokeReason
from auth.otp import token_digest
from auth.repository import refresh as repository
from kit.crypto import EnvelopeCipher

REFRESH_TOKEN_LENGTH_MAX = 128


@dataclass(frozen=True, slots=True)
class FamilyGrant:
    """What a family was granted at login; every access token it mints carries it."""

    family_id: uuid.UUID
    user_id: uuid.UUID
    session_id: str
    client_id: str | None
    scope: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str
    auth_time: datetime


@dataclass(frozen=True, slots=True)
class Rotated:
    """A successful refresh: the child token and the family it belongs to."""

    refresh_token: str
    grant: FamilyGrant
    is_retry: bool = False


@dataclass(frozen=True, slots=True)
class Reused:
    """A used token presented again: its family is revoked, and the session it served must end
    with it (the caller owns sessions), or the other holder's access token would outlive it."""

    grant: FamilyGrant


def _new_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def _replacement_context(token_id: uuid.UUID) -> str:
    return f"auth_refresh_tokens.replacement_sealed:{token_id}"


async def start_family(
    conn: asyncpg.Connection,
    *,
    grant_user: uuid.UUID,
    session_id: str,
    client_id: str | None,
    scope: tuple[str, ...],
    amr: tuple[str, ...],
    acr: str,
    auth_time: datetime,
    now: datetime,
    lifetime_s: int,
    idle_s: int,
) -> tuple[str, uuid.UUID]:
    """Start a family; its first refresh token and the family's id."""
    expires_at = now + timedelta(seconds=lifetime_s)
    family_id = await repository.insert_family(
        conn,
        user_id=grant_user,
        session_id=session_id,
        client_id=client_id,
        scope=" ".join(scope),
        amr=list(amr),
        acr=acr,
        auth_time=auth_time,
        created_at=now,
        expires_at=expires_at,
    )
    token = _new_token()
    await repository.insert_token(
        conn,
        family_id=family_id,
        user_id=grant_user,
        token_hash=token_digest(token),
        parent_id=None,
        created_at=now,
        expires_at=min(now + timedelta(seconds=idle_s), expires_at),
    )
    return token, family_id


def _grant(row: asyncpg.Record) -> FamilyGrant:
    return FamilyGrant(
        family_id=row["family_id"],
        user_id=row["user_id"],
        session_id=row["session_id"],
        client_id=row["client_id"],
        scope=tuple(row["scope"].split()),
        amr=tuple(row["amr"]),
        acr=row["acr"],
        auth_time=row["auth_time"],
    )


async def rotate(  # noqa: PLR0911 - one early return per way a token can be refused
    conn: asyncpg.Connection,
    *,
    token: str,
    cipher: EnvelopeCipher,
    now: datetime,
    idle_s: int,
    client_id: str | None = None,
) -> Outcome[Rotated | Reused]:
    """Exchange a refresh token for its child (see the module docstring); `Reused` when the
    token was used before and its family has just been revoked."""
    invalid: Outcome[Rotated | Reused] = Outcome(error=InvalidRefreshTokenError())
    if not token or len(token) > REFRESH_TOKEN_LENGTH_MAX:
        return invalid
    row = await repository.lock_token(conn, token_digest(token))
    if row is None or row["revoked_at"] is not None or row["family_expires_at"] <= now:
        return invalid
    if row["client_id"] != client_id:
        return invalid  # a token only works for the client it was issued to
    if row["used_at"] is not None:
        retried = await _grace_retry(conn, row, cipher=cipher, now=now)
        if retried is not None:
            return Outcome(value=retried)
        await repository.revoke_family(
            conn, row["family_id"], reason=RevokeReason.REUSE_DETECTED, now=now
        )
        await record_event(
            conn,
            AuthEvent.REFRESH_REUSE_DETECTED,
            user_id=row["user_id"],
            family_id=str(row["family_id"]),
            session_id=row["session_id"],
        )
        return Outcome(value=Reused(grant=_grant(row)))
    if row["expires_at"] <= now:
        return invalid
    child = _new_token()
    await repository.insert_token(
        conn,
        family_id=row["family_id"],
        user_id=row["user_id"],
        token_hash=token_digest(child),
        parent_id=row["id"],
        created_at=now,
        expires_at=min(now + timedelta(seconds=idle_s), row["family_expires_at"]),
    )
    sealed = cipher.encrypt_text(child, context=_replacement_context(row["id"]))
    await repository.mark_used(conn, row["id"], now=now, replacement_sealed=sealed)
    await repository.forget_replacement(conn, row["parent_id"])
    await record_event(
        conn,
        AuthEvent.REFRESHED,
        user_id=row["user_id"],
        family_id=str(row["family_id"]),
        session_id=row["session_id"],
    )
    return Outcome(value=Rotated(refresh_token=child, grant=_grant(row)))


async def _grace_retry(
    conn: asyncpg.Connection, row: asyncpg.Record, *, cipher: EnvelopeCipher, now: datetime
) -> Rotated | None:
    if row["replacement_sealed"] is None:
        return None
    if now - row["used_at"] > timedelta(seconds=REFRESH_GRACE_S):
        return None
    child = await repository.child_of(conn, row["id"])
    if child is None or child["used_at"] is not None:
        return None
    token = cipher.decrypt_text(row["replacement_sealed"], context=_replacement_context(row["id"]))
    return Rotated(refresh_token=token, grant=_grant(row), is_retry=True)


async def revoke_family_by_id(
    conn: asyncpg.Connection, family_id: uuid.UUID, *, reason: RevokeReason, now: datetime
) -> None:
    """Revoke one family."""
    await repository.revoke_family(conn, family_id, reason=reason, now=now)


async def describe_any(conn: asyncpg.Connection, *, token: str) -> asyncpg.Record | None:
    """The token's row whatever its state (revocation looks up used tokens too)."""
    if not token or len(token) > REFRESH_TOKEN_LENGTH_MAX:
        return None
    return await repository.find_token(conn, token_digest(token))


async def describe(conn: asyncpg.Connection, *, token: str, now: datetime) -> asyncpg.Record | None:
    """The token's row when it is live (unused, unexpired, unrevoked), for introspection."""
    if not token or len(token) > REFRESH_TOKEN_LENGTH_MAX:
        return None
    row = await repository.find_token(conn, token_digest(token))
    if row is None or row["revoked_at"] is not None or row["used_at"] is not None:
        return None
    if row["expires_at"] <= now or row["family_expires_at"] <= now:
        return None
    return row


async def revoke_session(
    conn: asyncpg.Connection, session_id: str, *, reason: RevokeReason, now: datetime
) -> None:
    """Revoke every family of a session."""
    await repository.revoke_session_families(conn, session_id, reason=reason, now=now)


async def revoke_user(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    reason: RevokeReason,
    now: datetime,
    except_session: str | None = None,
) -> int:
    """Revoke every family of the user but one session's; how many."""
    revoked = await repository.revoke_user_families(
        conn, user_id, reason=reason, now=now, except_session=except_session
    )
    return len(revoked)
