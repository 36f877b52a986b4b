"""Every SQL statement of the ledger.

Reads map rows to `models` records (NUMERIC to `int`); the batch writes take whole columns as
arrays (`unnest`), so a batch of any size costs one round trip per table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg

from kit.errors import InvariantError
from ledger.models import (
    GENERAL_LEDGER_ID,
    BalanceRecord,
    Effect,
    Figures,
    Leg,
    TransactionRecord,
    TransactionStatus,
)
from ledger.posting import IdempotencyRow

# The batch's long id and amount lists travel as one comma-separated text each, split by
# `string_to_array`: asyncpg checks every element of a text[] argument against two abstract base
# classes in Python (two calls each), ~10,000 calls for a batch of 512 transfers. Balance ids
# and decimal amounts never contain the separator.
LIST_SEPARATOR: Final = ","

# The foreign key from a balance to the identity it belongs to (migration 0118): the service
# reads its violation, by name, as "no such identity" (on a balance) or "identity in use" (on
# a deletion).
BALANCE_IDENTITY_FK: Final = "balances_identity_id_fkey"


def _split(parameter: str) -> str:
    """SQL that turns a `LIST_SEPARATOR`-joined text parameter back into a text[]."""
    return f"string_to_array({parameter}, '{LIST_SEPARATOR}')"


_TRANSACTION_COLUMNS = (
    "transaction_id, parent_transaction, source, destination, reference, precise_amount,"
    " precision, currency, description, status, hash, allow_overdraft, overdraft_limit,"
    " inflight, skip_queue, atomic, sources, destinations, committed_amount, voided_amount,"
    " outcome, created_at, effective_date, scheduled_for, inflight_expiry_date,"
    " inflight_commit_date, meta_data, effect"
)

# A batch's balances by id, in id order (`lock_balances`), read or locked.
_READ_BALANCES_SQL: Final = (
    "SELECT balance_id, currency, trunc(credit_balance)::text, trunc(debit_balance)::text,"  # noqa: S608 - built once from constants
    " trunc(inflight_credit_balance)::text, trunc(inflight_debit_balance)::text"
    f" FROM ledger.balances WHERE balance_id = ANY({_split('$1')}) ORDER BY balance_id"
)
_LOCK_BALANCES_SQL: Final = _READ_BALANCES_SQL + " FOR UPDATE"

# Everything a batch writes to open it, move its balances and record its new transactions, in
# one statement (`open_batch`): the batch row whose deferred trigger checks the batch at COMMIT,
# one balance-change row and one UPDATE per touched balance (their figures as comma-joined text),
# and the new transactions, which travel as one jsonb array of arrays in
# `_TRANSACTION_COLUMNS` order (orjson writes it in one C call; a binary COPY encoded every value
# through its own codec call and cost two more writes and a round trip). The data-modifying CTEs
# run to completion whether or not the final SELECT reads them; the tables' statement triggers
# run after the whole statement, so they see the batch row it opened.
_OPEN_BATCH_SQL: Final = (
    "WITH o AS ("  # noqa: S608 - built once from constants
    " INSERT INTO ledger.commit_batches (writer, item_count) VALUES ($1, $2) RETURNING batch_id),"
    " c AS ("
    " INSERT INTO ledger.balance_changes"
    " (batch_id, balance_id, credit, debit, inflight_credit, inflight_debit)"
    " SELECT o.batch_id, id, cr::numeric, dr::numeric, icr::numeric, idr::numeric"
    f" FROM o, unnest({', '.join(_split(f'${n}') for n in range(3, 8))})"
    " AS u(id, cr, dr, icr, idr)"
    " RETURNING balance_id, credit, debit, inflight_credit, inflight_debit),"
    " a AS ("
    " UPDATE ledger.balances b SET"
    " credit_balance = b.credit_balance + c.credit,"
    " debit_balance = b.debit_balance + c.debit,"
    " balance = b.balance + c.credit - c.debit,"
    " inflight_credit_balance = b.inflight_credit_balance + c.inflight_credit,"
    " inflight_debit_balance = b.inflight_debit_balance + c.inflight_debit,"
    " inflight_balance = b.inflight_balance + c.inflight_credit - c.inflight_debit,"
    " version = b.version + 1"
    " FROM c WHERE b.balance_id = c.balance_id),"
    " t AS ("
    " INSERT INTO ledger.transactions (" + _TRANSACTION_COLUMNS + ", batch_id) SELECT"
    " e->>0, e->>1, e->>2, e->>3, e->>4, (e->>5)::numeric, (e->>6)::numeric, e->>7, e->>8,"
    " e->>9, e->>10, (e->>11)::boolean, (e->>12)::numeric, (e->>13)::boolean,"
    " (e->>14)::boolean, (e->>15)::boolean, nullif(e->16, 'null'), nullif(e->17, 'null'),"
    " (e->>18)::numeric, (e->>19)::numeric, nullif(e->20, 'null'), (e->>21)::timestamptz,"
    " (e->>22)::timestamptz, (e->>23)::timestamptz, (e->>24)::timestamptz,"
    " (e->>25)::timestamptz, e->26, e->>27, o.batch_id"
    " FROM o, jsonb_array_elements($8::jsonb) AS e)"
    " SELECT batch_id FROM o"
)


_BALANCE_COLUMNS = (
    "balance_id, ledger_id, identity_id, indicator, currency, credit_balance, debit_balance,"
    " inflight_credit_balance, inflight_debit_balance, version, track_fund_lineage,"
    " allocation_strategy, meta_data, created_at, inflight_expires_at"
)


def _legs(value: Any) -> tuple[Leg, ...] | None:
    if value is None:
        return None
    return tuple(
        Leg(
            identifier=item["identifier"],
            distribution=item.get("distribution"),
            precise_distribution=(
                int(item["precise_distribution"])
                if item.get("precise_distribution") is not None
                else None
            ),
            narration=item.get("narration"),
            transaction_id=item.get("transaction_id"),
        )
        for item in value
    )


def _legs_json(legs: tuple[Leg, ...] | None) -> list[dict[str, Any]] | None:
    if legs is None:
        return None
    return [
        {
            "identifier": leg.identifier,
            "distribution": leg.distribution,
            "precise_distribution": leg.precise_distribution,
            "narration": leg.narration,
            "transaction_id": leg.transaction_id,
        }
        for leg in legs
    ]


def transaction_from_row(row: asyncpg.Record) -> TransactionRecord:
    """Map a `ledger.transactions` row."""
    return TransactionRecord(
        transaction_id=row["transaction_id"],
        parent_transaction=row["parent_transaction"],
        source=row["source"],
        destination=row["destination"],
        reference=row["reference"],
        precise_amount=int(row["precise_amount"]),
        precision=int(row["precision"]),
        currency=row["currency"],
        description=row["description"],
        status=TransactionStatus(row["status"]),
        hash=row["hash"],
        allow_overdraft=row["allow_overdraft"],
        overdraft_limit=Decimal(row["overdraft_limit"]),
        inflight=row["inflight"],
        skip_queue=row["skip_queue"],
        atomic=row["atomic"],
        sources=_legs(row["sources"]),
        destinations=_legs(row["destinations"]),
        committed_amount=int(row["committed_amount"]),
        voided_amount=int(row["voided_amount"]),
        outcome=row["outcome"],
        created_at=row["created_at"],
        effective_date=row["effective_date"],
        scheduled_for=row["scheduled_for"],
        inflight_expiry_date=row["inflight_expiry_date"],
        inflight_commit_date=row["inflight_commit_date"],
        meta_data=row["meta_data"],
        effect=Effect(row["effect"]),
    )


def balance_from_row(row: asyncpg.Record) -> BalanceRecord:
    """Map a `ledger.balances` row."""
    return BalanceRecord(
        balance_id=row["balance_id"],
        ledger_id=row["ledger_id"],
        identity_id=row["identity_id"],
        indicator=row["indicator"],
        currency=row["currency"],
        figures=Figures(
            credit=int(row["credit_balance"]),
            debit=int(row["debit_balance"]),
            inflight_credit=int(row["inflight_credit_balance"]),
            inflight_debit=int(row["inflight_debit_balance"]),
        ),
        version=row["version"],
        track_fund_lineage=row["track_fund_lineage"],
        allocation_strategy=row["allocation_strategy"],
        meta_data=row["meta_data"],
        created_at=row["created_at"],
        inflight_expires_at=row["inflight_expires_at"],
    )


# ---------------------------------------------------------------- batch reads (under lock)


async def lock_transactions(
    conn: asyncpg.Connection, ids: Iterable[str], *, lock: bool = True
) -> tuple[dict[str, TransactionRecord], dict[str, list[TransactionRecord]]]:
    """Rows by id, and the children of those rows, locked in id order (unless `lock` is off)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}, {}
    suffix = " FOR UPDATE" if lock else ""
    rows = await conn.fetch(
        f"SELECT {_TRANSACTION_COLUMNS} FROM ledger.transactions"  # noqa: S608 - constant columns
        f" WHERE transaction_id = ANY($1::text[]) ORDER BY transaction_id{suffix}",
        wanted,
    )
    found = {row["transaction_id"]: transaction_from_row(row) for row in rows}
    child_rows = await conn.fetch(
        f"SELECT {_TRANSACTION_COLUMNS} FROM ledger.transactions"  # noqa: S608 - constant columns
        f" WHERE parent_transaction = ANY($1::text[]) ORDER BY transaction_id{suffix}",
        wanted,
    )
    children: dict[str, list[TransactionRecord]] = {}
    for row in child_rows:
        record = transaction_from_row(row)
        children.setdefault(record.parent_transaction, []).append(record)
    return found, children


