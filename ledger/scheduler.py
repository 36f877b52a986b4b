"""The scheduler: runs what is due, through the ledger port, within a second of its time.

Four kinds of work, each read through its own partial index and bounded per tick:

* a SCHEDULED transaction whose `scheduled_for` has passed and that has not run
  -> `RunScheduled` (the engine runs it as a child and records the outcome on the row);
* a hold whose `inflight_expiry_date` has passed with something left -> `VoidInflight` of the
  remainder;
* a hold whose `inflight_commit_date` has passed with something left -> `CommitInflight` of
  the remainder. A hold past both dates gets whichever came first;
* a `run_async` bulk still pending after its lease (the replica that accepted it stopped
  first) -> the stored request as a durable `PostBulk`, which the engine runs only if it is
  still pending; after `ASYNC_BULK_ATTEMPTS_MAX` runs it is abandoned (reported failed).

`plan` is pure; `Scheduler.tick` reads what is due, plans, and submits everything in one
`LedgerPort.execute` call (so it rides the same group commit as everything else). Commands go
through the engine like a client's: a void or commit the engine refuses because it already
happened (a second scheduler, a restart mid-tick, a client who committed first) is counted as
done, which makes ticks idempotent under restarts and duplicates. A command that fails for
another reason is retried on later ticks, backing off per row so one poison row cannot busy
the loop; the hosting actor (`actors/scheduler.py`) calls `tick` every `TICK_INTERVAL_S`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from kit.clock import Clock, SystemClock
from kit.db import Database
from kit.errors import DependencyError, DomainError
from kit.ids import IdPrefix, new_id
from kit.metrics import counter
from ledger import scheduler_repository
from ledger.errors import (
    AlreadyCommittedError,
    AlreadyVoidedError,
    InvalidStatusActionError,
    NotInflightError,
    TransactionNotFoundError,
)
from ledger.models import (
    ASYNC_BULK_ATTEMPTS_MAX,
    ASYNC_BULK_LEASE_S,
    Command,
    CommitInflight,
    Outcome,
    PostBulk,
    RunScheduled,
    VoidInflight,
)
from ledger.port import LedgerPort
from ledger.schemas import BulkIn, bulk_command, validate_body

logger = logging.getLogger(__name__)

TICK_INTERVAL_S: Final = 0.25  # due work runs within about this long of its time
ROWS_PER_KIND_MAX: Final = 500  # per tick, for each of the three kinds
RETRY_BACKOFF_BASE_S: Final = 1.0  # a row that failed waits this long, doubling per failure
RETRY_BACKOFF_CAP_S: Final = 300.0
FAILING_ROWS_MAX: Final = 10_000  # rows remembered as failing (memory bound)

# What the engine answers when the work was already done (by us before a restart, by another
# scheduler, or by a client): the scheduler's job for that row is over.
DONE_CODES: Final = frozenset(
    {
        AlreadyCommittedError.code,
        AlreadyVoidedError.code,
        NotInflightError.code,
        InvalidStatusActionError.code,
        TransactionNotFoundError.code,
    }
)

RUNS = counter(
    "ledger_scheduler_actions_total", "Scheduler actions by kind and result", ["kind", "result"]
)


@dataclass(frozen=True, slots=True)
class Due:
    """What is due now, as read from PostgreSQL."""

    scheduled: Sequence[str]
    expiries: Sequence[tuple[str, datetime, datetime | None]]
    commits: Sequence[tuple[str, datetime, datetime | None]]


@dataclass(frozen=True, slots=True)
class Action:
    """One planned command and what it is for."""

    kind: str  # "scheduled", "expiry", "commit" or "async_bulk"
    row_id: str
    command: Command


@dataclass(slots=True)
class TickReport:
    """What a tick did."""

    executed: int = 0
    already_done: int = 0
    failed: int = 0
    skipped: int = 0


def _new_ids() -> tuple[str, str]:
    return new_id(IdPrefix.TRANSACTION), new_id(IdPrefix.REFERENCE)


def plan(
    due: Due, *, now: datetime, new_ids: Callable[[], tuple[str, str]] = _new_ids
) -> list[Action]:
    """The commands for what is due. A hold past both its expiry and its commit date gets
    whichever date came first (a tie voids: an expiry is the safer default)."""
    actions: list[Action] = []
    for transaction_id in due.scheduled:
        child_id, _ = new_ids()
        actions.append(Action("scheduled", transaction_id, RunScheduled(transaction_id, child_id)))
    planned: set[str] = set()
    for hold_id, expiry, commit_date in due.expiries:
        if commit_date is not None and commit_date < expiry and commit_date <= now:
            continue  # the commit came first; it is planned below
        child_id, reference = new_ids()
        void = VoidInflight(hold_id, child_id, reference, skip_queue=True, created_at=now)
        actions.append(Action("expiry", hold_id, void))
        planned.add(hold_id)
    for hold_id, _commit_date, _expiry in due.commits:
        if hold_id in planned:
            continue
        child_id, reference = new_ids()
        commit = CommitInflight(hold_id, child_id, reference, skip_queue=True, created_at=now)
        actions.append(Action("commit", hold_id, commit))
    return actions


def async_bulk_command(
    batch_id: str, request: dict[str, Any], attempts: int, now: datetime
) -> PostBulk:
    """The durable command for a stored run_async request on its `attempts`-th scheduler run."""
    if attempts > ASYNC_BULK_ATTEMPTS_MAX:
        reason = f"The bulk request could not be run in {ASYNC_BULK_ATTEMPTS_MAX} attempts."
    else:
        try:
            command = bulk_command(validate_body(BulkIn, request), now=now)
        except DomainError as exc:
            reason = f"The stored bulk request no longer validates: {exc.public_message}"
        else:
            return replace(command, batch_id=batch_id, is_durable=True)
    return PostBulk(
        batch_id, (), atomic=True, inflight=False, is_durable=True, abandon_reason=reason
    )


def is_done(outcome: Outcome) -> bool:
    """True when the row needs nothing more: it ran now, or had already been handled."""
    return outcome.error is None or outcome.error.code in DONE_CODES


class Scheduler:
    """Reads due work and submits it through a `LedgerPort`."""

    def __init__(
        self,
        db: Database,
        port: LedgerPort,
        *,
        clock: Clock | None = None,
        rows_per_kind_max: int = ROWS_PER_KIND_MAX,
    ) -> None:
        self.db = db
        self.port = port
        self.clock = clock or SystemClock()
        self.rows_per_kind_max = rows_per_kind_max
        self._failing: dict[str, tuple[int, float]] = {}  # row id -> (failures, retry at)
        self.totals = TickReport()

    async def due(self, now: datetime) -> Due:
        """Read what is due at `now` (bounded per kind)."""
        limit = self.rows_per_kind_max
        async with self.db.connection() as conn:
            return Due(
                scheduled=await scheduler_repository.due_scheduled(conn, now=now, limit=limit),
                expiries=await scheduler_repository.due_expiries(conn, now=now, limit=limit),
                commits=await scheduler_repository.due_commits(conn, now=now, limit=limit),
            )

    async def tick(self) -> TickReport:
        """Run everything that is due now."""
        report = TickReport()
        now = self.clock.now()
        started = self.clock.monotonic()
        actions = []
        for action in [*plan(await self.due(now), now=now), *await self._async_bulks(now)]:
            failing = self._failing.get(action.row_id)
            if failing is not None and failing[1] > started:
                report.skipped += 1
            else:
                actions.append(action)
        if not actions:
            return report
        outcomes = await self.port.execute([a.command for a in actions])
        for action, outcome in zip(actions, outcomes, strict=True):
            if outcome.error is None:
                report.executed += 1
                result = "executed"
            elif is_done(outcome):
                report.already_done += 1
                result = "already_done"
            else:
                report.failed += 1
                result = "failed"
                self._remember_failure(action.row_id, started)
                log = logger.info if isinstance(outcome.error, DependencyError) else logger.warning
                log("scheduled %s of %s failed: %s", action.kind, action.row_id, outcome.error.code)
            if result != "failed":
                self._failing.pop(action.row_id, None)
            RUNS.labels(action.kind, result).inc()
        for name in ("executed", "already_done", "failed", "skipped"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(report, name))
        return report

    async def _async_bulks(self, now: datetime) -> list[Action]:
        """Stored run_async bulks whose lease ran out, leased anew, as commands."""
        async with self.db.transaction() as conn:
            rows = await scheduler_repository.claim_stale_async_bulks(
                conn,
                now=now,
                lease_until=now + timedelta(seconds=ASYNC_BULK_LEASE_S),
                limit=self.rows_per_kind_max,
            )
        return [
            Action("async_bulk", batch_id, async_bulk_command(batch_id, request, attempts, now))
            for batch_id, request, attempts in rows
        ]

    def _remember_failure(self, row_id: str, now_monotonic: float) -> None:
        failures = self._failing.get(row_id, (0, 0.0))[0] + 1
        delay = min(RETRY_BACKOFF_CAP_S, RETRY_BACKOFF_BASE_S * float(2 ** min(failures - 1, 20)))
        if len(self._failing) >= FAILING_ROWS_MAX and row_id not in self._failing:
            self._failing.pop(next(iter(self._failing)))
        self._failing[row_id] = (failures, now_monotonic + delay)
