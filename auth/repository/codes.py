"""auth_codes: one-time codes (email verification, reset, factor enrolment)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def replace_code(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    purpose: str,
    code_hash: bytes,
    destination: str | None,
    attempts_max: int,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """Store a new code, ending any open code of the same purpose (only the newest works).

    Replacements of one user's code of one purpose are serialised until the transaction ends:
    without that, a second request's UPDATE would skip the code the first had just inserted
    (not yet committed when its snapshot was taken), and both new codes would stay open.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('auth_codes:' || $1::uuid || ':' || $2, 0))",
        user_id,
        purpose,
    )
    await conn.execute(
        "UPDATE auth_codes SET consumed_at = $3"
        " WHERE user_id = $1 AND purpose = $2 AND consumed_at IS NULL",
        user_id,
        purpose,
        created_at,
    )
    await conn.execute(
        "INSERT INTO auth_codes (user_id, purpose, code_hash, destination, attempts_max,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        user_id,
        purpose,
        code_hash,
        destination,
        attempts_max,
        created_at,
        expires_at,
    )


async def lock_open_code(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, purpose: str, now: datetime
) -> asyncpg.Record | None:
    """The open, unexpired code of this purpose, locked for this transaction."""
    return await conn.fetchrow(
        "SELECT id, code_hash, destination, attempts, attempts_max FROM auth_codes"
        " WHERE user_id = $1 AND purpose = $2 AND consumed_at IS NULL AND expires_at > $3"
        " ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
        user_id,
        purpose,
        now,
    )


async def count_attempt(conn: asyncpg.Connection, code_id: uuid.UUID, *, now: datetime) -> None:
    """One more wrong guess; the last allowed guess also ends the code."""
    await conn.execute(
        "UPDATE auth_codes SET attempts = attempts + 1,"
        " consumed_at = CASE WHEN attempts + 1 >= attempts_max THEN $2::timestamptz END"
        " WHERE id = $1",
        code_id,
        now,
    )


async def consume(conn: asyncpg.Connection, code_id: uuid.UUID, *, now: datetime) -> None:
    """Use the code up."""
    await conn.execute("UPDATE auth_codes SET consumed_at = $2 WHERE id = $1", code_id, now)
