"""The event dispatcher actor on a real local Ray: delivery, and resuming after a crash.

Goal: prove that the named, detached `dispatcher-shard-000` actor starts its loop by itself,
delivers a committed transfer to a real receiver with Blnk's signature, and, killed and
restarted by Ray, resumes delivering without anyone calling it. Method: one local Ray for the
module; the actor works on the test database; transfers go through an in-process engine; a
real HTTP receiver records what arrives.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import ray

from actors.event_dispatcher import DispatcherActorConfig, get_or_create_dispatcher
from actors.routing import NAMESPACE
from kit.db import Database
from ledger import webhooks
from ledger.dispatcher import DispatcherConfig, EventDispatcher
from ledger.engine import LedgerEngine
from ledger.models import PostTransaction
from ledger.webhooks import is_valid_signature
from tests.ledger.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.ray, pytest.mark.db]

ARRIVAL_TIMEOUT_S = 30.0
TEST_DELIVERY_TIMEOUT_S = 2.0  # the local receiver answers at once
TEST_LEASE_S = 5.0
CATCH_UP_ROUNDS_MAX = 10_000


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for this module."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="dwaybank-dispatcher-test",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP receiver."""
    server = WebhookReceiver()
    yield server
    server.close()


def _funding(destination: str, units: int) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=f"ref-{uuid.uuid4()}",
        precise_amount=units,
        precision=100,
        currency="USD",
        description="",
        source="@WorldUSD",
        destination=destination,
        allow_overdraft=True,
        skip_queue=True,
    )


async def _new_balance(db: Database) -> str:
    balance_id = f"bln_{uuid.uuid4()}"
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency) VALUES ($1, 'general_ledger_id', 'USD')",
            balance_id,
        )
    return balance_id


async def _arrival(receiver: WebhookReceiver, path: str, transaction_id: str) -> Any:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline:
        for request in receiver.received(path):
            if orjson.loads(request.body)["data"]["transaction_id"] == transaction_id:
                return request
        await asyncio.sleep(0.05)
    raise AssertionError(f"transaction {transaction_id} was not delivered in time")


async def test_delivers_and_resumes_after_a_crash(
    local_ray: None, receiver: WebhookReceiver, db: Database, database_dsn: str
) -> None:
    """The actor delivers a signed transaction.applied; killed, Ray restarts it and it resumes."""
    path = f"/ok/actor-{uuid.uuid4().hex}"
    catching_up = EventDispatcher(db)
    for _ in range(CATCH_UP_ROUNDS_MAX):  # earlier tests' batches are not this test's events
        if not (await catching_up.fan_out()).is_full:
            break
    await catching_up.aclose()
    async with db.transaction() as conn:
        subscription = await webhooks.create_subscription(
            conn,
            {"url": receiver.url(path), "event_types": ["transaction.applied"]},
            now=datetime.now(UTC),
            cipher=None,
        )
    config = DispatcherActorConfig(
        database_url=database_dsn,
        use_cipher=False,
        # `ray.kill` returns before the actor is dead: the old instance may still claim the
        # second delivery and die holding its lease, which the new one waits out (60 s by
        # default, past ARRIVAL_TIMEOUT_S). A short lease keeps that case inside the wait.
        dispatcher=DispatcherConfig(
            poll_interval_s=0.05, delivery_timeout_s=TEST_DELIVERY_TIMEOUT_S, lease_s=TEST_LEASE_S
        ),
    )
    handle = await asyncio.to_thread(get_or_create_dispatcher, config)
    try:
        assert (
            await asyncio.to_thread(ray.get_actor, "dispatcher-shard-000", namespace=NAMESPACE)
            is not None
        )
        engine = LedgerEngine(db, writer="dispatcher-actor-test")
        destination = await _new_balance(db)
        (first,) = await engine.execute([_funding(destination, 100)])
        assert first.record is not None
        request = await _arrival(receiver, path, first.record.transaction_id)
        assert orjson.loads(request.body)["event"] == "transaction.applied"
        assert is_valid_signature(
            subscription["secret"],
            request.headers["x-blnk-timestamp"],
            request.body,
            request.headers["x-blnk-signature"],
        )
        ray.kill(handle, no_restart=False)
        (second,) = await engine.execute([_funding(destination, 200)])
        assert second.record is not None
        await _arrival(receiver, path, second.record.transaction_id)
        stats = await handle.stats.remote()
        assert stats["running"] is True
    finally:
        await handle.stop.remote()
        ray.kill(handle, no_restart=True)
        async with db.transaction() as conn:
            await webhooks.delete_subscription(conn, subscription["subscription_id"])
