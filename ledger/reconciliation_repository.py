"""Every SQL statement of reconciliation: uploads, external records, matching rules, runs,
matches, and the ledger candidates a run compares against."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg

from kit.errors import InvariantError
from ledger.matching import Bounds

RULE_COLUMNS: Final = "rule_id, name, description, criteria, created_at, updated_at"
RUN_COLUMNS: Final = (
    "reconciliation_id, upload_id, strategy, grouping_criteria, matching_rule_ids, rules,"
    " is_dry_run, status, processed_count, matched_transactions, unmatched_transactions, error,"
    " started_at, updated_at, completed_at"
)
EXTERNAL_COLUMNS: Final = (
    "position, external_id, amount, reference, currency, description, occurred_at, source"
)
# What a ledger group may be keyed by (grouping_criteria), as SQL over ledger.transactions.
LEDGER_GROUP_KEYS: Final = {
    "reference": "reference",
    "description": "description",
    "currency": "currency",
    "source": "source",
    "destination": "destination",
    "parent_transaction": "parent_transaction",
    "date": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}
CANDIDATE_STATEMENT_TIMEOUT_MS: Final = 10_000


# ---------------------------------------------------------------- uploads


async def insert_upload(
    conn: asyncpg.Connection,
    *,
    upload_id: str,
    source: str,
    file_name: str,
    records: Sequence[tuple[Any, ...]],
    created_at: datetime,
) -> None:
    """Store an upload and its records (position, id, amount, reference, currency, description,
    occurred_at, source), in one round trip for the records."""
    await conn.execute(
        "INSERT INTO ledger.reconciliation_uploads (upload_id, source, file_name, record_count,"
        " created_at) VALUES ($1, $2, $3, $4, $5)",
        upload_id,
        source,
        file_name,
        len(records),
        created_at,
    )
    await conn.copy_records_to_table(
        "external_transactions",
        schema_name="ledger",
        records=[(upload_id, *record) for record in records],
        columns=["upload_id", *(c.strip() for c in EXTERNAL_COLUMNS.split(","))],
    )


async def upload_record_count(conn: asyncpg.Connection, upload_id: str) -> int | None:
    """How many records an upload holds (None when there is no such upload)."""
    count: int | None = await conn.fetchval(
        "SELECT record_count FROM ledger.reconciliation_uploads WHERE upload_id = $1", upload_id
    )
    return count


async def external_records(
    conn: asyncpg.Connection, upload_id: str, *, after_position: int, limit: int
) -> list[asyncpg.Record]:
    """The next records of an upload, in file order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {EXTERNAL_COLUMNS} FROM ledger.external_transactions"  # noqa: S608 - constant columns
        " WHERE upload_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        upload_id,
        after_position,
        limit,
    )
    return rows


# ---------------------------------------------------------------- matching rules


async def insert_rule(
    conn: asyncpg.Connection,
    *,
    rule_id: str,
    name: str,
    description: str,
    criteria: list[dict[str, Any]],
    now: datetime,
) -> asyncpg.Record:
    """Save a matching rule."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO ledger.matching_rules (rule_id, name, description, criteria, created_at,"  # noqa: S608 - constant columns
        f" updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING {RULE_COLUMNS}",
        rule_id,
        name,
        description,
        criteria,
        now,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def replace_rule(
    conn: asyncpg.Connection,
    rule_id: str,
    *,
    name: str,
    description: str,
    criteria: list[dict[str, Any]],
    now: datetime,
) -> asyncpg.Record | None:
    """Overwrite a rule (runs already started keep the copy they took)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE ledger.matching_rules SET name = $2, description = $3, criteria = $4,"  # noqa: S608 - constant columns
        f" updated_at = greatest($5, created_at) WHERE rule_id = $1 RETURNING {RULE_COLUMNS}",
        rule_id,
        name,
        description,
        criteria,
        now,
    )
    return row


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> bool:
    """Remove a rule; False when there was none."""
    status: str = await conn.execute(
        "DELETE FROM ledger.matching_rules WHERE rule_id = $1", rule_id
    )
    return status.endswith(" 1")


