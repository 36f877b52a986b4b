"""Every SQL statement of search: the searchable fields of each collection, the query built from
a parsed search (whitelisted identifiers, bound values), the reindex log.

Searches run read-only with a statement timeout, so a search that would scan too much is
cancelled instead of holding a connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import InvalidOperation
from typing import Any, Final

import asyncpg

from kit.errors import InvariantError
from kit.money import InvalidAmountError, parse_decimal
from ledger.filters import Kind, Query
from ledger.search_filter import Both, Either, Node
from ledger.surface_errors import SearchQueryInvalidError, SearchTimeoutError

EXACT_COUNT_ROWS_MAX: Final = 100_000  # above this, `out_of` is PostgreSQL's row estimate
_META_KEY = re.compile(r"^meta_data\.([A-Za-z0-9_\-]{1,64})$")
_UNIX = re.compile(r"^-?\d{1,12}(\.\d+)?$")
_COMPARISONS: Final = {
    "match": "=",
    "eq": "=",
    "ne": "IS DISTINCT FROM",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
}


@dataclass(frozen=True, slots=True)
class SearchTable:
    """A searchable collection: its table, id column, and fields (name -> SQL, kind)."""

    table: str
    id_column: str
    fields: dict[str, tuple[str, Kind]]
    text_fields: tuple[str, ...]  # what `q` searches when `query_by` is not given


def _plain(kinds: dict[str, Kind]) -> dict[str, tuple[str, Kind]]:
    return {name: (name, kind) for name, kind in kinds.items()}


_T, _N, _D, _B = Kind.TEXT, Kind.NUMBER, Kind.TIME, Kind.BOOL

SEARCH_TABLES: Final[dict[str, SearchTable]] = {
    "ledgers": SearchTable(
        "ledger.ledgers",
        "ledger_id",
        _plain({"ledger_id": _T, "name": _T, "created_at": _D}),
        ("name", "ledger_id"),
    ),
    "balances": SearchTable(
        "ledger.balances",
        "balance_id",
        _plain(
            {
                "balance_id": _T,
                "ledger_id": _T,
                "identity_id": _T,
                "indicator": _T,
                "currency": _T,
                "balance": _N,
                "credit_balance": _N,
                "debit_balance": _N,
                "inflight_balance": _N,
                "inflight_credit_balance": _N,
                "inflight_debit_balance": _N,
                "version": _N,
                "created_at": _D,
                "inflight_expires_at": _D,
            }
        ),
        ("balance_id", "indicator", "currency", "ledger_id", "identity_id"),
    ),
    "transactions": SearchTable(
        "ledger.transactions",
        "transaction_id",
        {
            **_plain(
                {
                    "transaction_id": _T,
                    "parent_transaction": _T,
                    "source": _T,
                    "destination": _T,
                    "reference": _T,
                    "currency": _T,
                    "description": _T,
                    "status": _T,
                    "hash": _T,
                    "precise_amount": _N,
                    "precision": _N,
                    "allow_overdraft": _B,
                    "inflight": _B,
                    "created_at": _D,
                    "scheduled_for": _D,
                    "inflight_expiry_date": _D,
                }
            ),
            "amount": ("(precise_amount / precision)", _N),
            "effective_date": ("coalesce(effective_date, created_at)", _D),
        },
        ("reference", "description", "transaction_id", "source", "destination"),
    ),
    "identities": SearchTable(
        "ledger.identities",
        "identity_id",
        _plain(
            {
                "identity_id": _T,
                "identity_type": _T,
                "organization_name": _T,
                "category": _T,
                "first_name": _T,
                "last_name": _T,
                "other_names": _T,
                "gender": _T,
                "email_address": _T,
                "phone_number": _T,
                "nationality": _T,
                "street": _T,
                "country": _T,
                "state": _T,
                "post_code": _T,
                "city": _T,
                "dob": _D,
                "created_at": _D,
            }
        ),
        ("first_name", "last_name", "organization_name", "email_address", "identity_id"),
    ),
}


def _invalid(message: str) -> SearchQueryInvalidError:
    return SearchQueryInvalidError(message)


def resolve_field(table: SearchTable, name: str) -> tuple[str, Kind]:
    """The SQL expression and kind of a field (`id` and `meta_data.<key>` included)."""
    if name == "id":
        return table.id_column, Kind.TEXT
    meta = _META_KEY.match(name)
    if meta is not None:
        return f"(meta_data ->> '{meta.group(1)}')", Kind.TEXT
    found = table.fields.get(name)
    if found is None:
        raise _invalid(f"unknown field {name[:64]!r}")
    return found


def _time(value: str) -> datetime:
    """Unix seconds (how Blnk's documents hold times) or RFC 3339 with an offset."""
    if _UNIX.match(value):
        return datetime.fromtimestamp(float(value), UTC)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value} has no UTC offset")
    # PostgreSQL stores the UTC instant: 0001-01-01T00:00:00+14:00 has none (OverflowError).
    return moment.astimezone(UTC)


_CONVERTERS: Final[dict[Kind, Callable[[str], Any]]] = {
    Kind.TEXT: str,
    Kind.NUMBER: parse_decimal,  # finite and bounded: 1E+999999999 is refused, not encoded
    Kind.BOOL: lambda value: {"true": True, "false": False}[value.lower()],
    Kind.TIME: _time,
}