async def ensure_indicator_balances(
    conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]], new_ids: Sequence[str]
) -> dict[tuple[str, str], str]:
    """Get or create the `@indicator` balance of each (indicator, currency)."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    indicators = [pair[0] for pair in wanted]
    currencies = [pair[1] for pair in wanted]
    await conn.execute(
        "INSERT INTO ledger.balances (balance_id, ledger_id, indicator, currency)"
        " SELECT id, $4, indicator, currency FROM unnest($1::text[], $2::text[], $3::text[])"
        " AS t(id, indicator, currency)"
        " ON CONFLICT (indicator, currency) WHERE indicator IS NOT NULL DO NOTHING",
        list(new_ids[: len(wanted)]),
        indicators,
        currencies,
        GENERAL_LEDGER_ID,
    )
    rows = await conn.fetch(
        "SELECT b.balance_id, b.indicator, b.currency FROM ledger.balances b"
        " JOIN unnest($1::text[], $2::text[]) AS t(indicator, currency)"
        " ON b.indicator = t.indicator AND b.currency = t.currency",
        indicators,
        currencies,
    )
    return {(row["indicator"], row["currency"]): row["balance_id"] for row in rows}


async def find_indicator_balances(
    conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Existing `@indicator` balances by (indicator, currency), creating none."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT b.balance_id, b.indicator, b.currency FROM ledger.balances b"
        " JOIN unnest($1::text[], $2::text[]) AS t(indicator, currency)"
        " ON b.indicator = t.indicator AND b.currency = t.currency",
        [pair[0] for pair in wanted],
        [pair[1] for pair in wanted],
    )
    return {(row["indicator"], row["currency"]): row["balance_id"] for row in rows}


async def lock_balances(
    conn: asyncpg.Connection, ids: Iterable[str], *, lock: bool = True
) -> dict[str, tuple[str, Figures]]:
    """(currency, figures) of each balance, locked in id order so batches never deadlock.

    The amounts travel as decimal text: a batch reads four per balance, and `int()` of text is
    several times cheaper than decoding a NUMERIC into a `Decimal` and converting that. (`trunc`
    drops a zero fraction a row written by hand may carry, `1.0`; the CHECKs allow no other.)"""
    # An id with the separator in it names no balance (the column's CHECK allows none).
    wanted = sorted({i for i in ids if LIST_SEPARATOR not in i})
    if not wanted:
        return {}
    rows = await conn.fetch(
        _LOCK_BALANCES_SQL if lock else _READ_BALANCES_SQL, LIST_SEPARATOR.join(wanted)
    )
    return {
        balance_id: (currency, Figures(int(credit), int(debit), int(held_in), int(held_out)))
        for balance_id, currency, credit, debit, held_in, held_out in rows
    }


async def taken_references(conn: asyncpg.Connection, references: Iterable[str]) -> set[str]:
    """Which of these references are already used."""
    wanted = list(set(references))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT reference FROM ledger.transactions WHERE reference = ANY($1::text[])", wanted
    )
    return {row["reference"] for row in rows}


async def lock_async_bulks(
    conn: asyncpg.Connection, batch_ids: Iterable[str], *, lock: bool = True
) -> dict[str, str]:
    """The status of each durable bulk request, locked (in id order) so that one batch at a
    time decides whether it runs."""
    wanted = sorted(set(batch_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT batch_id, status FROM ledger.async_bulks WHERE batch_id = ANY($1::text[])"  # noqa: S608 - constant
        " ORDER BY batch_id" + (" FOR UPDATE" if lock else ""),
        wanted,
    )
    return {row["batch_id"]: row["status"] for row in rows}


async def insert_async_bulk(
    conn: asyncpg.Connection,
    batch_id: str,
    request: dict[str, Any],
    *,
    lease_until: datetime,
) -> None:
    """Store a `run_async` bulk request before it is acknowledged."""
    await conn.execute(
        "INSERT INTO ledger.async_bulks (batch_id, request, lease_until) VALUES ($1, $2, $3)",
        batch_id,
        request,
        lease_until,
    )


async def finish_async_bulks(
    conn: asyncpg.Connection, batch_ids: Sequence[str], *, now: datetime
) -> None:
    """Mark durable bulk requests done (in the batch that ran them)."""
    if not batch_ids:
        return
    await conn.execute(
        "UPDATE ledger.async_bulks SET status = 'done', finished_at = $2"
        " WHERE batch_id = ANY($1::text[]) AND status = 'pending'",
        list(batch_ids),
        now,
    )


async def idempotency_records(
    conn: asyncpg.Connection, keys: Iterable[str]
) -> dict[str, tuple[str, int, dict[str, Any]]]:
    """Stored responses by Idempotency-Key."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT idempotency_key, request_hash, status_code, response FROM ledger.idempotency_keys"
        " WHERE idempotency_key = ANY($1::text[])",
        wanted,
    )
    return {
        row["idempotency_key"]: (row["request_hash"], row["status_code"], row["response"])
        for row in rows
    }


