"""The ledger's plain reads and writes: ledgers, balances, lookups, lists, metadata.

Everything that moves money goes through the engine (`LedgerPort`); what is here only creates
records that hold no money yet, reads, and merges metadata. Each function takes `conn` first.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import asyncpg

from kit.ids import IdPrefix, new_id
from ledger import repository
from ledger.errors import (
    BalanceNotFoundError,
    BalanceRequestInvalidError,
    BalanceValidationError,
    LedgerNotFoundError,
    LedgerValidationError,
    LedgerValidationFailedError,
    MetadataEntityNotFoundError,
    MetadataInvalidEntityError,
    TransactionNotFoundError,
)
from ledger.filters import COLLECTIONS, Query, add_condition, sql_for
from ledger.models import (
    CURRENCY_CODE,
    GENERAL_LEDGER_ID,
    INDICATOR_NAME,
    BalanceRecord,
    TransactionRecord,
)
from ledger.schemas import META_DATA_BYTES_MAX, fits_meta_data
from ledger.wire import balance_json, timestamp, transaction_json

NAME_LENGTH_MAX: Final = 255
ALLOCATION_STRATEGIES: Final = frozenset({"FIFO", "LIFO", "PROPORTIONAL"})


def ledger_json(row: asyncpg.Record) -> dict[str, Any]:
    """A ledger as Blnk returns it."""
    return {
        "ledger_id": row["ledger_id"],
        "name": row["name"],
        "created_at": timestamp(row["created_at"]),
        "meta_data": row["meta_data"],
    }


async def create_ledger(
    conn: asyncpg.Connection, *, name: str, meta_data: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """POST /ledgers."""
    if not name or len(name) > NAME_LENGTH_MAX:
        raise LedgerValidationFailedError("name is required (at most 255 characters)")
    if not fits_meta_data(meta_data):
        raise LedgerValidationFailedError(f"meta_data is larger than {META_DATA_BYTES_MAX} bytes")
    row = await repository.insert_ledger(
        conn, ledger_id=new_id(IdPrefix.LEDGER), name=name, meta_data=meta_data, created_at=now
    )
    return ledger_json(row)


async def get_ledger(conn: asyncpg.Connection, ledger_id: str) -> dict[str, Any]:
    """GET /ledgers/{id}."""
    row = await repository.find_ledger(conn, ledger_id)
    if row is None:
        raise LedgerNotFoundError(f"ledger {ledger_id} not found", ledger_id=ledger_id)
    return ledger_json(row)


async def rename_ledger(conn: asyncpg.Connection, ledger_id: str, name: str) -> dict[str, Any]:
    """PUT /ledgers/{id}."""
    if not name or len(name) > NAME_LENGTH_MAX:
        raise LedgerValidationFailedError("name is required (at most 255 characters)")
    row = await repository.rename_ledger(conn, ledger_id, name)
    if row is None:
        raise LedgerNotFoundError(f"ledger {ledger_id} not found", ledger_id=ledger_id)
    return ledger_json(row)


async def create_balance(
    conn: asyncpg.Connection,
    *,
    ledger_id: str,
    currency: str,
    identity_id: str | None,
    indicator: str | None,
    track_fund_lineage: bool,
    allocation_strategy: str | None,
    meta_data: dict[str, Any],
    now: datetime,
) -> BalanceRecord:
    """POST /balances."""
    if not ledger_id:
        raise BalanceRequestInvalidError("ledger_id is required")
    if not currency or not CURRENCY_CODE.match(currency):
        raise BalanceRequestInvalidError("currency is required (1-32 letters, digits, _ . : -)")
    strategy = (allocation_strategy or "FIFO").upper()
    if strategy not in ALLOCATION_STRATEGIES:
        raise BalanceRequestInvalidError("allocation_strategy must be FIFO, LIFO or PROPORTIONAL")
    if indicator:
        if ledger_id != GENERAL_LEDGER_ID:
            raise BalanceRequestInvalidError("an indicator is allowed only in the general ledger")
        if not INDICATOR_NAME.match(indicator):
            raise BalanceRequestInvalidError("an indicator starts with @ and has no spaces")
    if track_fund_lineage and not identity_id:
        raise BalanceRequestInvalidError("track_fund_lineage needs an identity_id")
    if not fits_meta_data(meta_data):
        raise BalanceRequestInvalidError(f"meta_data is larger than {META_DATA_BYTES_MAX} bytes")
    await _check_balance_references(conn, ledger_id=ledger_id, identity_id=identity_id)
    try:
        async with conn.transaction():
            record = await repository.insert_balance(
                conn,
                balance_id=new_id(IdPrefix.BALANCE),
                ledger_id=ledger_id,
                currency=currency,
                identity_id=identity_id or None,
                indicator=indicator or None,
                track_fund_lineage=track_fund_lineage,
                allocation_strategy=strategy,
                meta_data=meta_data,
                created_at=now,
            )
            # The webhook event commits with the balance, or not at all (transactional outbox).
            event_id = new_id(IdPrefix.EVENT)
            await repository.insert_outbox(
                conn, None, [(event_id, "balance.created", record.balance_id, balance_json(record))]
            )
            return record
    except asyncpg.UniqueViolationError as exc:
        from ledger.errors import DuplicateIndicatorError  # noqa: PLC0415 - rare path

        raise DuplicateIndicatorError(
            f"balance {indicator} in {currency} already exists", indicator=indicator
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        # The identity was deleted after the check above, before the insert could lock it.
        if not identity_id or exc.constraint_name != repository.BALANCE_IDENTITY_FK:
            raise
        raise _unknown_identity(identity_id) from exc


async def _check_balance_references(
    conn: asyncpg.Connection, *, ledger_id: str, identity_id: str | None
) -> None:
    """The ledger a new balance is in and the identity it names, if any, both exist."""
    if not await repository.ledger_exists(conn, ledger_id):
        raise BalanceValidationError(f"ledger {ledger_id} does not exist", ledger_id=ledger_id)
    if identity_id and not await repository.identity_exists(conn, identity_id):
        raise _unknown_identity(identity_id)


def _unknown_identity(identity_id: str) -> BalanceValidationError:
    """A balance names a stored identity or none (PostgreSQL's key, migration 0118, as in
    Blnk). 400 like an unknown ledger on create: the id is in the body, not the path."""
    return BalanceValidationError(f"identity {identity_id} does not exist", identity_id=identity_id)


async def get_balance(conn: asyncpg.Connection, balance_id: str) -> BalanceRecord:
    """GET /balances/{id}."""
    record = await repository.find_balance(conn, balance_id)
    if record is None:
        raise BalanceNotFoundError(f"balance {balance_id} not found", balance_id=balance_id)
    return record


async def balance_body(
    conn: asyncpg.Connection, record: BalanceRecord, *, with_queued: bool, include: set[str]
) -> dict[str, Any]:
    """A balance with the parts `include` asks for (identity, ledger)."""
    body = balance_json(record, with_queued=with_queued)
    if "identity" in include and record.identity_id:
        from ledger.identities import identity_json  # noqa: PLC0415 - identities are optional

        identity = await repository.find_identity(conn, record.identity_id)
        if identity is not None:
            body["identity"] = identity_json(identity)
    if "ledger" in include:
        row = await repository.find_ledger(conn, record.ledger_id)
        if row is not None:
            body["ledger"] = ledger_json(row)
    return body


async def get_balance_by_indicator(
    conn: asyncpg.Connection, indicator: str, currency: str
) -> BalanceRecord:
    """GET /balances/indicator/{indicator}/currency/{currency}."""
    record = await repository.find_balance_by_indicator(conn, indicator, currency)
    if record is None:
        raise BalanceNotFoundError(f"balance {indicator} in {currency} not found")
    return record


async def balance_at(
    conn: asyncpg.Connection, balance_id: str, at: datetime, *, from_source: bool
) -> dict[str, Any]:
    """GET /balances/{id}/at: the balance as of `at`, replayed from transactions."""
    record = await get_balance(conn, balance_id)
    figures = await repository.balance_at(conn, balance_id, at)
    credit, debit = figures if figures is not None else (0, 0)
    return {
        "balance": {
            "balance": credit - debit,
            "credit_balance": credit,
            "debit_balance": debit,
            "currency": record.currency,
            "balance_id": balance_id,
        },
        "timestamp": timestamp(at),
        "from_source": from_source,
    }


async def set_balance_identity(conn: asyncpg.Connection, balance_id: str, identity_id: str) -> None:
    """PUT /balances/{id}/identity: the balance in the path is looked up first (404), then the
    identity in the body (400), as PostgreSQL's key would answer them."""
    if not identity_id:
        raise BalanceValidationError("identity_id is required")
    if await repository.find_balance(conn, balance_id) is None:
        raise BalanceNotFoundError(f"balance {balance_id} not found", balance_id=balance_id)
    if not await repository.identity_exists(conn, identity_id):
        raise _unknown_identity(identity_id)
    try:
        updated = await repository.set_balance_identity(conn, balance_id, identity_id)
    except asyncpg.ForeignKeyViolationError as exc:
        # The identity was deleted after the check above, before the update could lock it.
        if exc.constraint_name != repository.BALANCE_IDENTITY_FK:
            raise
        raise _unknown_identity(identity_id) from exc
    if not updated:
        raise BalanceNotFoundError(f"balance {balance_id} not found", balance_id=balance_id)


