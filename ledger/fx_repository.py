"""Every SQL statement of exchange rates and of compensations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from ledger.fx_model import Rate


def _rate(row: asyncpg.Record) -> Rate:
    return Rate(
        base=row["base_currency"],
        quote=row["quote_currency"],
        rate=Decimal(row["rate"]),
        source=row["source"],
        as_of=row["as_of"],
    )


async def upsert_rates(conn: asyncpg.Connection, rates: Sequence[Rate], *, replace: bool) -> int:
    """Store rates; with `replace` off, only pairs that have no rate yet are written."""
    if not rates:
        return 0
    conflict = (
        "DO UPDATE SET rate = excluded.rate, source = excluded.source, as_of = excluded.as_of,"
        " updated_at = now()"
        if replace
        else "DO NOTHING"
    )
    status: str = await conn.execute(
        "INSERT INTO ledger.exchange_rates (base_currency, quote_currency, rate, source, as_of)"  # noqa: S608
        " SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[],"
        " $5::timestamptz[])"
        f" ON CONFLICT (base_currency, quote_currency) {conflict}",
        [r.base for r in rates],
        [r.quote for r in rates],
        [r.rate for r in rates],
        [r.source for r in rates],
        [r.as_of for r in rates],
    )
    return int(status.rsplit(" ", 1)[-1])


async def find_pair(
    conn: asyncpg.Connection, base: str, quote: str
) -> tuple[Rate | None, Rate | None]:
    """(the direct rate, the inverse pair's rate); either may be missing."""
    rows = await conn.fetch(
        "SELECT base_currency, quote_currency, rate, source, as_of FROM ledger.exchange_rates"
        " WHERE (base_currency, quote_currency) IN (($1, $2), ($2, $1))",
        base,
        quote,
    )
    direct = inverse = None
    for row in rows:
        if row["base_currency"] == base:
            direct = _rate(row)
        else:
            inverse = _rate(row)
    return direct, inverse


async def list_rates(conn: asyncpg.Connection, *, limit: int) -> list[Rate]:
    """Stored rates by pair."""
    rows = await conn.fetch(
        "SELECT base_currency, quote_currency, rate, source, as_of FROM ledger.exchange_rates"
        " ORDER BY base_currency, quote_currency LIMIT $1",
        limit,
    )
    return [_rate(row) for row in rows]


async def insert_compensation(
    conn: asyncpg.Connection,
    *,
    compensation_id: str,
    operation_id: str,
    original_reference: str,
    original_transaction_id: str,
    compensating_reference: str,
    compensating_transaction_id: str,
    reason: str,
    status: str,
    error: str | None,
    created_at: datetime,
) -> None:
    """Record one compensating transaction (posted or failed)."""
    await conn.execute(
        "INSERT INTO ledger.compensations (compensation_id, operation_id, original_reference,"
        " original_transaction_id, compensating_reference, compensating_transaction_id, reason,"
        " status, error, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        compensation_id,
        operation_id,
        original_reference,
        original_transaction_id,
        compensating_reference,
        compensating_transaction_id,
        reason,
        status,
        error,
        created_at,
    )


async def compensations_of(conn: asyncpg.Connection, operation_id: str) -> list[asyncpg.Record]:
    """The compensations recorded for one operation."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM ledger.compensations WHERE operation_id = $1 ORDER BY created_at",
        operation_id,
    )
    return rows