# ---------------------------------------------------------------- batch writes


async def open_batch(
    conn: asyncpg.Connection,
    *,
    writer: str,
    item_count: int,
    changes: dict[str, Figures],
    records: Sequence[TransactionRecord],
) -> int:
    """Open the batch (the row whose deferred trigger checks it at COMMIT), record and apply its
    summed change of every touched balance and insert its new transactions, in one statement;
    returns the batch id.

    Amounts travel as decimal text: encoding a Python int that way is several times cheaper
    than as a NUMERIC, and PostgreSQL parses it exactly. One round trip where there were three
    (the batch row, the COPY of the transactions, the balance changes)."""
    touched = sorted(balance_id for balance_id, change in changes.items() if not change.is_zero())
    figures = [changes[balance_id] for balance_id in touched]
    join = LIST_SEPARATOR.join
    batch_id: int = await conn.fetchval(
        _OPEN_BATCH_SQL,
        writer,
        item_count,
        join(touched),
        join([str(f.credit) for f in figures]),
        join([str(f.debit) for f in figures]),
        join([str(f.inflight_credit) for f in figures]),
        join([str(f.inflight_debit) for f in figures]),
        [_transaction_row(r) for r in records],
    )
    return batch_id


def _transaction_row(r: TransactionRecord) -> list[Any]:
    """A new transaction as the JSON array `_OPEN_BATCH_SQL` reads, in `_TRANSACTION_COLUMNS`
    order (amounts as decimal text: JSON numbers stop at 64 bits in orjson)."""
    return [
        r.transaction_id,
        r.parent_transaction,
        r.source,
        r.destination,
        r.reference,
        str(r.precise_amount),
        str(r.precision),
        r.currency,
        r.description,
        r.status.value,
        r.hash,
        r.allow_overdraft,
        str(r.overdraft_limit),
        r.inflight,
        r.skip_queue,
        r.atomic,
        _legs_json(r.sources),
        _legs_json(r.destinations),
        str(r.committed_amount),
        str(r.voided_amount),
        r.outcome,
        r.created_at,
        r.effective_date,
        r.scheduled_for,
        r.inflight_expiry_date,
        r.inflight_commit_date,
        r.meta_data,
        r.effect.value,
    ]


