"""A reconciliation whose replica stopped is failed, not left `in_progress` for ever.

Goal: prove that a runner's heartbeat keeps its runs alive, that runs nobody beats on for
`SILENT_AFTER_S` are failed with a reason (and only those: finished runs and live ones are left
alone), and that the scheduler actor's sweep calls it. Method: run rows written with SQL (the
"stopped replica" is a row nobody holds), a real `ReconciliationRunner` holding a run, and
`fail_interrupted_runs` with explicit times.
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
    SILENT_AFTER_S,
    ReconciliationRunner,
    fail_interrupted_runs,
)
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
