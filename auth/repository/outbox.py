"""auth_outbox: messages recorded by the local provider."""

from __future__ import annotations

import asyncpg


async def insert_message(
    conn: asyncpg.Connection, *, channel: str, recipient: str, subject: str | None, body: str
) -> None:
    """Record one message."""
    await conn.execute(
        "INSERT INTO auth_outbox (channel, recipient, subject, body) VALUES ($1, $2, $3, $4)",
        channel,
        recipient,
        subject,
        body,
    )


async def list_messages(
    conn: asyncpg.Connection, *, recipient: str | None, limit: int
) -> list[asyncpg.Record]:
    """The newest messages, to one recipient or to anyone."""
    return list(
        await conn.fetch(
            "SELECT id, channel, recipient, subject, body, created_at FROM auth_outbox"
            " WHERE $1::text IS NULL OR recipient = $1 ORDER BY created_at DESC, id LIMIT $2",
            recipient,
            limit,
        )
    )
