"""The scheduler actor on a real local Ray: due work happens within a second of its time.

Goal: prove that the named, detached `scheduler-shard-000` actor ticks by itself and voids an
expiring hold and runs a scheduled transaction within a second of their times. Method: one
local Ray for the module; the actor submits through an engine on its own pool (the one-process
port); rows are created through an in-process engine with dates a second and a half ahead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import ray

from actors.scheduler import PortKind, SchedulerActorConfig, get_or_create_scheduler
from kit.db import Database
from ledger.engine import LedgerEngine
from ledger.models import PostTransaction

pytestmark = [pytest.mark.ray, pytest.mark.db]

LEAD_S = 1.5  # how far ahead the rows are due
WAIT_S = 20.0  # the actor's first start (a Ray worker) takes a few seconds on two cores
LATENESS_MAX_S = 1.0


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for this module."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="dwaybank-scheduler-test",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _command(source: str, destination: str, units: int, **extra: object) -> PostTransaction:
    fields: dict[str, object] = {
        "transaction_id": f"txn_{uuid.uuid4()}",
        "reference": f"ref-{uuid.uuid4()}",
        "precise_amount": units,
        "precision": 100,
        "currency": "USD",
        "description": "",
        "source": source,
        "destination": destination,
        "skip_queue": True,
    }
    fields.update(extra)
    return PostTransaction(**fields)  # type: ignore[arg-type]


async def _balances(db: Database, count: int) -> list[str]:
    ids = [f"bln_{uuid.uuid4()}" for _ in range(count)]
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
            " SELECT id, 'general_ledger_id', 'USD' FROM unnest($1::text[]) AS id",
            ids,
        )
    return ids


async def test_due_work_happens_within_a_second(
    local_ray: None, db: Database, database_dsn: str
) -> None:
    """An expiring hold is voided, and a scheduled transfer runs, within a second of their time."""
    config = SchedulerActorConfig(database_url=database_dsn, port=PortKind.ENGINE)
    handle = await asyncio.to_thread(get_or_create_scheduler, config)
    try:
        deadline = time.monotonic() + WAIT_S
        while (await handle.stats.remote())["ticks"] < 1:
            assert time.monotonic() < deadline, "the scheduler never ticked"
            await asyncio.sleep(0.1)
        engine = LedgerEngine(db, writer="scheduler-actor-test")
        source, holder, payee = await _balances(db, 3)
        (funded,) = await engine.execute(
            [_command("@WorldUSD", source, 1_000, allow_overdraft=True)]
        )
        assert funded.error is None
        due = datetime.now(UTC) + timedelta(seconds=LEAD_S)
        (hold,) = await engine.execute(
            [_command(source, holder, 300, inflight=True, inflight_expiry_date=due)]
        )
        (scheduled,) = await engine.execute(
            [_command(source, payee, 200, skip_queue=False, scheduled_for=due)]
        )
        assert hold.record is not None
        assert scheduled.record is not None
        deadline = time.monotonic() + LEAD_S + WAIT_S
        async with db.connection() as conn:
            while True:
                void_at = await conn.fetchval(
                    "SELECT created_at FROM ledger.transactions WHERE parent_transaction = $1 AND status = 'VOID'",
                    hold.record.transaction_id,
                )
                outcome = await conn.fetchval(
                    "SELECT outcome FROM ledger.transactions WHERE transaction_id = $1",
                    scheduled.record.transaction_id,
                )
                if void_at is not None and outcome is not None:
                    break
                assert time.monotonic() < deadline, "the due work did not happen"
                await asyncio.sleep(0.05)
            ran_at = datetime.now(UTC)
        assert timedelta(0) <= void_at - due <= timedelta(seconds=LATENESS_MAX_S)
        assert outcome["status"] == "APPLIED"
        assert ran_at - due <= timedelta(seconds=LATENESS_MAX_S + 0.5)
    finally:
        await handle.stop.remote()
        ray.kill(handle, no_restart=True)