async def update_hold_progress(
    conn: asyncpg.Connection, progress: dict[str, tuple[int, int]]
) -> None:
    """Set committed and voided amounts of holds."""
    if not progress:
        return
    ids = sorted(progress)
    await conn.execute(
        "UPDATE ledger.transactions t SET committed_amount = p.committed, voided_amount = p.voided"
        " FROM unnest($1::text[], $2::numeric[], $3::numeric[]) AS p(id, committed, voided)"
        " WHERE t.transaction_id = p.id",
        ids,
        [progress[i][0] for i in ids],
        [progress[i][1] for i in ids],
    )


async def update_outcomes(conn: asyncpg.Connection, outcomes: dict[str, dict[str, Any]]) -> None:
    """Record the outcome of scheduled rows that ran."""
    if not outcomes:
        return
    ids = sorted(outcomes)
    await conn.execute(
        "UPDATE ledger.transactions t SET outcome = o.outcome"
        " FROM unnest($1::text[], $2::jsonb[]) AS o(id, outcome) WHERE t.transaction_id = o.id",
        ids,
        [outcomes[i] for i in ids],
    )


async def insert_outbox(
    conn: asyncpg.Connection,
    batch_id: int | None,
    events: Sequence[tuple[str, str, str, dict[str, Any] | None]],
) -> None:
    """Insert outbox events (id, type, entity id, payload or None)."""
    if not events:
        return
    await conn.execute(
        "INSERT INTO ledger.outbox (event_id, event_type, entity_id, payload, batch_id)"
        " SELECT *, $5::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])",
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
        batch_id,
    )