async def find_rules(conn: asyncpg.Connection, rule_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The rules with these ids (missing ones are simply absent)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {RULE_COLUMNS} FROM ledger.matching_rules WHERE rule_id = ANY($1::text[])",  # noqa: S608 - constant columns
        list(rule_ids),
    )
    return rows


# ---------------------------------------------------------------- runs


async def insert_run(
    conn: asyncpg.Connection,
    *,
    reconciliation_id: str,
    upload_id: str,
    strategy: str,
    grouping_criteria: str,
    matching_rule_ids: Sequence[str],
    rules: list[dict[str, Any]],
    is_dry_run: bool,
    now: datetime,
) -> None:
    """Record a run that has not begun."""
    await conn.execute(
        "INSERT INTO ledger.reconciliations (reconciliation_id, upload_id, strategy,"
        " grouping_criteria, matching_rule_ids, rules, is_dry_run, status, started_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, 'started', $8, $8)",
        reconciliation_id,
        upload_id,
        strategy,
        grouping_criteria,
        list(matching_rule_ids),
        rules,
        is_dry_run,
        now,
    )


async def find_run(conn: asyncpg.Connection, reconciliation_id: str) -> asyncpg.Record | None:
    """A run by id."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM ledger.reconciliations WHERE reconciliation_id = $1",  # noqa: S608 - constant columns
        reconciliation_id,
    )
    return row


async def mark_in_progress(conn: asyncpg.Connection, reconciliation_id: str, now: datetime) -> None:
    """The run has begun."""
    await conn.execute(
        "UPDATE ledger.reconciliations SET status = 'in_progress', updated_at = $2"
        " WHERE reconciliation_id = $1 AND status = 'started'",
        reconciliation_id,
        now,
    )


async def add_progress(
    conn: asyncpg.Connection,
    reconciliation_id: str,
    *,
    processed: int,
    matched: int,
    now: datetime,
) -> None:
    """Count records the run has decided (matched or not)."""
    await conn.execute(
        "UPDATE ledger.reconciliations SET processed_count = processed_count + $2,"
        " matched_transactions = matched_transactions + $3,"
        " unmatched_transactions = unmatched_transactions + $2 - $3, updated_at = $4"
        " WHERE reconciliation_id = $1",
        reconciliation_id,
        processed,
        matched,
        now,
    )


async def beat(conn: asyncpg.Connection, reconciliation_ids: Sequence[str], now: datetime) -> None:
    """The runner holding these runs is alive."""
    await conn.execute(
        "UPDATE ledger.reconciliations SET heartbeat_at = $2"
        " WHERE reconciliation_id = ANY($1::text[]) AND status IN ('started', 'in_progress')",
        list(reconciliation_ids),
        now,
    )


async def fail_silent_runs(
    conn: asyncpg.Connection, *, now: datetime, silent_since: datetime, error: str
) -> list[str]:
    """Mark failed the unfinished runs whose runner has not beaten since `silent_since`."""
    rows = await conn.fetch(
        "UPDATE ledger.reconciliations SET status = 'failed', error = $3, completed_at = $1,"
        " updated_at = $1 WHERE status IN ('started', 'in_progress') AND heartbeat_at < $2"
        " RETURNING reconciliation_id",
        now,
        silent_since,
        error,
    )
    return [row["reconciliation_id"] for row in rows]


async def finish_run(
    conn: asyncpg.Connection, reconciliation_id: str, *, now: datetime, error: str | None
) -> None:
    """Completed, or failed with a reason."""
    await conn.execute(
        "UPDATE ledger.reconciliations SET status = $2, error = $3, completed_at = $4, updated_at = $4"
        " WHERE reconciliation_id = $1",
        reconciliation_id,
        "failed" if error is not None else "completed",
        error,
        now,
    )


async def insert_matches(
    conn: asyncpg.Connection,
    reconciliation_id: str,
    strategy: str,
    matches: Sequence[tuple[str, str, Decimal]],
    now: datetime,
) -> None:
    """Record (external id, ledger transaction id, amount) matches."""
    if not matches:
        return
    await conn.copy_records_to_table(
        "reconciliation_matches",
        schema_name="ledger",
        records=[(reconciliation_id, strategy, e, i, amount, now) for e, i, amount in matches],
        columns=[
            "reconciliation_id",
            "strategy",
            "external_id",
            "internal_transaction_id",
            "amount",
            "matched_at",
        ],
    )


async def mark_reconciled(conn: asyncpg.Connection, notes: dict[str, dict[str, Any]]) -> None:
    """Merge reconciliation notes into matched transactions' metadata (Blnk's `reconciled` keys)."""
    if not notes:
        return
    ids = sorted(notes)
    await conn.execute(
        "UPDATE ledger.transactions t SET meta_data = t.meta_data || n.note"
        " FROM unnest($1::text[], $2::jsonb[]) AS n(id, note) WHERE t.transaction_id = n.id",
        ids,
        [notes[i] for i in ids],
    )


async def match_rows(conn: asyncpg.Connection, reconciliation_id: str) -> list[asyncpg.Record]:
    """A run's matches (for tests and audits)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT external_id, internal_transaction_id, amount FROM ledger.reconciliation_matches"
        " WHERE reconciliation_id = $1 ORDER BY external_id, internal_transaction_id",
        reconciliation_id,
    )
    return rows


