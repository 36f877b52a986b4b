"""Runs reconciliations in the background and records what they find.

A run compares the records of one upload with the ledger's APPLIED transactions (the rows that
moved money; a queued request's `_q` copy is compared under its original reference) using its
rules (`ledger.matching`). For each record, the rules' bounds (amount, date, currency) select at
most `CANDIDATES_MAX` ledger transactions (closest in amount first, then closest in time, then
newest), and the first one the rules accept is taken. Dates compare with the ledger's `created_at` (indexed), as Blnk's do.

- **one_to_one**: each external record matches at most one transaction and each transaction at
  most one record, in file order (greedy and deterministic). Both halves are enforced in memory
  and again by unique indexes on the match rows.
- **one_to_many**: one external record matches a group of transactions sharing
  `grouping_criteria` (reference, description, currency, source, destination,
  parent_transaction, date, or `meta_data.<key>`) whose sum, earliest date and members' text
  satisfy the rules; a transaction joins at most one group.
- **many_to_one**: the upload's records are grouped by `grouping_criteria` (reference,
  description, currency, source or date; a record with an empty key stands alone) and each
  group's aggregate is matched to one transaction, which no other group may take.

Counts are of external records: `matched_transactions + unmatched_transactions` = records
processed. Progress is written every `CHUNK_RECORDS` records, in the same database transaction
as that chunk's match rows and the `reconciled` notes merged into the matched transactions'
metadata (Blnk's keys: reconciled, reconciliation_id, reconciled_at, external_txn_id,
reconciliation_amount). A dry run writes only the counts. Runs execute on the replica that
started them, at most `RUNS_CONCURRENT_MAX` at a time. The runner beats on every run it holds
(queued or running) every `HEARTBEAT_INTERVAL_S`; a run interrupted by a restart stops
beating, and `fail_interrupted_runs` (the scheduler actor calls it) marks it failed after
`SILENT_AFTER_S` with the counts it reached (it is not resumed: start it again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import asyncpg

from kit.clock import Clock
from kit.db import Database
from kit.errors import AppError
from kit.money import exact_sum, from_minor_units
from ledger import reconciliation_repository as repository
from ledger.matching import Criterion, Side, aggregate, candidate_bounds, group_bounds, rules_hold
from ledger.reconciliation import UPLOAD_ROWS_MAX
from ledger.surface_errors import ReconciliationBackpressureError
from ledger.wire import timestamp

logger = logging.getLogger(__name__)

RUNS_CONCURRENT_MAX: Final = 2  # runs matching at once per replica
RUNS_PENDING_MAX: Final = 32  # runs started and not finished per replica; more are refused (503)
CHUNK_RECORDS: Final = 100  # records decided per progress write
CANDIDATES_MAX: Final = 1_000  # ledger transactions compared with one record or group
GROUP_CANDIDATES_MAX: Final = 5_000  # ledger transactions grouped for one record (one_to_many)
ERROR_LENGTH_MAX: Final = 1_000
QUEUED_COPY_SUFFIX: Final = "_q"
HEARTBEAT_INTERVAL_S: Final = 30.0  # how often a runner says its runs are alive
SILENT_AFTER_S: Final = 180.0  # a run not heard of for this long lost its replica
INTERRUPTED_ERROR: Final = (
    "interrupted: the replica running it stopped before it finished; start it again"
)

Match = tuple[str, Decimal]  # ledger transaction id, the amount the pair accounts for
Decision = tuple[asyncpg.Record, list[Match]]  # an external record and what it matched


@dataclass(frozen=True, slots=True)
class _Plan:
    reconciliation_id: str
    upload_id: str
    strategy: str
    grouping: str
    rules: tuple[tuple[Criterion, ...], ...]
    is_dry_run: bool


def external_side(row: asyncpg.Record) -> Side:
    """A stored external record as a side of a comparison."""
    return Side(
        amount=row["amount"],
        occurred_at=row["occurred_at"],
        currencies=(row["currency"],) if row["currency"] else (),
        references=(row["reference"],),
        descriptions=(row["description"],),
    )


def ledger_amount(row: asyncpg.Record) -> Decimal:
    """A candidate transaction's amount in major units, exact to its minor unit."""
    return from_minor_units(int(row["precise_amount"]), int(row["precision"]))


def ledger_side(row: asyncpg.Record) -> Side:
    """A candidate transaction as a side (a queued copy compared under its original reference)."""
    reference = row["reference"]
    if row["parent_transaction"] and reference.endswith(QUEUED_COPY_SUFFIX):
        reference = reference.removesuffix(QUEUED_COPY_SUFFIX)
    return Side(
        amount=ledger_amount(row),
        occurred_at=row["created_at"],
        currencies=(row["currency"],),
        references=(reference,),
        descriptions=(row["description"],),
    )