async def insert_idempotency(conn: asyncpg.Connection, rows: Sequence[IdempotencyRow]) -> None:
    """Remember responses under their Idempotency-Keys."""
    if not rows:
        return
    await conn.execute(
        "INSERT INTO ledger.idempotency_keys (idempotency_key, request_hash, status_code, response)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::jsonb[])",
        [r.key for r in rows],
        [r.request_hash for r in rows],
        [r.status_code for r in rows],
        [r.body for r in rows],
    )


# ---------------------------------------------------------------- plain reads


async def find_transaction(
    conn: asyncpg.Connection, transaction_id: str
) -> TransactionRecord | None:
    """A transaction by id."""
    row = await conn.fetchrow(
        f"SELECT {_TRANSACTION_COLUMNS} FROM ledger.transactions WHERE transaction_id = $1",  # noqa: S608
        transaction_id,
    )
    return None if row is None else transaction_from_row(row)


async def find_transaction_by_reference(
    conn: asyncpg.Connection, reference: str
) -> TransactionRecord | None:
    """A transaction by reference."""
    row = await conn.fetchrow(
        f"SELECT {_TRANSACTION_COLUMNS} FROM ledger.transactions WHERE reference = $1",  # noqa: S608
        reference,
    )
    return None if row is None else transaction_from_row(row)


