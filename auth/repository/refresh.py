"""auth_refresh_families and auth_refresh_tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def insert_family(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    session_id: str,
    client_id: str | None,
    scope: str,
    amr: list[str],
    acr: str,
    auth_time: datetime,
    created_at: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """A new family; its id."""
    family_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO auth_refresh_families (user_id, session_id, client_id, scope, amr, acr,"
        " auth_time, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " RETURNING id",
        user_id,
        session_id,
        client_id,
        scope,
        amr,
        acr,
        auth_time,
        created_at,
        expires_at,
    )
    return family_id


async def insert_token(
    conn: asyncpg.Connection,
    *,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    token_hash: bytes,
    parent_id: uuid.UUID | None,
    created_at: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    """A new token of a family; its id."""
    token_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO auth_refresh_tokens (family_id, user_id, token_hash, parent_id, created_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        family_id,
        user_id,
        token_hash,
        parent_id,
        created_at,
        expires_at,
    )
    return token_id


async def lock_token(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """A token with its family, both locked: one refresh of a family at a time."""
    return await conn.fetchrow(
        "SELECT t.id, t.family_id, t.user_id, t.parent_id, t.expires_at, t.used_at,"
        " t.replacement_sealed, f.session_id, f.client_id, f.scope, f.amr, f.acr, f.auth_time,"
        " f.expires_at AS family_expires_at, f.revoked_at"
        " FROM auth_refresh_tokens t JOIN auth_refresh_families f ON f.id = t.family_id"
        " WHERE t.token_hash = $1 FOR UPDATE OF f, t",
        token_hash,
    )


async def find_token(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """A token with its family, unlocked (introspection, revocation)."""
    return await conn.fetchrow(
        "SELECT t.id, t.family_id, t.user_id, t.expires_at, t.used_at, t.created_at,"
        " f.session_id, f.client_id, f.scope, f.expires_at AS family_expires_at, f.revoked_at"
        " FROM auth_refresh_tokens t JOIN auth_refresh_families f ON f.id = t.family_id"
        " WHERE t.token_hash = $1",
        token_hash,
    )


async def child_of(conn: asyncpg.Connection, token_id: uuid.UUID) -> asyncpg.Record | None:
    """The token minted from `token_id`."""
    return await conn.fetchrow(
        "SELECT id, used_at FROM auth_refresh_tokens WHERE parent_id = $1", token_id
    )


async def mark_used(
    conn: asyncpg.Connection, token_id: uuid.UUID, *, now: datetime, replacement_sealed: str
) -> None:
    """The token was rotated; keep its child sealed for the grace period."""
    await conn.execute(
        "UPDATE auth_refresh_tokens SET used_at = $2, replacement_sealed = $3 WHERE id = $1",
        token_id,
        now,
        replacement_sealed,
    )


async def forget_replacement(conn: asyncpg.Connection, token_id: uuid.UUID | None) -> None:
    """Erase a sealed child once the grace period can no longer apply."""
    if token_id is not None:
        await conn.execute(
            "UPDATE auth_refresh_tokens SET replacement_sealed = NULL WHERE id = $1", token_id
        )


async def revoke_family(
    conn: asyncpg.Connection, family_id: uuid.UUID, *, reason: str, now: datetime
) -> None:
    """End a family (every token of it dies) and erase its sealed children."""
    await conn.execute(
        "UPDATE auth_refresh_families SET revoked_at = $2, revoked_reason = $3"
        " WHERE id = $1 AND revoked_at IS NULL",
        family_id,
        now,
        reason,
    )
    await conn.execute(
        "UPDATE auth_refresh_tokens SET replacement_sealed = NULL WHERE family_id = $1", family_id
    )


async def revoke_session_families(
    conn: asyncpg.Connection, session_id: str, *, reason: str, now: datetime
) -> list[uuid.UUID]:
    """End every family of a session; their ids."""
    rows = await conn.fetch(
        "UPDATE auth_refresh_families SET revoked_at = $2, revoked_reason = $3"
        " WHERE session_id = $1 AND revoked_at IS NULL RETURNING id",
        session_id,
        now,
        reason,
    )
    return [row["id"] for row in rows]


async def revoke_user_families(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    reason: str,
    now: datetime,
    except_session: str | None,
) -> list[uuid.UUID]:
    """End every live family of the user but the given session's; their ids."""
    rows = await conn.fetch(
        "UPDATE auth_refresh_families SET revoked_at = $2, revoked_reason = $3"
        " WHERE user_id = $1 AND revoked_at IS NULL"
        " AND ($4::text IS NULL OR session_id <> $4) RETURNING id",
        user_id,
        now,
        reason,
        except_session,
    )
    return [row["id"] for row in rows]
