"""auth_signing_keys and auth_secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def lock_keys(conn: asyncpg.Connection) -> None:
    """Serialise rotations (and first creation) across processes until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dwaybank.auth_signing_keys'))")


async def list_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key row, newest first."""
    return list(
        await conn.fetch(
            "SELECT kid, status, public_jwk, private_key, created_at, activated_at, retired_at,"
            " published_until FROM auth_signing_keys ORDER BY created_at DESC"
        )
    )


async def published_keys(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    """Next, active, and retired keys still inside their publication period."""
    return list(
        await conn.fetch(
            "SELECT kid, status, public_jwk, published_until FROM auth_signing_keys"
            " WHERE status <> 'retired' OR published_until > $1 ORDER BY created_at",
            now,
        )
    )


async def active_key(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The active key with its sealed private half."""
    return await conn.fetchrow(
        "SELECT kid, private_key FROM auth_signing_keys WHERE status = 'active'"
    )


async def insert_key(
    conn: asyncpg.Connection,
    *,
    kid: str,
    status: str,
    public_jwk: dict[str, Any],
    private_key: str,
    created_at: datetime,
) -> None:
    """Store a new key as next or active."""
    await conn.execute(
        "INSERT INTO auth_signing_keys (kid, status, public_jwk, private_key, created_at,"
        " activated_at) VALUES ($1, $2::varchar, $3, $4, $5::timestamptz,"
        " CASE WHEN $2::varchar = 'active' THEN $5::timestamptz END)",
        kid,
        status,
        public_jwk,
        private_key,
        created_at,
    )


async def retire_active(
    conn: asyncpg.Connection, *, at: datetime, published_until: datetime
) -> None:
    """Retire the active key: its private half is erased, its public half stays published."""
    await conn.execute(
        "UPDATE auth_signing_keys SET status = 'retired', private_key = NULL, retired_at = $1,"
        " published_until = $2 WHERE status = 'active'",
        at,
        published_until,
    )


async def activate_next(conn: asyncpg.Connection, *, at: datetime) -> str | None:
    """Promote the next key to active; its kid, or None when there is none."""
    kid: str | None = await conn.fetchval(
        "UPDATE auth_signing_keys SET status = 'active', activated_at = $1"
        " WHERE status = 'next' RETURNING kid",
        at,
    )
    return kid


async def find_secret(conn: asyncpg.Connection, name: str) -> str | None:
    """A sealed named secret."""
    sealed: str | None = await conn.fetchval(
        "SELECT sealed FROM auth_secrets WHERE name = $1", name
    )
    return sealed


async def insert_secret(conn: asyncpg.Connection, name: str, sealed: str) -> None:
    """Store a sealed secret unless one of that name exists (first writer wins)."""
    await conn.execute(
        "INSERT INTO auth_secrets (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        sealed,
    )