async def get_transaction(conn: asyncpg.Connection, transaction_id: str) -> TransactionRecord:
    """GET /transactions/{id}."""
    record = await repository.find_transaction(conn, transaction_id)
    if record is None:
        raise TransactionNotFoundError(
            f"transaction {transaction_id} not found", transaction_id=transaction_id
        )
    return record


async def get_transaction_by_reference(
    conn: asyncpg.Connection, reference: str
) -> TransactionRecord:
    """GET /transactions/reference/{reference}."""
    record = await repository.find_transaction_by_reference(conn, reference)
    if record is None:
        raise TransactionNotFoundError(f"transaction with reference {reference} not found")
    return record


_LIST_COLUMNS: Final = {
    "ledgers": "ledger_id, name, meta_data, created_at",
    "balances": "*",
    "transactions": "*",
    "identities": "*",
}


async def list_collection(
    conn: asyncpg.Connection,
    name: str,
    query: Query,
    *,
    joiner: str = "AND",
    limit: int,
    offset: int,
    sort_by: str | None = None,
    sort_order: str = "desc",
    include_count: bool = False,
) -> list[dict[str, Any]] | dict[str, Any]:
    """A page of a collection, as Blnk returns lists (or `{data, total_count}`)."""
    collection = COLLECTIONS[name]
    select, count_sql, args = sql_for(
        collection,
        query,
        joiner=joiner,
        sort_by=sort_by,
        sort_order=sort_order,
        limit=limit,
        offset=offset,
        columns=_LIST_COLUMNS[name],
    )
    rows = await repository.fetch_rows(conn, select, args)
    data = [_row_json(name, row) for row in rows]
    if not include_count:
        return data
    return {"data": data, "total_count": await repository.fetch_count(conn, count_sql, args)}