# ---------------------------------------------------------------- ledger candidates


async def candidates(
    conn: asyncpg.Connection,
    bounds: Bounds,
    *,
    closest_to: Decimal | None,
    closest_at: datetime | None,
    group_key: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Applied ledger transactions within `bounds`: closest in amount to `closest_to` first,
    then closest in time to `closest_at`, then newest; each with its grouping value when
    `group_key` names one (`LEDGER_GROUP_KEYS`, or `meta_data.<key>`). Amounts come in minor
    units with their precision: PostgreSQL's division keeps only about 16 significant digits,
    so the major-unit amount is the caller's to compute exactly."""
    meta_key = (
        group_key.removeprefix("meta_data.")
        if group_key and group_key.startswith("meta_data.")
        else None
    )
    group_column = LEDGER_GROUP_KEYS.get(group_key or "", "NULL::text")
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {CANDIDATE_STATEMENT_TIMEOUT_MS}")
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT transaction_id, precise_amount, precision, currency, reference,"  # noqa: S608 - whitelisted expressions
            " description, parent_transaction, created_at,"
            f" CASE WHEN $8::text IS NULL THEN {group_column} ELSE meta_data ->> $8::text END AS group_value"
            " FROM ledger.transactions WHERE status = 'APPLIED'"
            " AND ($1::numeric IS NULL OR precise_amount >= $1 * precision)"
            " AND ($2::numeric IS NULL OR precise_amount <= $2 * precision)"
            " AND ($3::timestamptz IS NULL OR created_at >= $3)"
            " AND ($4::timestamptz IS NULL OR created_at <= $4)"
            " AND ($5::text IS NULL OR upper(currency) = upper($5))"
            " ORDER BY CASE WHEN $7::numeric IS NULL THEN 0"
            " ELSE abs(precise_amount - $7::numeric * precision) / precision END,"
            " CASE WHEN $9::timestamptz IS NULL THEN 0"
            " ELSE abs(extract(epoch FROM created_at - $9::timestamptz)) END,"
            " created_at DESC, transaction_id"
            " LIMIT $6",
            bounds.amount_low,
            bounds.amount_high,
            bounds.date_low,
            bounds.date_high,
            bounds.currency,
            limit,
            closest_to,
            meta_key,
            closest_at,
        )
    return rows
