"""The scheduler actor on a real local Ray: due work happens within a second of its time.

Goal: prove that the named, detached `scheduler-shard-000` actor ticks by itself and voids an
expiring hold and runs a scheduled transaction within a second of their times. Method: one
local Ray for the module; the actor submits through an engine on its own pool (the one-process
port); rows are created through an in-process engine with dates a second and a half ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import ray

from actors.routing import NAMESPACE, actor_name
from actors.scheduler import (
    SCHEDULER_KIND,
    PortKind,
    SchedulerActorConfig,
    get_or_create_scheduler,
)
from kit.db import Database
from ledger.engine import LedgerEngine
from ledger.fx import find_rate
from ledger.models import PostTransaction
from tests.ledger.conftest import insert_reconciliation_run

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


class _Frankfurter(http.server.BaseHTTPRequestHandler):
    """The rates provider's API shape, served locally: one quote per base."""

    quote = "QZZ"

    def do_GET(self) -> None:
        base = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["from"][0]
        body = json.dumps({"base": base, "date": "2026-11-30", "rates": {self.quote: 1.25}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        del args


async def test_rates_are_refreshed_from_the_configured_provider(
    local_ray: None, db: Database, database_dsn: str
) -> None:
    """With a provider configured, the actor fills the rates table from it on start."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Frankfurter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "QYY"
    config = SchedulerActorConfig(
        database_url=database_dsn,
        port=PortKind.ENGINE,
        fx_provider_url=f"http://127.0.0.1:{server.server_address[1]}",
        fx_bases=(base,),
        fx_refresh_interval_s=3600,
    )
    with contextlib.suppress(ValueError):  # a scheduler left by another test has the old config
        ray.kill(ray.get_actor(actor_name(SCHEDULER_KIND, 0), namespace=NAMESPACE))
    handle = await asyncio.to_thread(get_or_create_scheduler, config)
    try:
        deadline = time.monotonic() + WAIT_S
        while (await handle.stats.remote())["rate_refreshes"] < 1:
            assert time.monotonic() < deadline, "the rates were never refreshed"
            await asyncio.sleep(0.1)
        async with db.connection() as conn:
            rate = await find_rate(conn, base, _Frankfurter.quote)
        assert (rate.rate, rate.source) == (Decimal("1.25"), "frankfurter")
    finally:
        await handle.stop.remote()
        ray.kill(handle)
        server.shutdown()
        server.server_close()


async def test_interrupted_reconciliations_are_failed(
    local_ray: None, db: Database, database_dsn: str
) -> None:
    """A reconciliation left in_progress by a stopped replica is failed by the actor's sweep."""
    run_id = await insert_reconciliation_run(
        db, status="in_progress", heartbeat_at=datetime.now(UTC) - timedelta(hours=1)
    )
    config = SchedulerActorConfig(database_url=database_dsn, port=PortKind.ENGINE)
    with contextlib.suppress(ValueError):  # a fresh actor sweeps as it starts
        ray.kill(ray.get_actor(actor_name(SCHEDULER_KIND, 0), namespace=NAMESPACE), no_restart=True)
    handle = await asyncio.to_thread(get_or_create_scheduler, config)
    try:
        deadline = time.monotonic() + WAIT_S
        async with db.connection() as conn:
            while (
                status := await conn.fetchval(
                    "SELECT status FROM ledger.reconciliations WHERE reconciliation_id = $1",
                    run_id,
                )
            ) != "failed":
                assert status == "in_progress"
                assert time.monotonic() < deadline, "the interrupted run was never failed"
                await asyncio.sleep(0.1)
        assert (await handle.stats.remote())["reconciliations_interrupted"] >= 1
    finally:
        await handle.stop.remote()
        ray.kill(handle, no_restart=True)