async def find_balance(conn: asyncpg.Connection, balance_id: str) -> BalanceRecord | None:
    """A balance by id."""
    row = await conn.fetchrow(
        f"SELECT {_BALANCE_COLUMNS} FROM ledger.balances WHERE balance_id = $1",  # noqa: S608
        balance_id,
    )
    return None if row is None else balance_from_row(row)


async def find_balance_by_indicator(
    conn: asyncpg.Connection, indicator: str, currency: str
) -> BalanceRecord | None:
    """An indicator balance by name and currency."""
    row = await conn.fetchrow(
        f"SELECT {_BALANCE_COLUMNS} FROM ledger.balances WHERE indicator = $1 AND currency = $2",  # noqa: S608
        indicator,
        currency,
    )
    return None if row is None else balance_from_row(row)


async def insert_balance(
    conn: asyncpg.Connection,
    *,
    balance_id: str,
    ledger_id: str,
    currency: str,
    identity_id: str | None,
    indicator: str | None,
    track_fund_lineage: bool,
    allocation_strategy: str,
    meta_data: dict[str, Any],
    created_at: datetime,
) -> BalanceRecord:
    """Create a balance. Raises `asyncpg.ForeignKeyViolationError` (`BALANCE_IDENTITY_FK`) when
    `identity_id` names no identity."""
    row = await conn.fetchrow(
        "INSERT INTO ledger.balances (balance_id, ledger_id, currency, identity_id, indicator,"  # noqa: S608 - constant
        " track_fund_lineage, allocation_strategy, meta_data, created_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_BALANCE_COLUMNS}",
        balance_id,
        ledger_id,
        currency,
        identity_id,
        indicator,
        track_fund_lineage,
        allocation_strategy,
        meta_data,
        created_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return balance_from_row(row)


async def identity_exists(conn: asyncpg.Connection, identity_id: str) -> bool:
    """True when the identity exists (a balance may then name it)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger.identities WHERE identity_id = $1)", identity_id
    )
    return found


async def ledger_exists(conn: asyncpg.Connection, ledger_id: str) -> bool:
    """True when the ledger exists."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger.ledgers WHERE ledger_id = $1)", ledger_id
    )
    return found


# ---------------------------------------------------------------- ledgers


_LEDGER_COLUMNS = "ledger_id, name, meta_data, created_at"


async def insert_ledger(
    conn: asyncpg.Connection,
    *,
    ledger_id: str,
    name: str,
    meta_data: dict[str, Any],
    created_at: datetime,
) -> asyncpg.Record:
    """Create a ledger."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"INSERT INTO ledger.ledgers ({_LEDGER_COLUMNS}) VALUES ($1, $2, $3, $4) RETURNING {_LEDGER_COLUMNS}",  # noqa: S608
        ledger_id,
        name,
        meta_data,
        created_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def find_ledger(conn: asyncpg.Connection, ledger_id: str) -> asyncpg.Record | None:
    """A ledger by id."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_LEDGER_COLUMNS} FROM ledger.ledgers WHERE ledger_id = $1",  # noqa: S608
        ledger_id,
    )
    return row


