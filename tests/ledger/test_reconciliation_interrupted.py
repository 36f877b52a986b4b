"""A reconciliation whose replica stopped is failed, not left `in_progress` for ever.

Goal: prove that a runner's heartbeat keeps its runs alive, that runs nobody beats on for
`SILENT_AFTER_S` are failed with a reason (and only those: finished runs and live ones are left
alone), and that the scheduler actor's sweep calls it. Method: run rows written with SQL (the
"stopped replica" is a row nobody holds), a real `ReconciliationRunner` holding a run, and
`fail_interrupted_runs` with explicit times. The runner's own bounds are proved here too: a run
that breaks while matching is failed with its reason, and a replica holding too many runs
refuses the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger.reconciliation_runner import (
    INTERRUPTED_ERROR,
    RUNS_CONCURRENT_MAX,
    RUNS_PENDING_MAX,
    SILENT_AFTER_S,
    ReconciliationRunner,
    fail_interrupted_runs,
)
from ledger.surface_errors import ReconciliationBackpressureError
from tests.ledger.conftest import insert_reconciliation_run

pytestmark = pytest.mark.db


async def _state(db: Database, reconciliation_id: str) -> tuple[str, str | None, datetime]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT status, error, heartbeat_at FROM ledger.reconciliations"
            " WHERE reconciliation_id = $1",
            reconciliation_id,
        )
    assert row is not None
    return row["status"], row["error"], row["heartbeat_at"]


class TestInterruptedRuns:
    async def test_silent_unfinished_runs_are_failed_and_nothing_else(self, db: Database) -> None:
        now = datetime.now(UTC)
        long_ago = now - timedelta(seconds=SILENT_AFTER_S + 60)
        stuck_running = await insert_reconciliation_run(
            db, status="in_progress", heartbeat_at=long_ago
        )
        stuck_queued = await insert_reconciliation_run(db, status="started", heartbeat_at=long_ago)
        alive = await insert_reconciliation_run(
            db, status="in_progress", heartbeat_at=now - timedelta(seconds=5)
        )
        finished = await insert_reconciliation_run(db, status="completed", heartbeat_at=long_ago)
        failed = await fail_interrupted_runs(db, now=now)
        assert {stuck_running, stuck_queued} <= set(failed)
        assert {alive, finished}.isdisjoint(failed)
        for run in (stuck_running, stuck_queued):
            status, error, _ = await _state(db, run)
            assert (status, error) == ("failed", INTERRUPTED_ERROR)
        assert (await _state(db, alive))[0] == "in_progress"
        assert (await _state(db, finished))[:2] == ("completed", None)
        assert stuck_running not in await fail_interrupted_runs(db, now=now)  # once

    async def test_a_held_run_keeps_beating(self, db: Database) -> None:
        """A run the runner holds (here: queued behind a slot that never frees) is kept alive
        by the heartbeat, so the sweep leaves it alone."""
        now = datetime.now(UTC)
        long_ago = now - timedelta(seconds=SILENT_AFTER_S + 60)
        run = await insert_reconciliation_run(db, status="started", heartbeat_at=long_ago)
        runner = ReconciliationRunner(db, clock=FrozenClock(now), heartbeat_interval_s=0.05)
        async with contextlib.AsyncExitStack() as busy:
            for _ in range(RUNS_CONCURRENT_MAX):  # every slot taken: the run waits, held
                await busy.enter_async_context(runner._slots)
            runner.launch(run)
            await asyncio.sleep(0.3)
            status, _, beaten = await _state(db, run)
            assert status == "started"
            assert beaten == now
            assert run not in await fail_interrupted_runs(db, now=now)
        await runner.drain(timeout_s=10)


class TestRunnerBounds:
    async def test_a_run_that_breaks_is_failed_with_its_reason(self, db: Database) -> None:
        """A run whose stored rules cannot be read ends `failed` with the error, not
        `in_progress` for ever."""
        now = datetime.now(UTC)
        run = await insert_reconciliation_run(db, status="started", heartbeat_at=now)
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.reconciliations SET rules = $2 WHERE reconciliation_id = $1",
                run,
                [{"criteria": [{"operator": "equals"}]}],
            )
        await ReconciliationRunner(db, clock=FrozenClock(now)).run(run)
        status, error, _ = await _state(db, run)
        assert status == "failed"
        assert error == "KeyError: 'field'"

    async def test_a_replica_refuses_runs_past_its_pending_bound(self, db: Database) -> None:
        """With RUNS_PENDING_MAX runs waiting on one replica the next start is refused (503),
        and accepted again once they have finished."""
        now = datetime.now(UTC)
        runner = ReconciliationRunner(db, clock=FrozenClock(now))
        runs = [
            await insert_reconciliation_run(db, status="started", heartbeat_at=now)
            for _ in range(RUNS_PENDING_MAX)
        ]
        async with contextlib.AsyncExitStack() as busy:
            for _ in range(RUNS_CONCURRENT_MAX):  # every slot taken: the runs wait
                await busy.enter_async_context(runner._slots)
            for run in runs:
                runner.check_capacity()
                runner.launch(run)
            with pytest.raises(ReconciliationBackpressureError):
                runner.check_capacity()
        await runner.drain(timeout_s=10)
        runner.check_capacity()
        assert {(await _state(db, run))[0] for run in runs} == {"completed"}
