"""Every SQL statement of balance monitors."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import asyncpg

from ledger.monitors_model import Condition, Monitor

_COLUMNS = (
    "monitor_id, balance_id, field, operator, value, precision, precise_value, description,"
    " call_back_url, meta_data, created_at"
)


def monitor_from_row(row: asyncpg.Record) -> Monitor:
    """Map a `ledger.balance_monitors` row."""
    return Monitor(
        monitor_id=row["monitor_id"],
        balance_id=row["balance_id"],
        condition=Condition(
            field=row["field"],
            operator=row["operator"],
            value=Decimal(row["value"]),
            precision=int(row["precision"]),
            precise_value=int(row["precise_value"]),
        ),
        description=row["description"],
        call_back_url=row["call_back_url"],
        meta_data=row["meta_data"],
        created_at=row["created_at"],
    )


async def insert_monitor(conn: asyncpg.Connection, monitor: Monitor) -> None:
    """Store a new monitor."""
    condition = monitor.condition
    await conn.execute(
        f"INSERT INTO ledger.balance_monitors ({_COLUMNS})"  # noqa: S608 - constant columns
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        monitor.monitor_id,
        monitor.balance_id,
        condition.field,
        condition.operator,
        condition.value,
        Decimal(condition.precision),
        Decimal(condition.precise_value),
        monitor.description,
        monitor.call_back_url,
        monitor.meta_data,
        monitor.created_at,
    )


async def find_monitor(
    conn: asyncpg.Connection, monitor_id: str, *, for_update: bool = False
) -> Monitor | None:
    """A monitor by id, locked for the rest of the transaction when `for_update`."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM ledger.balance_monitors WHERE monitor_id = $1"  # noqa: S608
        + (" FOR UPDATE" if for_update else ""),
        monitor_id,
    )
    return None if row is None else monitor_from_row(row)


async def list_monitors(
    conn: asyncpg.Connection, *, balance_id: str | None, limit: int, offset: int
) -> list[Monitor]:
    """A page of monitors, newest first; of one balance when `balance_id` is given."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ledger.balance_monitors"  # noqa: S608 - constant columns
        " WHERE ($1::text IS NULL OR balance_id = $1)"
        " ORDER BY created_at DESC, monitor_id LIMIT $2 OFFSET $3",
        balance_id,
        limit,
        offset,
    )
    return [monitor_from_row(row) for row in rows]


async def monitors_for_balances(
    conn: asyncpg.Connection, balance_ids: Iterable[str]
) -> dict[str, list[Monitor]]:
    """Every monitor of each balance (balances without one are absent)."""
    wanted = sorted(set(balance_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ledger.balance_monitors"  # noqa: S608 - constant columns
        " WHERE balance_id = ANY($1::text[]) ORDER BY monitor_id",
        wanted,
    )
    found: dict[str, list[Monitor]] = {}
    for row in rows:
        monitor = monitor_from_row(row)
        found.setdefault(monitor.balance_id, []).append(monitor)
    return found


async def update_monitor(
    conn: asyncpg.Connection,
    monitor_id: str,
    *,
    balance_id: str,
    condition: Condition,
    description: str,
    call_back_url: str | None,
) -> str | None:
    """Replace a monitor's balance, condition and description (and the callback when given);
    returns the balance id it had, or None when it does not exist."""
    previous: str | None = await conn.fetchval(
        "WITH old AS (SELECT monitor_id, balance_id FROM ledger.balance_monitors"
        " WHERE monitor_id = $1 FOR UPDATE)"
        " UPDATE ledger.balance_monitors m SET balance_id = $2, field = $3, operator = $4,"
        " value = $5, precision = $6, precise_value = $7, description = $8,"
        " call_back_url = coalesce($9, m.call_back_url)"
        " FROM old WHERE m.monitor_id = old.monitor_id RETURNING old.balance_id",
        monitor_id,
        balance_id,
        condition.field,
        condition.operator,
        condition.value,
        Decimal(condition.precision),
        Decimal(condition.precise_value),
        description,
        call_back_url,
    )
    return previous


async def delete_monitor(conn: asyncpg.Connection, monitor_id: str) -> str | None:
    """Delete a monitor; returns its balance id, or None when it does not exist."""
    balance_id: str | None = await conn.fetchval(
        "DELETE FROM ledger.balance_monitors WHERE monitor_id = $1 RETURNING balance_id",
        monitor_id,
    )
    return balance_id


async def lock_monitor_count(conn: asyncpg.Connection, balance_id: str) -> int:
    """How many monitors a balance has; other callers for the same balance wait for this
    transaction to end (an advisory lock: the balance row itself is left to batches)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('ledger.balance_monitors:' || $1, 0))",
        balance_id,
    )
    count: int = await conn.fetchval(
        "SELECT count(*) FROM ledger.balance_monitors WHERE balance_id = $1", balance_id
    )
    return count


async def balance_exists(conn: asyncpg.Connection, balance_id: str) -> bool:
    """True when the balance exists."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger.balances WHERE balance_id = $1)", balance_id
    )
    return found