async def rename_ledger(
    conn: asyncpg.Connection, ledger_id: str, name: str
) -> asyncpg.Record | None:
    """Change a ledger's name."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"UPDATE ledger.ledgers SET name = $2 WHERE ledger_id = $1 RETURNING {_LEDGER_COLUMNS}",  # noqa: S608
        ledger_id,
        name,
    )
    return row


async def fetch_rows(
    conn: asyncpg.Connection, sql: str, args: Sequence[Any]
) -> list[asyncpg.Record]:
    """Run a list query built by `ledger.filters` (whitelisted identifiers, bound values)."""
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


async def fetch_count(conn: asyncpg.Connection, sql: str, args: Sequence[Any]) -> int:
    """Run a count query built by `ledger.filters`."""
    count: int = await conn.fetchval(sql, *args)
    return count


# ---------------------------------------------------------------- balances


async def set_balance_identity(conn: asyncpg.Connection, balance_id: str, identity_id: str) -> bool:
    """Attach an identity to a balance; False when the balance does not exist. Raises
    `asyncpg.ForeignKeyViolationError` (`BALANCE_IDENTITY_FK`) when the identity does not."""
    status: str = await conn.execute(
        "UPDATE ledger.balances SET identity_id = $2 WHERE balance_id = $1", balance_id, identity_id
    )
    return status.endswith(" 1")


async def balance_at(
    conn: asyncpg.Connection, balance_id: str, at: datetime
) -> tuple[int, int] | None:
    """(credit, debit) of a balance at `at`, replayed from its transactions' effective dates."""
    row = await conn.fetchrow(
        "SELECT"
        " coalesce(sum(precise_amount) FILTER (WHERE destination = $1), 0) AS credit,"
        " coalesce(sum(precise_amount) FILTER (WHERE source = $1), 0) AS debit,"
        " count(*) AS moves"
        " FROM ledger.transactions"
        " WHERE (source = $1 OR destination = $1) AND effect IN ('applied', 'commit')"
        " AND coalesce(effective_date, created_at) <= $2",
        balance_id,
        at,
    )
    if row is None:
        return None
    return int(row["credit"]), int(row["debit"])


async def find_identity(conn: asyncpg.Connection, identity_id: str) -> asyncpg.Record | None:
    """An identity by id (for `?include=identity` on a balance)."""
    from ledger.identity_repository import IDENTITY_COLUMNS  # noqa: PLC0415 - identities are optional

    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {IDENTITY_COLUMNS} FROM ledger.identities WHERE identity_id = $1",  # noqa: S608 - constant columns
        identity_id,
    )
    return row


# ---------------------------------------------------------------- metadata


_METADATA_TABLES: dict[str, tuple[str, str]] = {
    "txn": ("ledger.transactions", "transaction_id"),
    "ldg": ("ledger.ledgers", "ledger_id"),
    "bln": ("ledger.balances", "balance_id"),
    "idt": ("ledger.identities", "identity_id"),
}


async def merge_metadata(
    conn: asyncpg.Connection, prefix: str, entity_id: str, meta_data: dict[str, Any]
) -> dict[str, Any] | None:
    """Merge keys into an entity's metadata; returns the result, or None if it does not exist.

    A bulk id (`bulk_`) names no row of its own: the keys are merged into every transaction of
    the batch (their `parent_transaction`), and the answer is the keys given, as Blnk's.
    """
    if prefix == "bulk":
        merged_count: int = await conn.fetchval(
            "WITH merged AS (UPDATE ledger.transactions SET meta_data = meta_data || $2"
            " WHERE parent_transaction = $1 RETURNING 1) SELECT count(*) FROM merged",
            entity_id,
            meta_data,
        )
        return meta_data if merged_count else None
    table, key = _METADATA_TABLES[prefix]
    merged: dict[str, Any] | None = await conn.fetchval(
        f"UPDATE {table} SET meta_data = meta_data || $2 WHERE {key} = $1 RETURNING meta_data",  # noqa: S608 - whitelisted
        entity_id,
        meta_data,
    )
    return merged


# ---------------------------------------------------------------- verification (dwaybank ledger verify)

_IMPLIED_FIGURES = """
    SELECT balance_id,
           sum(credit) AS credit, sum(debit) AS debit,
           sum(inflight_credit) AS inflight_credit, sum(inflight_debit) AS inflight_debit
      FROM (
        SELECT source AS balance_id, 0::numeric AS credit,
               CASE WHEN effect IN ('applied', 'commit') THEN precise_amount ELSE 0 END AS debit,
               0::numeric AS inflight_credit,
               CASE effect WHEN 'inflight' THEN precise_amount
                           WHEN 'commit' THEN -precise_amount
                           WHEN 'void' THEN -precise_amount ELSE 0 END AS inflight_debit
          FROM ledger.transactions WHERE effect <> 'none'
        UNION ALL
        SELECT destination,
               CASE WHEN effect IN ('applied', 'commit') THEN precise_amount ELSE 0 END,
               0,
               CASE effect WHEN 'inflight' THEN precise_amount
                           WHEN 'commit' THEN -precise_amount
                           WHEN 'void' THEN -precise_amount ELSE 0 END,
               0
          FROM ledger.transactions WHERE effect <> 'none'
      ) moves
     GROUP BY balance_id
"""


