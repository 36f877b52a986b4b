"""Search in Typesense's shape, answered from PostgreSQL.

Blnk passes `/search/{collection}` through to Typesense; here the same parameters are answered
from the ledger's tables, so search is never behind the record and needs no second store:

- `q` (`*` for everything) with `query_by` (comma-separated fields; a default set per
  collection when absent): every whitespace-separated term must appear, case-insensitively, in
  one of the fields (Typesense matches tokens; this is a substring match, a superset);
- `filter_by` in Typesense's syntax (`ledger.search_filter`), `sort_by` (up to three
  `field:asc|desc`; `_text_match` is accepted and ignored), `page` (from 1) and `per_page`
  (1-250, default 10). Other Typesense parameters are ignored.

The answer is Typesense's: `{found, out_of, page, hits: [{document, highlights: [], ...}],
search_time_ms, request_params, facet_counts: []}`, with documents as Blnk indexes them:
amounts (big integers) as decimal strings, times as unix seconds, an `id` field. `out_of` is
exact for small collections and PostgreSQL's estimate past 100,000 rows.

A reindex has nothing to rebuild; it is logged as completed with the number of documents it
covers, so `GET /search/reindex` answers truthfully on every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from kit.clock import Clock
from ledger import repository, search_repository
from ledger.errors import MalformedRequestError
from ledger.filters import Query
from ledger.identities import identity_json
from ledger.schemas import validate_body
from ledger.search_filter import parse_filter
from ledger.search_repository import SEARCH_TABLES, SearchTable
from ledger.service import ledger_json
from ledger.surface_errors import ReindexNotStartedError, SearchQueryInvalidError
from ledger.wire import balance_json, timestamp, transaction_json

PER_PAGE_DEFAULT: Final = 10  # Typesense's default
PER_PAGE_MAX: Final = 250  # Typesense's limit
PAGE_MAX: Final = 4_000  # page * per_page stays under a million rows of OFFSET
QUERY_LENGTH_MAX: Final = 512
QUERY_TERMS_MAX: Final = 8
QUERY_BY_FIELDS_MAX: Final = 16
SORT_FIELDS_MAX: Final = 3  # Typesense's limit
MULTI_SEARCHES_MAX: Final = 50
SEARCH_STATEMENT_TIMEOUT_MS: Final = 5_000
REINDEX_BATCH_SIZE_DEFAULT: Final = 1_000  # Blnk's default
REINDEX_BATCH_SIZE_MAX: Final = 10_000
_SORT_DIRECTIONS: Final = {"asc": False, "desc": True}
_BIG_INT_FIELDS: Final = {
    "balances": (
        "balance",
        "credit_balance",
        "debit_balance",
        "inflight_balance",
        "inflight_credit_balance",
        "inflight_debit_balance",
    ),
    "transactions": ("precise_amount",),
}
_TIME_FIELDS: Final = {
    "ledgers": ("created_at",),
    "balances": ("created_at", "inflight_expires_at"),
    "transactions": (
        "created_at",
        "scheduled_for",
        "inflight_expiry_date",
        "inflight_commit_date",
        "effective_date",
    ),
    "identities": ("created_at", "dob"),
}


class SearchIn(BaseModel):
    """Typesense search parameters (the ones answered; the rest are ignored)."""

    model_config = ConfigDict(extra="ignore")

    q: str = Field(default="*", max_length=QUERY_LENGTH_MAX)
    query_by: str = Field(default="", max_length=1024)
    filter_by: str = Field(default="", max_length=8192)
    sort_by: str = Field(default="", max_length=512)
    page: int = 1
    per_page: int = PER_PAGE_DEFAULT


class ReindexIn(BaseModel):
    """POST /search/reindex."""

    model_config = ConfigDict(extra="ignore")

    batch_size: int = 0


def _table(collection: str) -> SearchTable:
    table = SEARCH_TABLES.get(collection)
    if table is None:
        raise SearchQueryInvalidError(
            f"unknown collection {collection[:64]!r}: ledgers, balances, transactions or identities"
        )
    return table


def _unix(value: str) -> int:
    """Seconds since the epoch of an RFC 3339 time (0 for Go's zero time)."""
    moment = datetime.fromisoformat(value)
    return 0 if moment.year == 1 else int(moment.timestamp())


_SHAPERS: Final[dict[str, Callable[[Any], dict[str, Any]]]] = {
    "ledgers": ledger_json,
    "balances": lambda row: balance_json(repository.balance_from_row(row)),
    "transactions": lambda row: transaction_json(repository.transaction_from_row(row)),
    "identities": identity_json,
}


def document(collection: str, row: asyncpg.Record) -> dict[str, Any]:
    """A row as Blnk indexes it in Typesense: string amounts, unix times, an `id`."""
    doc = _SHAPERS[collection](row)
    for name in _BIG_INT_FIELDS.get(collection, ()):
        doc[name] = str(doc[name])
    for name in _TIME_FIELDS[collection]:
        if name in doc:
            doc[name] = _unix(doc[name])
    doc["id"] = doc[SEARCH_TABLES[collection].id_column]
    return doc


def _check_paging(params: SearchIn) -> None:
    if not 1 <= params.page <= PAGE_MAX:
        raise SearchQueryInvalidError(f"page must be 1 to {PAGE_MAX}")
    if not 1 <= params.per_page <= PER_PAGE_MAX:
        raise SearchQueryInvalidError(f"per_page must be 1 to {PER_PAGE_MAX}")


def _conditions(table: SearchTable, params: SearchIn) -> Query:
    query = Query()
    terms = [] if params.q.strip() in {"", "*"} else params.q.split()
    if len(terms) > QUERY_TERMS_MAX:
        raise SearchQueryInvalidError(f"q holds at most {QUERY_TERMS_MAX} terms")
    if terms:
        fields = [f.strip() for f in params.query_by.split(",") if f.strip()] or list(
            table.text_fields
        )
        if len(fields) > QUERY_BY_FIELDS_MAX:
            raise SearchQueryInvalidError(f"query_by names at most {QUERY_BY_FIELDS_MAX} fields")
        query.conditions.append(search_repository.compile_text(table, fields, terms, query))
    node = parse_filter(params.filter_by)
    if node is not None:
        query.conditions.append(search_repository.compile_filter(table, node, query))
    return query


def _order(table: SearchTable, sort_by: str) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for part in (p.strip() for p in sort_by.split(",") if p.strip()):
        name, _, direction = part.partition(":")
        if name == "_text_match":
            continue
        descending = _SORT_DIRECTIONS.get(direction.strip().lower() or "asc")
        if descending is None:
            raise SearchQueryInvalidError(f"sort_by: {part[:64]!r} must end in :asc or :desc")
        order.append((search_repository.resolve_field(table, name.strip())[0], descending))
    if len(order) > SORT_FIELDS_MAX:
        raise SearchQueryInvalidError(f"sort_by names at most {SORT_FIELDS_MAX} fields")
    # Typesense's default, newest first, also when `_text_match` alone was asked for.
    return order or [(table.fields["created_at"][0], True)]


async def search(
    conn: asyncpg.Connection, collection: str, params: SearchIn, *, clock: Clock
) -> dict[str, Any]:
    """One search, answered as Typesense answers it."""
    started_s = clock.monotonic()
    table = _table(collection)
    _check_paging(params)
    query = _conditions(table, params)
    select, count = search_repository.search_sql(
        table,
        query,
        order_by=_order(table, params.sort_by),
        limit=params.per_page,
        offset=(params.page - 1) * params.per_page,
    )
    rows, found = await search_repository.run_search(
        conn, select, count, query.args, timeout_ms=SEARCH_STATEMENT_TIMEOUT_MS
    )
    out_of = await search_repository.collection_size(conn, table)
    return {
        "facet_counts": [],
        "found": found,
        "hits": [
            {
                "document": document(collection, row),
                "highlight": {},
                "highlights": [],
                "text_match": 0,
            }
            for row in rows
        ],
        "out_of": max(out_of, found),
        "page": params.page,
        "request_params": {
            "collection_name": collection,
            "first_q": params.q,
            "per_page": params.per_page,
            "q": params.q,
        },
        "search_cutoff": False,
        "search_time_ms": int((clock.monotonic() - started_s) * 1000),
    }


async def multi_search(
    conn: asyncpg.Connection, searches: list[dict[str, Any]], *, clock: Clock
) -> dict[str, Any]:
    """Several searches; one that fails answers `{code, error}` in its place, as Typesense's."""
    if not 1 <= len(searches) <= MULTI_SEARCHES_MAX:
        raise SearchQueryInvalidError(f"searches must hold 1 to {MULTI_SEARCHES_MAX} searches")
    results: list[dict[str, Any]] = []
    for entry in searches:
        collection = str(entry.get("collection", ""))
        if collection not in SEARCH_TABLES:
            results.append({"code": 404, "error": f"Collection `{collection[:64]}` not found."})
            continue
        try:
            params = validate_body(SearchIn, entry)
            results.append(await search(conn, collection, params, clock=clock))
        except (SearchQueryInvalidError, MalformedRequestError) as exc:
            results.append({"code": 400, "error": exc.message})
    return {"results": results}


# ---------------------------------------------------------------- reindex


def _progress(row: asyncpg.Record) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": row["status"],
        "phase": row["phase"],
        "total_records": row["total_records"],
        "processed_records": row["processed_records"],
        "started_at": timestamp(row["started_at"]),
        "paused": False,
    }
    if row["completed_at"] is not None:
        body["completed_at"] = timestamp(row["completed_at"])
    return body


async def start_reindex(
    conn: asyncpg.Connection, batch_size: int, *, now: datetime
) -> dict[str, Any]:
    """POST /search/reindex: nothing to rebuild; the run is logged as complete."""
    size = batch_size if batch_size > 0 else REINDEX_BATCH_SIZE_DEFAULT
    if size > REINDEX_BATCH_SIZE_MAX:
        raise SearchQueryInvalidError(f"batch_size is at most {REINDEX_BATCH_SIZE_MAX}")
    total = 0
    for table in SEARCH_TABLES.values():
        total += await search_repository.collection_size(conn, table)
    row = await search_repository.record_reindex(
        conn, batch_size=size, total_records=total, started_at=now, completed_at=now
    )
    return {
        "message": "Reindex completed: search reads the ledger's tables directly, so nothing needed rebuilding",
        "progress": _progress(row),
    }


async def reindex_progress(conn: asyncpg.Connection) -> dict[str, Any]:
    """GET /search/reindex."""
    row = await search_repository.latest_reindex(conn)
    if row is None:
        raise ReindexNotStartedError()
    return _progress(row)
