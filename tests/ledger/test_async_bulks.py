"""run_async bulks are durable before the 202, run once, and recovered after a stop.

Goal: prove what Blnk does not promise: a `run_async` bulk that got its 202 is on disk before
the answer, the batch that runs it marks it done (so a second submission runs nothing), and a
request left pending by a replica that stopped first is run by the scheduler after its lease,
or reported failed after its attempts. Method: the ledger app over real HTTP for the 202; the
engine and the scheduler on the test database for recovery, with the "stopped replica" played
by storing a request and never running it; results are read back with SQL.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger import repository
from ledger.api_port import stamped_bulk_request
from ledger.apikeys import GENERATED_BY_KEY, mark_generated_by
from ledger.engine import LedgerEngine
from ledger.models import ASYNC_BULK_ATTEMPTS_MAX, ASYNC_BULK_LEASE_S
from ledger.scheduler import Scheduler, async_bulk_command
from ledger.schemas import BulkIn, bulk_command, validate_body
from tests.ledger.conftest import MakeBalance

pytestmark = pytest.mark.db

DONE_WAIT_S = 10.0


@pytest.fixture
async def api(events_ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=events_ledger_url, timeout=10) as client:
        yield client


def _request(destination: str, count: int = 2, *, amount: int = 100) -> dict[str, Any]:
    return {
        "atomic": True,
        "run_async": True,
        "transactions": [
            {
                "precise_amount": amount,
                "precision": 100,
                "reference": f"ab-{uuid.uuid4()}",
                "currency": "USD",
                "source": "@WorldUSD",
                "destination": destination,
                "description": "async",
                "allow_overdraft": True,
            }
            for _ in range(count)
        ],
    }


async def _row(db: Database, batch_id: str) -> dict[str, Any] | None:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT status, attempts, lease_until FROM ledger.async_bulks WHERE batch_id = $1",
            batch_id,
        )
    return None if row is None else dict(row)


async def _children(db: Database, batch_id: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM ledger.transactions WHERE parent_transaction = $1", batch_id
        )
    return count


async def _stored(db: Database, request: dict[str, Any], *, lease_until: datetime) -> str:
    """A request accepted by a replica that stopped before running it."""
    batch_id = f"bulk_{uuid.uuid4()}"
    async with db.transaction() as conn:
        await repository.insert_async_bulk(conn, batch_id, request, lease_until=lease_until)
    return batch_id


class TestAcceptance:
    async def test_stored_before_the_202_then_done(
        self, api: httpx.AsyncClient, db: Database, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        response = await api.post("/transactions/bulk", json=_request(destination))
        assert response.status_code == 202, response.text
        batch_id = response.json()["batch_id"]
        row = await _row(db, batch_id)
        assert row is not None  # on disk by the time the client reads the 202
        deadline = asyncio.get_running_loop().time() + DONE_WAIT_S
        while row is not None and row["status"] != "done":
            assert asyncio.get_running_loop().time() < deadline, "the bulk never ran"
            await asyncio.sleep(0.05)
            row = await _row(db, batch_id)
        assert row is not None
        assert row["attempts"] == 0  # the accepting replica ran it; the scheduler never did
        assert await _children(db, batch_id) == 2


class TestRunsOnce:
    async def test_a_done_request_runs_nothing_again(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        request = _request(destination)
        batch_id = await _stored(db, request, lease_until=datetime.now(UTC))
        command = replace(
            bulk_command(validate_body(BulkIn, request), now=datetime.now(UTC)),
            batch_id=batch_id,
            is_durable=True,
        )
        (first,) = await engine.execute([command])
        assert first.status_code == 201, first.body
        (second,) = await engine.execute([command])
        assert second.status_code == 200
        assert second.body == {"batch_id": batch_id, "status": "already_processed"}
        assert await _children(db, batch_id) == 2
        row = await _row(db, batch_id)
        assert row is not None
        assert row["status"] == "done"

    async def test_twice_in_one_batch_runs_once(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        request = _request(destination)
        batch_id = await _stored(db, request, lease_until=datetime.now(UTC))
        command = async_bulk_command(batch_id, request, 1, datetime.now(UTC))
        outcomes = await engine.execute([command, command])
        assert [o.status_code for o in outcomes] == [201, 200]
        assert await _children(db, batch_id) == 2


class TestProvenance:
    def test_stored_items_carry_the_api_key(self) -> None:
        """A request made with an API key is stored with the key's provenance on every item,
        so a recovered run stamps what the API port would have stamped."""
        request = _request("bln_x", 2)
        request["transactions"][0]["meta_data"] = {"kept": True}

        def store() -> dict[str, Any]:
            mark_generated_by("api_key_0001")
            return stamped_bulk_request(request)

        stored = contextvars.copy_context().run(store)
        marks = [item["meta_data"][GENERATED_BY_KEY] for item in stored["transactions"]]
        assert marks == ["api_key_0001", "api_key_0001"]
        assert stored["transactions"][0]["meta_data"]["kept"] is True
        assert stamped_bulk_request(request) is request  # no key: stored as sent
        assert "meta_data" not in request["transactions"][1]  # the request is not changed


class TestRecovery:
    async def test_the_scheduler_runs_a_request_past_its_lease(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        now = datetime.now(UTC)
        batch_id = await _stored(db, _request(destination, 3), lease_until=now)
        scheduler = Scheduler(db, engine, clock=FrozenClock(now + timedelta(seconds=1)))
        report = await scheduler.tick()
        assert report.failed == 0
        row = await _row(db, batch_id)
        assert row is not None
        assert (row["status"], row["attempts"]) == ("done", 1)
        assert await _children(db, batch_id) == 3
        await scheduler.tick()  # done: never picked again
        assert await _children(db, batch_id) == 3

    async def test_a_lease_that_has_not_run_out_is_left_alone(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=ASYNC_BULK_LEASE_S)
        batch_id = await _stored(db, _request(destination), lease_until=lease)
        await Scheduler(db, engine, clock=FrozenClock(now)).tick()
        row = await _row(db, batch_id)
        assert row is not None
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert await _children(db, batch_id) == 0

    async def test_a_request_out_of_attempts_is_reported_failed(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        destination = await make_balance()
        now = datetime.now(UTC)
        batch_id = await _stored(db, _request(destination), lease_until=now)
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.async_bulks SET attempts = $2 WHERE batch_id = $1",
                batch_id,
                ASYNC_BULK_ATTEMPTS_MAX,
            )
        await Scheduler(db, engine, clock=FrozenClock(now + timedelta(seconds=1))).tick()
        row = await _row(db, batch_id)
        assert row is not None
        assert row["status"] == "done"
        assert await _children(db, batch_id) == 0
        async with db.connection() as conn:
            payload = await conn.fetchval(
                "SELECT payload FROM ledger.outbox"
                " WHERE event_type = 'bulk_transaction.failed' AND entity_id = $1",
                batch_id,
            )
        assert payload["error_detail"]["code"] == "TXN_BULK_ABANDONED"
        assert payload["batch_id"] == batch_id
