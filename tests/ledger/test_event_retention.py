"""Retention of events: what the dispatcher deletes, when, and what it never deletes.

Goal: prove that fanned-out outbox rows and finished deliveries are deleted once past their
retention (a delivered delivery after a week, a dead one after a month, so it can be redriven
until then), that pending deliveries and outbox rows not yet fanned out stay whatever their
age, that an `identity.created` body (an identity's fields as they were at creation) is gone
from the database after retention, and that a step deletes no more than its bound. Method: an
identity is created through the ledger's HTTP API; subscriptions made through the same API
point at a real local HTTP receiver; a dispatcher on the test database runs with a clock the
test moves; rows are read back with SQL.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger.dispatcher import (
    DEAD_RETENTION_S,
    DELIVERED_RETENTION_S,
    OUTBOX_RETENTION_S,
    DispatcherConfig,
    EventDispatcher,
)
from tests.ledger.conftest import fan_out_backlog, subscribe_webhook, webhook_deliveries
from tests.ledger.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.db

SETTLE_TIMEOUT_S = 15.0
PRUNE_ROUNDS_MAX = 10_000  # prune rounds a test runs at most, to see a step delete nothing
ONE_ATTEMPT = DispatcherConfig(
    poll_interval_s=0.02, delivery_timeout_s=2.0, lease_s=5.0, attempts_max=1
)


@pytest.fixture
async def caught_up(db: Database) -> None:
    """Fan out what earlier tests left in the outbox before this test subscribes, then prune
    everything finished they left, whatever its age: a prune count the test reads is its own
    rows' (whichever modules ran before it)."""
    catch_up = EventDispatcher(db, config=ONE_ATTEMPT)
    await fan_out_backlog(catch_up)
    await catch_up.aclose()
    later = FrozenClock(datetime.now(UTC) + timedelta(seconds=DEAD_RETENTION_S + 1))
    pruner = EventDispatcher(db, config=ONE_ATTEMPT, clock=later)
    for _ in range(PRUNE_ROUNDS_MAX):
        if await pruner.prune() == 0:
            break
    await pruner.aclose()


async def _subscribe(api: httpx.AsyncClient, url: str) -> str:
    """Subscribe `url` to identity.created; the subscription's id."""
    created = await subscribe_webhook(api, url, ["identity.created"])
    subscription_id: str = created["subscription_id"]
    return subscription_id


async def _create_identity(api: httpx.AsyncClient, marker: str) -> str:
    body = {"identity_type": "individual", "first_name": marker, "email_address": "a@b.example"}
    response = await api.post("/identities", json=body)
    assert response.status_code == 201, response.text
    identity_id: str = response.json()["identity_id"]
    return identity_id


async def _settle(
    dispatcher: EventDispatcher, api: httpx.AsyncClient, subscription_ids: list[str]
) -> None:
    """Run rounds until every subscription has a delivery and none is pending."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        found = [await webhook_deliveries(api, s) for s in subscription_ids]
        if all(f and all(d["status"] != "pending" for d in f) for f in found):
            return
        assert time.monotonic() < deadline, "the deliveries did not settle in time"
        await dispatcher.run_once()
        await asyncio.sleep(0.02)


async def _rows_holding(db: Database, marker: str) -> dict[str, int]:
    """How many outbox rows and deliveries still hold `marker` in their body."""
    async with db.connection() as conn:
        outbox = await conn.fetchval(
            "SELECT count(*) FROM ledger.outbox WHERE payload::text LIKE '%' || $1 || '%'", marker
        )
        deliveries = await conn.fetchval(
            "SELECT count(*) FROM ledger.webhook_deliveries WHERE body LIKE '%' || $1 || '%'",
            marker,
        )
    return {"outbox": int(outbox), "deliveries": int(deliveries)}


@pytest.mark.usefixtures("caught_up")
async def test_finished_deliveries_and_the_outbox_go_after_retention_and_nothing_before(
    db: Database, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    """A delivered delivery and the outbox row go after a week, a dead delivery after a month;
    until then each stays, and afterwards no row holds the identity's fields."""
    marker = f"Retained{uuid.uuid4().hex}"
    delivered_to = await _subscribe(events_api, webhook_receiver.url(f"/ok/{marker}"))
    dead_to = await _subscribe(events_api, webhook_receiver.url(f"/down/{marker}"))
    await _create_identity(events_api, marker)
    clock = FrozenClock(datetime.now(UTC))
    dispatcher = EventDispatcher(db, config=ONE_ATTEMPT, clock=clock)
    try:
        await _settle(dispatcher, events_api, [delivered_to, dead_to])
        assert [d["status"] for d in await webhook_deliveries(events_api, delivered_to)] == [
            "delivered"
        ]
        assert [d["status"] for d in await webhook_deliveries(events_api, dead_to)] == ["dead"]
        assert await _rows_holding(db, marker) == {"outbox": 1, "deliveries": 2}

        clock.advance(min(OUTBOX_RETENTION_S, DELIVERED_RETENTION_S) - 1)
        assert (await dispatcher.run_once()).pruned == 0
        assert await _rows_holding(db, marker) == {"outbox": 1, "deliveries": 2}

        clock.advance(ONE_ATTEMPT.prune_interval_s)  # past retention, and a step is due
        assert (await dispatcher.run_once()).pruned == 2  # the outbox row, the delivered one
        assert await _rows_holding(db, marker) == {"outbox": 0, "deliveries": 1}
        assert await webhook_deliveries(events_api, delivered_to) == []
        assert [d["status"] for d in await webhook_deliveries(events_api, dead_to)] == ["dead"]

        clock.advance(DEAD_RETENTION_S - DELIVERED_RETENTION_S)
        await dispatcher.run_once()
        assert await _rows_holding(db, marker) == {"outbox": 0, "deliveries": 0}
        assert len(webhook_receiver.received(f"/ok/{marker}")) == 1
    finally:
        await dispatcher.aclose()