def _coerce(value: str, kind: Kind, name: str) -> Any:
    try:
        converted = _CONVERTERS[kind](value)
    except (InvalidAmountError, InvalidOperation, KeyError, ValueError, OverflowError) as exc:
        raise _invalid(f"invalid value {value[:64]!r} for {name}") from exc
    return converted


def _escaped_like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def compile_filter(table: SearchTable, node: Node, query: Query) -> str:
    """The SQL condition of a parsed `filter_by`, its values bound in `query`."""
    if isinstance(node, Both | Either):
        joiner = " AND " if isinstance(node, Both) else " OR "
        return "(" + joiner.join(compile_filter(table, part, query) for part in node.parts) + ")"
    expr, kind = resolve_field(table, node.field)
    values = [_coerce(value, kind, node.field) for value in node.values]
    if node.op == "match" and kind is Kind.TEXT:
        return f"{expr} ILIKE {query.bind(_escaped_like(values[0]))}"
    if node.op in _COMPARISONS:
        return f"{expr} {_COMPARISONS[node.op]} {query.bind_as(values[0], kind)}"
    if node.op in {"in", "not_in"}:
        member = f"coalesce({expr} = ANY({query.bind_as(values, kind, is_list=True)}), false)"
        return member if node.op == "in" else f"NOT {member}"
    # The parser makes no other operator: what is left is a list of ranges.
    pairs = zip(values[::2], values[1::2], strict=True)
    ranges = [
        f"{expr} BETWEEN {query.bind_as(low, kind)} AND {query.bind_as(high, kind)}"
        for low, high in pairs
    ]
    return "(" + " OR ".join(ranges) + ")"


def compile_text(
    table: SearchTable, fields: Sequence[str], terms: Sequence[str], query: Query
) -> str:
    """Every term of `q` appears (case-insensitively) in one of `fields`."""
    columns = [resolve_field(table, name)[0] for name in fields]
    per_term = []
    for term in terms:
        placeholder = query.bind(_escaped_like(term))
        per_term.append(
            "(" + " OR ".join(f"{column}::text ILIKE {placeholder}" for column in columns) + ")"
        )
    return " AND ".join(per_term)


def search_sql(
    table: SearchTable,
    query: Query,
    *,
    order_by: Sequence[tuple[str, bool]],
    limit: int,
    offset: int,
) -> tuple[str, str]:
    """(select, count) for `query`'s conditions; `order_by` holds (SQL expression, descending)
    pairs taken from `table.fields`, so every identifier comes from the whitelist above."""
    where = f" WHERE {' AND '.join(query.conditions)}" if query.conditions else ""
    order = ", ".join(f"{expr} {'DESC' if descending else 'ASC'}" for expr, descending in order_by)
    order = f"{order}, {table.id_column} ASC" if order else f"{table.id_column} ASC"
    select = (
        f"SELECT * FROM {table.table}{where} ORDER BY {order}"  # noqa: S608 - whitelisted identifiers, bound values
        f" LIMIT {int(limit)} OFFSET {int(offset)}"
    )
    count = f"SELECT count(*) FROM {table.table}{where}"  # noqa: S608 - whitelisted identifiers, bound values
    return select, count


async def run_search(
    conn: asyncpg.Connection, select: str, count: str, args: Sequence[Any], *, timeout_ms: int
) -> tuple[list[asyncpg.Record], int]:
    """The page of rows and how many rows match, read-only under a statement timeout."""
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            rows: list[asyncpg.Record] = await conn.fetch(select, *args)
            found: int = await conn.fetchval(count, *args)
    except asyncpg.QueryCanceledError as exc:
        raise SearchTimeoutError(timeout_ms=timeout_ms) from exc
    return rows, found


async def collection_size(conn: asyncpg.Connection, table: SearchTable) -> int:
    """How many documents a collection holds: exact when small, PostgreSQL's estimate when large."""
    estimate = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", table.table
    )
    if estimate is not None and estimate > EXACT_COUNT_ROWS_MAX:
        return int(estimate)
    exact: int = await conn.fetchval(f"SELECT count(*) FROM {table.table}")  # noqa: S608 - whitelisted table
    return exact


# ---------------------------------------------------------------- reindex log


REINDEX_COLUMNS: Final = (
    "status, phase, batch_size, total_records, processed_records, started_at, completed_at"
)


async def record_reindex(
    conn: asyncpg.Connection,
    *,
    batch_size: int,
    total_records: int,
    started_at: datetime,
    completed_at: datetime,
) -> asyncpg.Record:
    """Log a reindex run that had nothing to rebuild (so it is complete when it starts)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO ledger.search_reindex_runs (status, phase, batch_size, total_records,"  # noqa: S608 - constant columns
        " processed_records, started_at, completed_at)"
        " VALUES ('completed', 'completed', $1, $2, $2, $3, $4)"
        f" RETURNING {REINDEX_COLUMNS}",
        batch_size,
        total_records,
        started_at,
        completed_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def latest_reindex(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The most recent reindex run."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {REINDEX_COLUMNS} FROM ledger.search_reindex_runs"  # noqa: S608 - constant columns
        " ORDER BY run_id DESC LIMIT 1"
    )
    return row
