"""The scheduler's reads: rows whose time has come (each through its own partial index)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def claim_stale_async_bulks(
    conn: asyncpg.Connection, *, now: datetime, lease_until: datetime, limit: int
) -> list[tuple[str, dict[str, Any], int]]:
    """(batch id, request, attempts) of pending run_async bulks whose lease has run out, each
    leased anew and counted as one more attempt; rows a batch is running right now are
    skipped."""
    rows = await conn.fetch(
        "UPDATE ledger.async_bulks SET lease_until = $2, attempts = attempts + 1"
        " WHERE batch_id IN (SELECT batch_id FROM ledger.async_bulks"
        " WHERE status = 'pending' AND lease_until <= $1 ORDER BY lease_until LIMIT $3"
        " FOR UPDATE SKIP LOCKED) RETURNING batch_id, request, attempts",
        now,
        lease_until,
        limit,
    )
    return [(row["batch_id"], row["request"], row["attempts"]) for row in rows]


async def due_scheduled(conn: asyncpg.Connection, *, now: datetime, limit: int) -> list[str]:
    """SCHEDULED rows due by `now` that have not run, earliest first."""
    rows = await conn.fetch(
        "SELECT transaction_id FROM ledger.transactions"
        " WHERE status = 'SCHEDULED' AND outcome IS NULL AND scheduled_for <= $1"
        " ORDER BY scheduled_for LIMIT $2",
        now,
        limit,
    )
    return [row["transaction_id"] for row in rows]


async def due_expiries(
    conn: asyncpg.Connection, *, now: datetime, limit: int
) -> list[tuple[str, datetime, datetime | None]]:
    """(hold id, expiry, commit date) of holds past their expiry with something left."""
    rows = await conn.fetch(
        "SELECT transaction_id, inflight_expiry_date, inflight_commit_date FROM ledger.transactions"
        " WHERE status = 'INFLIGHT' AND inflight_expiry_date IS NOT NULL"
        " AND committed_amount + voided_amount < precise_amount AND inflight_expiry_date <= $1"
        " ORDER BY inflight_expiry_date LIMIT $2",
        now,
        limit,
    )
    return [
        (r["transaction_id"], r["inflight_expiry_date"], r["inflight_commit_date"]) for r in rows
    ]


async def due_commits(
    conn: asyncpg.Connection, *, now: datetime, limit: int
) -> list[tuple[str, datetime, datetime | None]]:
    """(hold id, commit date, expiry) of holds past their commit date with something left."""
    rows = await conn.fetch(
        "SELECT transaction_id, inflight_commit_date, inflight_expiry_date FROM ledger.transactions"
        " WHERE status = 'INFLIGHT' AND inflight_commit_date IS NOT NULL"
        " AND committed_amount + voided_amount < precise_amount AND inflight_commit_date <= $1"
        " ORDER BY inflight_commit_date LIMIT $2",
        now,
        limit,
    )
    return [
        (r["transaction_id"], r["inflight_commit_date"], r["inflight_expiry_date"]) for r in rows
    ]