def _external_key(row: asyncpg.Record, grouping: str) -> str:
    if grouping == "date":
        return "" if row["occurred_at"] is None else row["occurred_at"].date().isoformat()
    return str(row[grouping] or "")


class ReconciliationRunner:
    """Starts runs as background tasks (bounded) and executes them."""

    def __init__(
        self, db: Database, *, clock: Clock, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    ) -> None:
        self._db = db
        self._clock = clock
        self._slots = asyncio.Semaphore(RUNS_CONCURRENT_MAX)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()  # runs launched here and not finished
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heart: asyncio.Task[None] | None = None

    def check_capacity(self) -> None:
        """Refuse a new run when too many are waiting on this replica."""
        if len(self._tasks) >= RUNS_PENDING_MAX:
            raise ReconciliationBackpressureError()

    def launch(self, reconciliation_id: str) -> None:
        """Run it in the background (the run row is already committed)."""
        task = asyncio.create_task(self.run(reconciliation_id))
        self._tasks.add(task)
        self._held.add(reconciliation_id)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._held.discard(reconciliation_id)

        task.add_done_callback(done)
        if self._heart is None or self._heart.done():
            self._heart = asyncio.create_task(self._beat_while_holding())

    async def beat(self) -> None:
        """Say that the runs held here are alive (one statement for all of them)."""
        if not self._held:
            return
        async with self._db.transaction() as conn:
            await repository.beat(conn, sorted(self._held), self._clock.now())

    async def _beat_while_holding(self) -> None:
        while self._held:
            await asyncio.sleep(self._heartbeat_interval_s)
            try:
                await self.beat()
            except (AppError, asyncpg.PostgresError, OSError):
                logger.warning("reconciliation heartbeat not recorded", exc_info=True)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the runs in flight; for shutdown and tests."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if not self._held and self._heart is not None:
            self._heart.cancel()

    async def run(self, reconciliation_id: str) -> None:
        """Execute one run and record how it ended."""
        async with self._slots:
            error: str | None = None
            try:
                await self._execute(reconciliation_id)
            # The task's last resort: whatever went wrong is recorded, so no run is left "running".
            except Exception as exc:
                logger.exception(
                    "reconciliation failed", extra={"reconciliation_id": reconciliation_id}
                )
                error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH_MAX]
            try:
                async with self._db.transaction() as conn:
                    await repository.finish_run(
                        conn, reconciliation_id, now=self._clock.now(), error=error
                    )
            except (AppError, asyncpg.PostgresError, OSError):
                # The database is gone: the run stays in_progress with the counts it reached.
                logger.exception(
                    "reconciliation end not recorded",
                    extra={"reconciliation_id": reconciliation_id},
                )

    async def _execute(self, reconciliation_id: str) -> None:
        async with self._db.transaction() as conn:
            row = await repository.find_run(conn, reconciliation_id)
            if row is None:
                raise LookupError(f"reconciliation {reconciliation_id} vanished")
            await repository.mark_in_progress(conn, reconciliation_id, self._clock.now())
        plan = _Plan(
            reconciliation_id=reconciliation_id,
            upload_id=row["upload_id"],
            strategy=row["strategy"],
            grouping=row["grouping_criteria"],
            rules=tuple(
                tuple(Criterion.from_json(c) for c in rule["criteria"]) for rule in row["rules"]
            ),
            is_dry_run=row["is_dry_run"],
        )
        if plan.strategy == "many_to_one":
            await self._many_to_one(plan)
        else:
            await self._per_record(plan)

    # ------------------------------------------------------------ strategies

    async def _per_record(self, plan: _Plan) -> None:
        claimed: set[str] = set()
        position = -1
        while True:
            async with self._db.connection() as conn:
                rows = await repository.external_records(
                    conn, plan.upload_id, after_position=position, limit=CHUNK_RECORDS
                )
                if not rows:
                    return
                position = rows[-1]["position"]
                decisions: list[Decision] = []
                for row in rows:
                    side = external_side(row)
                    if plan.strategy == "one_to_one":
                        found = await self._one_transaction(conn, plan, side, claimed)
                    else:
                        found = await self._transaction_group(conn, plan, side, claimed)
                    decisions.append((row, found))
            await self._save(plan, decisions)

    async def _one_transaction(
        self, conn: asyncpg.Connection, plan: _Plan, side: Side, claimed: set[str]
    ) -> list[Match]:
        bounds = candidate_bounds(plan.rules, side)
        if bounds is None:
            return []
        rows = await repository.candidates(
            conn,
            bounds,
            closest_to=side.amount,
            closest_at=side.occurred_at,
            group_key=None,
            limit=CANDIDATES_MAX,
        )
        for row in rows:
            if row["transaction_id"] not in claimed and rules_hold(
                plan.rules, side, ledger_side(row)
            ):
                claimed.add(row["transaction_id"])
                return [(row["transaction_id"], side.amount)]
        return []

    async def _transaction_group(
        self, conn: asyncpg.Connection, plan: _Plan, side: Side, claimed: set[str]
    ) -> list[Match]:
        bounds = group_bounds(candidate_bounds(plan.rules, side))
        if bounds is None:
            return []
        rows = await repository.candidates(
            conn,
            bounds,
            closest_to=None,
            closest_at=side.occurred_at,
            group_key=plan.grouping,
            limit=GROUP_CANDIDATES_MAX,
        )
        groups: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            if row["group_value"]:
                groups.setdefault(row["group_value"], []).append(row)
        for members in groups.values():
            if any(m["transaction_id"] in claimed for m in members):
                continue
            if rules_hold(plan.rules, side, aggregate([ledger_side(m) for m in members])):
                claimed.update(m["transaction_id"] for m in members)
                return [(m["transaction_id"], ledger_amount(m)) for m in members]
        return []

    async def _many_to_one(self, plan: _Plan) -> None:
        groups: dict[str, list[asyncpg.Record]] = {}
        position, loaded = -1, 0
        async with self._db.connection() as conn:
            while loaded < UPLOAD_ROWS_MAX:
                rows = await repository.external_records(
                    conn, plan.upload_id, after_position=position, limit=CHUNK_RECORDS * 10
                )
                if not rows:
                    break
                position, loaded = rows[-1]["position"], loaded + len(rows)
                for row in rows:
                    key = _external_key(row, plan.grouping)
                    groups.setdefault(key or f"\x00{row['position']}", []).append(row)
        claimed: set[str] = set()
        decisions: list[Decision] = []
        for members in groups.values():
            side = aggregate([external_side(m) for m in members])
            async with self._db.connection() as conn:
                found = await self._one_transaction(conn, plan, side, claimed)
            transaction_id = found[0][0] if found else None
            decisions.extend(
                (member, [(transaction_id, member["amount"])] if transaction_id else [])
                for member in members
            )
            if len(decisions) >= CHUNK_RECORDS:
                await self._save(plan, decisions)
                decisions = []
        await self._save(plan, decisions)

    # ------------------------------------------------------------ recording

    async def _save(self, plan: _Plan, decisions: Sequence[Decision]) -> None:
        """One chunk: its match rows, the matched transactions' notes, the counts; atomically."""
        if not decisions:
            return
        now = self._clock.now()
        matched = sum(1 for _, found in decisions if found)
        async with self._db.transaction() as conn:
            if not plan.is_dry_run:
                pairs = [
                    (row["external_id"], tid, amount)
                    for row, found in decisions
                    for tid, amount in found
                ]
                await repository.insert_matches(
                    conn, plan.reconciliation_id, plan.strategy, pairs, now
                )
                await repository.mark_reconciled(conn, _notes(plan.reconciliation_id, pairs, now))
            await repository.add_progress(
                conn, plan.reconciliation_id, processed=len(decisions), matched=matched, now=now
            )