@pytest.mark.usefixtures("caught_up")
async def test_pending_deliveries_and_unsent_outbox_rows_are_never_pruned(
    db: Database, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    """A delivery still waiting for an attempt and an outbox row not yet fanned out stay past
    every retention period: retention deletes what is finished, never what is owed."""
    marker = f"Owed{uuid.uuid4().hex}"
    subscription_id = await _subscribe(events_api, webhook_receiver.url(f"/ok/{marker}"))
    await _create_identity(events_api, marker)
    clock = FrozenClock(datetime.now(UTC))
    dispatcher = EventDispatcher(db, config=ONE_ATTEMPT, clock=clock)
    try:
        await dispatcher.fan_out()  # the delivery exists, pending: no delivery step runs here
        later = await _create_identity(events_api, f"{marker}Later")
        clock.advance(DEAD_RETENTION_S + 1)
        await dispatcher.prune()
        async with db.connection() as conn:
            unsent = await conn.fetchval(
                "SELECT count(*) FROM ledger.outbox WHERE entity_id = $1 AND dispatched_at IS NULL",
                later,
            )
        assert unsent == 1
        assert [d["status"] for d in await webhook_deliveries(events_api, subscription_id)] == [
            "pending"
        ]
        assert await _rows_holding(db, marker) == {"outbox": 1, "deliveries": 1}
    finally:
        await dispatcher.aclose()


@pytest.mark.usefixtures("caught_up")
async def test_a_step_deletes_at_most_its_bound_and_the_next_round_goes_on(
    db: Database, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
) -> None:
    """With more rows past retention than a step deletes, each step deletes its bound and the
    next round prunes again without waiting for the interval."""
    marker = f"Bounded{uuid.uuid4().hex}"
    subscription_id = await _subscribe(events_api, webhook_receiver.url(f"/ok/{marker}"))
    for index in range(5):
        await _create_identity(events_api, f"{marker}{index}")
    clock = FrozenClock(datetime.now(UTC))
    config = DispatcherConfig(
        poll_interval_s=0.02, delivery_timeout_s=2.0, lease_s=5.0, prune_rows_max=2
    )
    dispatcher = EventDispatcher(db, config=config, clock=clock)
    try:
        await _settle(dispatcher, events_api, [subscription_id])
        assert len(await webhook_deliveries(events_api, subscription_id)) == 5
        clock.advance(DEAD_RETENTION_S + 1)
        remaining = [5]
        for _ in range(PRUNE_ROUNDS_MAX):
            # The clock's monotonic time stands still: only a full step brings the next one.
            pruned = (await dispatcher.run_once()).pruned
            assert pruned <= 3 * config.prune_rows_max
            remaining.append(len(await webhook_deliveries(events_api, subscription_id)))
            if pruned == 0:
                break
        assert remaining[-1] == 0
        assert all(a - b <= config.prune_rows_max for a, b in itertools.pairwise(remaining))
        assert await _rows_holding(db, marker) == {"outbox": 0, "deliveries": 0}
    finally:
        await dispatcher.aclose()


def test_retention_settings_are_checked() -> None:
    """A retention period, interval or step size of zero is refused when configured."""
    for bad in (
        {"outbox_retention_s": 0},
        {"delivered_retention_s": -1},
        {"dead_retention_s": 0},
        {"prune_interval_s": 0},
        {"prune_rows_max": 0},
    ):
        with pytest.raises(ValueError, match="retention"):
            DispatcherConfig(**bad)