async def currencies_not_summing_to_zero(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Currencies whose balances (or holds) do not sum to zero."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT currency, sum(balance) AS balance, sum(inflight_balance) AS inflight, count(*) AS balances"
        " FROM ledger.balances GROUP BY currency"
        " HAVING sum(balance) <> 0 OR sum(inflight_balance) <> 0 ORDER BY currency"
    )
    return rows


async def balances_not_matching_changes(
    conn: asyncpg.Connection, limit: int
) -> list[asyncpg.Record]:
    """Balances whose figures differ from the sum of their recorded batch changes."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT b.balance_id, b.credit_balance, b.debit_balance, b.inflight_credit_balance,"
        " b.inflight_debit_balance, c.credit, c.debit, c.inflight_credit, c.inflight_debit"
        " FROM ledger.balances b LEFT JOIN ("
        "   SELECT balance_id, sum(credit) AS credit, sum(debit) AS debit,"
        "   sum(inflight_credit) AS inflight_credit, sum(inflight_debit) AS inflight_debit"
        "   FROM ledger.balance_changes GROUP BY balance_id) c USING (balance_id)"
        " WHERE (b.credit_balance, b.debit_balance, b.inflight_credit_balance, b.inflight_debit_balance)"
        " IS DISTINCT FROM (coalesce(c.credit, 0), coalesce(c.debit, 0),"
        " coalesce(c.inflight_credit, 0), coalesce(c.inflight_debit, 0))"
        " ORDER BY b.balance_id LIMIT $1",
        limit,
    )
    return rows


async def balances_not_matching_transactions(
    conn: asyncpg.Connection, limit: int
) -> list[asyncpg.Record]:
    """Balances whose figures differ from what their transactions imply."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT b.balance_id FROM ledger.balances b"  # noqa: S608 - constant SQL
        f" LEFT JOIN ({_IMPLIED_FIGURES}) t USING (balance_id)"
        " WHERE (b.credit_balance, b.debit_balance, b.inflight_credit_balance, b.inflight_debit_balance)"
        " IS DISTINCT FROM (coalesce(t.credit, 0), coalesce(t.debit, 0),"
        " coalesce(t.inflight_credit, 0), coalesce(t.inflight_debit, 0))"
        " ORDER BY b.balance_id LIMIT $1",
        limit,
    )
    return rows


async def holds_not_matching_children(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Holds whose recorded progress differs from their commit and void children."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT h.transaction_id, h.committed_amount, h.voided_amount,"
        " coalesce(sum(c.precise_amount) FILTER (WHERE c.effect = 'commit'), 0) AS committed,"
        " coalesce(sum(c.precise_amount) FILTER (WHERE c.effect = 'void'), 0) AS voided"
        " FROM ledger.transactions h"
        " LEFT JOIN ledger.transactions c ON c.parent_transaction = h.transaction_id"
        " WHERE h.status = 'INFLIGHT'"
        " GROUP BY h.transaction_id, h.committed_amount, h.voided_amount"
        " HAVING h.committed_amount <> coalesce(sum(c.precise_amount) FILTER (WHERE c.effect = 'commit'), 0)"
        " OR h.voided_amount <> coalesce(sum(c.precise_amount) FILTER (WHERE c.effect = 'void'), 0)"
        " LIMIT $1",
        limit,
    )
    return rows


async def ledger_totals(conn: asyncpg.Connection) -> asyncpg.Record:
    """How much the verification looked at."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM ledger.balances) AS balances,"
        " (SELECT count(*) FROM ledger.transactions) AS transactions,"
        " (SELECT count(*) FROM ledger.commit_batches) AS batches"
    )
    if row is None:
        raise InvariantError("an aggregate query returned no row")
    return row
