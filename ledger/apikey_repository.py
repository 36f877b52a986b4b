"""Every SQL statement of API keys (`ledger.api_keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from kit.errors import InvariantError

API_KEY_COLUMNS = (
    "api_key_id, name, owner_id, scopes, expires_at, created_at, last_used_at, is_revoked,"
    " revoked_at"
)


async def insert_api_key(
    conn: asyncpg.Connection,
    *,
    api_key_id: str,
    key_hash: str,
    name: str,
    owner_id: str,
    scopes: Sequence[str],
    expires_at: datetime,
    created_at: datetime,
) -> asyncpg.Record:
    """Store a new key (its hash only)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO ledger.api_keys (api_key_id, key_hash, name, owner_id, scopes, expires_at,"  # noqa: S608 - constant columns
        f" created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {API_KEY_COLUMNS}",
        api_key_id,
        key_hash,
        name,
        owner_id,
        list(scopes),
        expires_at,
        created_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def find_by_hash(conn: asyncpg.Connection, key_hash: str) -> asyncpg.Record | None:
    """The key whose secret hashes to `key_hash`."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {API_KEY_COLUMNS} FROM ledger.api_keys WHERE key_hash = $1",  # noqa: S608 - constant columns
        key_hash,
    )
    return row


async def find_api_key(conn: asyncpg.Connection, api_key_id: str) -> asyncpg.Record | None:
    """A key by id, locked for the rest of the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {API_KEY_COLUMNS} FROM ledger.api_keys WHERE api_key_id = $1 FOR UPDATE",  # noqa: S608 - constant columns
        api_key_id,
    )
    return row


async def share_api_key(conn: asyncpg.Connection, api_key_id: str) -> asyncpg.Record | None:
    """A key by id, held against revocation for the rest of the transaction (a revocation in
    flight is waited for, and seen)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {API_KEY_COLUMNS} FROM ledger.api_keys WHERE api_key_id = $1 FOR SHARE",  # noqa: S608 - constant columns
        api_key_id,
    )
    return row


async def list_api_keys(
    conn: asyncpg.Connection, owner_id: str, *, limit: int
) -> list[asyncpg.Record]:
    """An owner's keys, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {API_KEY_COLUMNS} FROM ledger.api_keys WHERE owner_id = $1"  # noqa: S608 - constant columns
        " ORDER BY created_at, api_key_id LIMIT $2",
        owner_id,
        limit,
    )
    return rows


async def revoke_api_key(conn: asyncpg.Connection, api_key_id: str, at: datetime) -> None:
    """Revoke a key (a revoked key stays revoked, with its first revocation time)."""
    await conn.execute(
        "UPDATE ledger.api_keys SET is_revoked = true, revoked_at = $2"
        " WHERE api_key_id = $1 AND NOT is_revoked",
        api_key_id,
        at,
    )


async def touch_api_key(conn: asyncpg.Connection, api_key_id: str, at: datetime) -> None:
    """Record a use of the key (never moving `last_used_at` backwards)."""
    await conn.execute(
        "UPDATE ledger.api_keys SET last_used_at = $2 WHERE api_key_id = $1"
        " AND (last_used_at IS NULL OR last_used_at < $2) AND created_at <= $2",
        api_key_id,
        at,
    )
