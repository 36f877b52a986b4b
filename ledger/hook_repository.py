"""Every SQL statement of transaction hooks (`ledger.hooks`)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from kit.errors import InvariantError

HOOK_COLUMNS = (
    "hook_id, name, url, hook_type, active, timeout_s, retry_count, created_at, last_run,"
    " last_success"
)


async def insert_hook(
    conn: asyncpg.Connection,
    *,
    hook_id: str,
    name: str,
    url: str,
    hook_type: str,
    active: bool,
    timeout_s: int,
    retry_count: int,
    created_at: datetime,
) -> asyncpg.Record:
    """Register a hook."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO ledger.hooks (hook_id, name, url, hook_type, active, timeout_s, retry_count,"  # noqa: S608 - constant columns
        f" created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {HOOK_COLUMNS}",
        hook_id,
        name,
        url,
        hook_type,
        active,
        timeout_s,
        retry_count,
        created_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def replace_hook(
    conn: asyncpg.Connection,
    hook_id: str,
    *,
    name: str,
    url: str,
    hook_type: str,
    active: bool,
    timeout_s: int,
    retry_count: int,
) -> asyncpg.Record | None:
    """Overwrite a hook's settings (its id, creation time and run history stay)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE ledger.hooks SET name = $2, url = $3, hook_type = $4, active = $5, timeout_s = $6,"  # noqa: S608 - constant columns
        f" retry_count = $7 WHERE hook_id = $1 RETURNING {HOOK_COLUMNS}",
        hook_id,
        name,
        url,
        hook_type,
        active,
        timeout_s,
        retry_count,
    )
    return row


async def find_hook(conn: asyncpg.Connection, hook_id: str) -> asyncpg.Record | None:
    """A hook by id."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {HOOK_COLUMNS} FROM ledger.hooks WHERE hook_id = $1",  # noqa: S608 - constant columns
        hook_id,
    )
    return row


async def list_hooks(
    conn: asyncpg.Connection, hook_type: str | None, *, active_only: bool, limit: int
) -> list[asyncpg.Record]:
    """Hooks of a type (every type when None), oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {HOOK_COLUMNS} FROM ledger.hooks"  # noqa: S608 - constant columns
        " WHERE ($1::text IS NULL OR hook_type = $1) AND (active OR NOT $2)"
        " ORDER BY created_at, hook_id LIMIT $3",
        hook_type,
        active_only,
        limit,
    )
    return rows


async def lock_hook_count(conn: asyncpg.Connection) -> int:
    """How many hooks are registered; other callers wait for this transaction to end (an
    advisory lock: a create's count and insert are one step for every other create)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger.hooks'))")
    count: int = await conn.fetchval("SELECT count(*) FROM ledger.hooks")
    return count


async def delete_hook(conn: asyncpg.Connection, hook_id: str) -> bool:
    """Remove a hook; False when there was none."""
    status: str = await conn.execute("DELETE FROM ledger.hooks WHERE hook_id = $1", hook_id)
    return status.endswith(" 1")


async def record_run(
    conn: asyncpg.Connection, hook_id: str, at: datetime, *, success: bool
) -> None:
    """Remember when a hook last ran and whether it succeeded (a later run is never overwritten
    by an earlier one finishing late)."""
    await conn.execute(
        "UPDATE ledger.hooks SET last_run = $2, last_success = $3"
        " WHERE hook_id = $1 AND (last_run IS NULL OR last_run <= $2)",
        hook_id,
        at,
        success,
    )
