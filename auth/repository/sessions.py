"""user_sessions: the PostgreSQL mirror of the Redis sessions."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def insert_session(
    conn: asyncpg.Connection,
    *,
    session_uuid: uuid.UUID,
    user_id: uuid.UUID,
    token_digest: str,
    ip: str | None,
    user_agent: str | None,
    expires_at: datetime,
    created_at: datetime,
) -> None:
    """Mirror a new session."""
    await conn.execute(
        "INSERT INTO user_sessions (id, user_id, session_token, ip_address, user_agent,"
        " is_active, expires_at, created_at) VALUES ($1, $2, $3, $4::inet, $5, true, $6, $7)",
        session_uuid,
        user_id,
        token_digest,
        ip,
        user_agent,
        expires_at,
        created_at,
    )


async def extend_session(
    conn: asyncpg.Connection, session_uuid: uuid.UUID, expires_at: datetime
) -> None:
    """Record the new idle expiry of a session."""
    await conn.execute(
        "UPDATE user_sessions SET expires_at = $2 WHERE id = $1 AND is_active",
        session_uuid,
        expires_at,
    )


async def end_session(conn: asyncpg.Connection, session_uuid: uuid.UUID) -> None:
    """Mark a session ended."""
    await conn.execute("UPDATE user_sessions SET is_active = false WHERE id = $1", session_uuid)
