"""Balance monitor conditions at their boundaries, and what one batch raises.

Goal: pin how a monitor's condition meets a balance: every operator at the exact boundary, one
minor unit each side, for each of the six figures; `precise_value` computed exactly (a float's
decimal text, and values past int64 where Blnk's `int64(value * precision)` would wrap); one
alert per monitor per batch, read from the figures the batch left (level-triggered, so a batch
that crosses a threshold and comes back raises nothing, and a batch that leaves the balance
unchanged raises nothing even when the condition holds); and the refusals a client meets when
creating, updating or deleting monitors.
Method: monitors are created through the service with a private cache, batches run through an
in-process engine whose only hook is the monitor hook, and alerts are read from the outbox with
SQL; the refusals are sent over real HTTP to the server whose engine evaluates monitors.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kit.db import Database
from ledger import monitors
from ledger.engine import LedgerEngine
from ledger.errors import LedgerValidationError
from ledger.monitors import MONITORS_PER_BALANCE_MAX, MonitorCache, MonitorHook, parse_request
from ledger.monitors_model import Monitor
from tests.ledger.conftest import MakeBalance, transfer

pytestmark = pytest.mark.db

OPERATORS = (">", "<", ">=", "<=", "!=", "==", "=")
# Whether `figure OP threshold` holds, for a figure one below, at and one above the threshold.
HOLDS: dict[str, tuple[bool, bool, bool]] = {
    ">": (False, False, True),
    "<": (True, False, False),
    ">=": (False, True, True),
    "<=": (True, True, False),
    "!=": (True, False, True),
    "==": (False, True, False),
    "=": (False, True, False),
}
# The figures the shaping batch below leaves a balance with, in minor units (precision 100).
SHAPED: dict[str, int] = {
    "balance": 800,
    "credit_balance": 1000,
    "debit_balance": 200,
    "inflight_balance": 40,
    "inflight_credit_balance": 70,
    "inflight_debit_balance": 30,
}


def _shaping_batch(balance_id: str) -> list[Any]:
    """Four postings that give a new balance every figure of `SHAPED`."""
    return [
        transfer("@WorldUSD", balance_id, 1000, allow_overdraft=True),
        transfer(balance_id, "@WorldUSD", 200),
        transfer("@WorldUSD", balance_id, 70, allow_overdraft=True, inflight=True),
        transfer(balance_id, "@WorldUSD", 30, inflight=True),
    ]


async def _create(
    db: Database, cache: MonitorCache, balance_id: str, condition: tuple[str, str, Any]
) -> Monitor:
    field, operator, value = condition
    request = parse_request(
        {
            "balance_id": balance_id,
            "condition": {"field": field, "operator": operator, "value": value, "precision": 100},
        }
    )
    async with db.transaction() as conn:
        return await monitors.create_monitor(conn, request, now=datetime.now(UTC), cache=cache)


async def _alerts(db: Database, balance_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT entity_id, batch_id, payload FROM ledger.outbox"
            " WHERE event_type = 'balance.monitor' AND payload->>'balance_id' = $1",
            balance_id,
        )
    return [dict(row) for row in rows]


WAIT_POLLS_MAX = 500  # 5 s for a second create to reach the lock


async def _waits_on_an_advisory_lock(db: Database) -> bool:
    async with db.connection() as conn:
        waiting: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
        )
    return waiting


def _engine(db: Database, cache: MonitorCache) -> LedgerEngine:
    return LedgerEngine(db, writer="monitor-conditions", batch_hooks=[MonitorHook(cache)])


class TestBoundaries:
    @pytest.mark.parametrize("field", list(SHAPED))
    async def test_every_operator_at_and_beside_the_boundary(
        self, db: Database, make_balance: MakeBalance, field: str
    ) -> None:
        """For each figure, every operator against a threshold one minor unit below, at and
        above the figure the batch left fires exactly when the comparison holds, once, in the
        batch of all four postings."""
        cache = MonitorCache()
        balance_id = await make_balance()
        expected: set[str] = set()
        for operator in OPERATORS:
            for offset, holds in zip((1, 0, -1), HOLDS[operator], strict=True):
                # A threshold above the figure puts the figure one below it, and so on.
                value = Decimal(SHAPED[field] + offset) / 100
                monitor = await _create(db, cache, balance_id, (field, operator, str(value)))
                if holds:
                    expected.add(monitor.monitor_id)
        outcomes = await _engine(db, cache).execute(_shaping_batch(balance_id))
        assert [o.error for o in outcomes] == [None] * 4
        alerts = await _alerts(db, balance_id)
        assert sorted(a["entity_id"] for a in alerts) == sorted(expected)
        assert len({a["batch_id"] for a in alerts}) == 1
        figures = alerts[0]["payload"]["balance"]
        assert {name: figures[name] for name in SHAPED} == SHAPED


class TestPreciseValue:
    def test_a_float_value_is_read_as_its_decimal_text(self) -> None:
        """0.29 x 100 is 29, as written (Go's float product, 28.999..., would truncate to 28)."""
        body = {
            "balance_id": "bln_x",
            "condition": {"field": "balance", "operator": "<", "value": 0.29, "precision": 100},
        }
        assert parse_request(body).condition.precise_value == 29

    async def test_values_past_int64_compare_exactly(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A threshold of 10^22 minor units (past int64, where Blnk's cast wraps) is stored and
        compared exactly: `>=` fires at exactly that balance, `>` does not."""
        cache = MonitorCache()
        balance_id = await make_balance()
        at_least = await _create(db, cache, balance_id, ("balance", ">=", 10**20))
        above = await _create(db, cache, balance_id, ("balance", ">", "100000000000000000000"))
        assert above.condition.precise_value == at_least.condition.precise_value == 10**22
        async with db.connection() as conn:
            stored = await monitors.get_monitor(conn, above.monitor_id)
        assert stored.condition.precise_value == 10**22
        (outcome,) = await _engine(db, cache).execute(
            [transfer("@WorldUSD", balance_id, 10**22, allow_overdraft=True)]
        )
        assert outcome.error is None
        alerts = await _alerts(db, balance_id)
        assert [a["entity_id"] for a in alerts] == [at_least.monitor_id]
        assert alerts[0]["payload"]["condition"]["precise_value"] == 10**22
        assert alerts[0]["payload"]["balance"]["balance"] == 10**22


class TestPerBatch:
    async def test_many_postings_in_one_batch_raise_one_alert(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """Twenty credits in one batch, each leaving the balance above the threshold, raise one
        alert carrying the batch's final figures; the next batch that changes it raises another."""
        cache = MonitorCache()
        balance_id = await make_balance()
        monitor = await _create(db, cache, balance_id, ("balance", ">", 0))
        engine = _engine(db, cache)
        outcomes = await engine.execute(
            [transfer("@WorldUSD", balance_id, 5, allow_overdraft=True) for _ in range(20)]
        )
        assert [o.error for o in outcomes] == [None] * 20
        alerts = await _alerts(db, balance_id)
        assert [a["entity_id"] for a in alerts] == [monitor.monitor_id]
        assert alerts[0]["payload"]["balance"]["balance"] == 100
        await engine.execute([transfer(balance_id, "@WorldUSD", 1)])
        after = await _alerts(db, balance_id)
        assert sorted(a["payload"]["balance"]["balance"] for a in after) == [99, 100]

    async def test_a_crossing_undone_within_the_batch_raises_nothing(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A batch that lifts a balance past the threshold and brings it back is judged by the
        figures it leaves: no alert."""
        cache = MonitorCache()
        balance_id = await make_balance()
        await _create(db, cache, balance_id, ("balance", ">=", 10))
        outcomes = await _engine(db, cache).execute(
            [
                transfer("@WorldUSD", balance_id, 1500, allow_overdraft=True),
                transfer(balance_id, "@WorldUSD", 1000),
            ]
        )
        assert [o.error for o in outcomes] == [None, None]
        assert await _alerts(db, balance_id) == []

    async def test_a_batch_that_leaves_the_balance_unchanged_raises_nothing(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A condition that holds (`balance == 0`) raises nothing from a committed batch that
        leaves the balance as it was: a queued transfer from it, rejected for want of funds."""
        cache = MonitorCache()
        balance_id = await make_balance()
        await _create(db, cache, balance_id, ("balance", "==", 0))
        command = transfer(balance_id, "@WorldUSD", 1, skip_queue=False)
        (outcome,) = await _engine(db, cache).execute([command])
        assert outcome.error is None
        async with db.connection() as conn:
            statuses = await conn.fetch(
                "SELECT status FROM ledger.transactions WHERE transaction_id = $1"
                " OR parent_transaction = $1 ORDER BY status",
                command.transaction_id,
            )
        assert [row["status"] for row in statuses] == ["QUEUED", "REJECTED"]
        assert await _alerts(db, balance_id) == []


class TestLimit:
    async def test_a_balance_takes_at_most_the_evaluated_monitors(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A balance holds as many monitors as a batch evaluates; one more is 400 (it would never
        fire), on create and on an update moving a monitor onto the balance."""
        cache = MonitorCache()
        balance_id = await make_balance()
        for _ in range(MONITORS_PER_BALANCE_MAX):
            await _create(db, cache, balance_id, ("balance", ">", 0))
        with pytest.raises(LedgerValidationError) as refused:
            await _create(db, cache, balance_id, ("balance", ">", 0))
        assert "monitors" in refused.value.message
        elsewhere = await make_balance()
        moved = await _create(db, cache, elsewhere, ("balance", ">", 0))
        request = parse_request(
            {
                "balance_id": balance_id,
                "condition": {"field": "balance", "operator": ">", "value": 0, "precision": 1},
            }
        )
        with pytest.raises(LedgerValidationError):
            async with db.transaction() as conn:
                await monitors.update_monitor(conn, moved.monitor_id, request, cache=cache)
        (outcome,) = await _engine(db, cache).execute(
            [transfer("@WorldUSD", balance_id, 1, allow_overdraft=True)]
        )
        assert outcome.error is None
        assert len(await _alerts(db, balance_id)) == MONITORS_PER_BALANCE_MAX

    async def test_a_create_waits_for_a_concurrent_one(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """On a balance one short of the limit, a create made while another is uncommitted waits
        for it and is then refused: the two never both pass the count."""
        cache = MonitorCache()
        balance_id = await make_balance()
        for _ in range(MONITORS_PER_BALANCE_MAX - 1):
            await _create(db, cache, balance_id, ("balance", ">", 0))
        request = parse_request(
            {
                "balance_id": balance_id,
                "condition": {"field": "balance", "operator": ">", "value": 1, "precision": 1},
            }
        )
        async with db.transaction() as conn:
            await monitors.create_monitor(conn, request, now=datetime.now(UTC), cache=cache)
            second = asyncio.create_task(_create(db, cache, balance_id, ("balance", ">", 2)))
            for _ in range(WAIT_POLLS_MAX):
                if second.done() or await _waits_on_an_advisory_lock(db):
                    break
                await asyncio.sleep(0.01)
        (result,) = await asyncio.gather(second, return_exceptions=True)
        assert isinstance(result, LedgerValidationError)
        async with db.connection() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM ledger.balance_monitors WHERE balance_id = $1", balance_id
            )
        assert count == MONITORS_PER_BALANCE_MAX


class TestUpdate:
    async def test_moving_a_monitor_moves_its_alerts_at_once(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """After an update moves a monitor to another balance, the old balance stops alerting
        and the new one alerts with the new condition, without waiting for the cache's age."""
        cache = MonitorCache(ttl_s=3600)
        engine = _engine(db, cache)
        first, second = await make_balance(), await make_balance()
        monitor = await _create(db, cache, first, ("credit_balance", ">", 0))
        await engine.execute([transfer("@WorldUSD", first, 1, allow_overdraft=True)])
        await engine.execute([transfer("@WorldUSD", second, 1, allow_overdraft=True)])
        assert cache.get(first) is not None
        assert cache.get(second) == ()
        request = parse_request(
            {
                "balance_id": second,
                "condition": {
                    "field": "debit_balance",
                    "operator": "==",
                    "value": 1,
                    "precision": 1,
                },
                "description": "moved",
            }
        )
        async with db.transaction() as conn:
            await monitors.update_monitor(conn, monitor.monitor_id, request, cache=cache)
        await engine.execute([transfer("@WorldUSD", first, 1, allow_overdraft=True)])
        await engine.execute([transfer(second, "@WorldUSD", 1)])
        assert len(await _alerts(db, first)) == 1
        (moved,) = await _alerts(db, second)
        assert moved["entity_id"] == monitor.monitor_id
        assert moved["payload"]["description"] == "moved"
        assert moved["payload"]["condition"]["field"] == "debit_balance"


@pytest.fixture
def http(events_ledger_url: str) -> Iterator[httpx.Client]:
    """An HTTP client on the server whose engine evaluates monitors."""
    with httpx.Client(base_url=events_ledger_url) as client:
        yield client


def _balance(http: httpx.Client) -> str:
    ledger = http.post("/ledgers", json={"name": f"monitors-{uuid.uuid4()}"}).json()["ledger_id"]
    balance_id: str = http.post("/balances", json={"ledger_id": ledger, "currency": "USD"}).json()[
        "balance_id"
    ]
    return balance_id


def _condition(**change: Any) -> dict[str, Any]:
    return {"field": "balance", "operator": ">", "value": 10, "precision": 100, **change}


class TestRefusals:
    @pytest.mark.parametrize(
        "change",
        [
            {"body": ["not", "an", "object"]},
            {"condition": "balance > 10"},
            {"meta_data": ["tag"]},
            {"description": 7},
            {"description": "d" * 4097},
            {"call_back_url": {"url": "https://example.test"}},
            {"condition": _condition(operator=None)},
            {"condition": _condition(operator=1)},
            {"condition": _condition(value="1" * 41)},
            {"condition": _condition(value="1E-41")},
        ],
    )
    def test_malformed_bodies_are_400_and_store_nothing(
        self, http: httpx.Client, change: dict[str, Any]
    ) -> None:
        """A body that is no object, a condition or metadata of the wrong type, a description
        or callback that is no short string, a missing or non-text operator, or a value of more
        than 40 digits is 400 on create (under `errors`) and on update, and nothing is stored."""
        balance_id = _balance(http)
        body: Any = {"balance_id": balance_id, "condition": _condition(), **change}
        body = body.pop("body", body)
        created = http.post("/balance-monitors", json=body)
        assert created.status_code == 400, created.text
        assert created.json()["error_detail"]["code"] == "GEN_VALIDATION_ERROR"
        assert "errors" in created.json()
        assert http.get(f"/balance-monitors/balances/{balance_id}").json() == []
        monitor = http.post(
            "/balance-monitors", json={"balance_id": balance_id, "condition": _condition()}
        ).json()
        updated = http.put(f"/balance-monitors/{monitor['monitor_id']}", json=body)
        assert updated.status_code == 400, updated.text
        assert http.get(f"/balance-monitors/{monitor['monitor_id']}").json() == monitor

    def test_update_and_delete_of_an_unknown_monitor_are_404(self, http: httpx.Client) -> None:
        """PUT and DELETE of a monitor that does not exist answer 404 BAL_MONITOR_NOT_FOUND."""
        missing = f"mon_{uuid.uuid4()}"
        body = {"balance_id": _balance(http), "condition": _condition()}
        for response in (
            http.put(f"/balance-monitors/{missing}", json=body),
            http.delete(f"/balance-monitors/{missing}"),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["error_detail"]["code"] == "BAL_MONITOR_NOT_FOUND"

    def test_update_onto_an_unknown_balance_is_404(self, http: httpx.Client) -> None:
        """Moving a monitor onto a balance that does not exist is 404 BAL_NOT_FOUND; it stays."""
        balance_id = _balance(http)
        monitor = http.post(
            "/balance-monitors", json={"balance_id": balance_id, "condition": _condition()}
        ).json()
        body = {"balance_id": f"bln_{uuid.uuid4()}", "condition": _condition()}
        response = http.put(f"/balance-monitors/{monitor['monitor_id']}", json=body)
        assert response.status_code == 404
        assert response.json()["error_detail"]["code"] == "BAL_NOT_FOUND"
        assert http.get(f"/balance-monitors/{monitor['monitor_id']}").json() == monitor

    def test_deleted_monitor_is_gone(self, http: httpx.Client) -> None:
        """A deleted monitor is no longer found, listed, or deletable."""
        balance_id = _balance(http)
        monitor = http.post(
            "/balance-monitors", json={"balance_id": balance_id, "condition": _condition()}
        ).json()
        assert http.delete(f"/balance-monitors/{monitor['monitor_id']}").status_code == 200
        assert http.get(f"/balance-monitors/{monitor['monitor_id']}").status_code == 404
        assert http.get(f"/balance-monitors/balances/{balance_id}").json() == []
        assert http.delete(f"/balance-monitors/{monitor['monitor_id']}").status_code == 404