def _row_json(name: str, row: asyncpg.Record) -> dict[str, Any]:
    if name == "ledgers":
        return ledger_json(row)
    if name == "balances":
        return balance_json(repository.balance_from_row(row))
    if name == "transactions":
        return transaction_json(repository.transaction_from_row(row))
    from ledger.identities import identity_json  # noqa: PLC0415 - identities are optional

    return identity_json(row)


def filter_query(name: str, filters: list[Any]) -> Query:
    """A FilterRequest's conditions."""
    query = Query()
    for item in filters:
        add_condition(
            query, COLLECTIONS[name], item.field, item.operator, item.value, values=item.values
        )
    return query


_ENTITY_PREFIX = re.compile(r"^(txn|bulk|ldg|bln|idt)_")


async def merge_metadata(
    conn: asyncpg.Connection, entity_id: str, meta_data: dict[str, Any]
) -> dict[str, Any]:
    """POST /{entity_id}/metadata: merge keys into the entity's metadata."""
    match = _ENTITY_PREFIX.match(entity_id)
    if match is None:
        raise MetadataInvalidEntityError(f"cannot tell the entity type of {entity_id!r}")
    merged = await repository.merge_metadata(conn, match.group(1), entity_id, meta_data)
    if merged is None:
        raise MetadataEntityNotFoundError(f"entity {entity_id} not found")
    # Checked after the merge, which the caller's transaction then rolls back: the bound is
    # on what the entity ends up holding, however many merges built it.
    if not fits_meta_data(merged):
        raise LedgerValidationError(f"meta_data would be larger than {META_DATA_BYTES_MAX} bytes")
    return merged