def _notes(
    reconciliation_id: str, pairs: Sequence[tuple[str, str, Decimal]], now: datetime
) -> dict[str, dict[str, Any]]:
    """Blnk's metadata for each matched transaction (all its external ids when several)."""
    by_transaction: dict[str, list[tuple[str, Decimal]]] = {}
    for external_id, transaction_id, amount in pairs:
        by_transaction.setdefault(transaction_id, []).append((external_id, amount))
    notes: dict[str, dict[str, Any]] = {}
    for transaction_id, externals in by_transaction.items():
        note: dict[str, Any] = {
            "reconciled": True,
            "reconciliation_id": reconciliation_id,
            "reconciled_at": timestamp(now),
            "external_txn_id": externals[0][0],
            "reconciliation_amount": str(exact_sum(amount for _, amount in externals)),
        }
        if len(externals) > 1:
            note["external_txn_ids"] = [external_id for external_id, _ in externals]
        notes[transaction_id] = note
    return notes


async def fail_interrupted_runs(
    db: Database, *, now: datetime, silent_after_s: float = SILENT_AFTER_S
) -> list[str]:
    """Mark failed every unfinished run whose runner has been silent for `silent_after_s` (its
    replica stopped); the ids of the runs it failed."""
    async with db.transaction() as conn:
        failed = await repository.fail_silent_runs(
            conn,
            now=now,
            silent_since=now - timedelta(seconds=silent_after_s),
            error=INTERRUPTED_ERROR,
        )
    if failed:
        logger.warning("reconciliations interrupted", extra={"reconciliation_ids": failed})
    return failed
