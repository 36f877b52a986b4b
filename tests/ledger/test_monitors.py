"""Balance monitors: Blnk's CRUD through the real SDK, and evaluation after every batch.

Goal: prove that monitors speak Blnk's wire format (ids, condition with `precise_value`,
write-only `call_back_url`, 404 BAL_MONITOR_NOT_FOUND, `=` treated as `==`) and that a batch
whose resulting figures satisfy a monitor stages a `balance.monitor` outbox event in the same
database transaction, while the per-process cache stays bounded and is invalidated by CRUD.
Method: the unmodified blnk-python SDK against a uvicorn server whose engine runs the monitor
hook; engine-level tests read the outbox with SQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger import monitors
from ledger.engine import LedgerEngine
from ledger.errors import LedgerValidationError
from ledger.models import Figures
from ledger.monitors import MonitorCache, MonitorHook, parse_condition, parse_request
from ledger.monitors_model import Monitor
from tests.ledger.conftest import MakeBalance, create_sdk_balance, transfer

pytestmark = pytest.mark.db


def _condition(
    field: str = "balance", operator: str = ">", value: Any = 10, precision: Any = 100
) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value, "precision": precision}


async def _monitor_events(db: Database, balance_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT entity_id, payload, batch_id FROM ledger.outbox"
            " WHERE event_type = 'balance.monitor' AND payload->>'balance_id' = $1 ORDER BY created_at",
            balance_id,
        )
    return [
        {"monitor_id": r["entity_id"], "payload": r["payload"], "batch_id": r["batch_id"]}
        for r in rows
    ]


class TestConditions:
    def test_precise_value_is_value_times_precision_truncated(self) -> None:
        """precise_value = value x precision, truncated toward zero (Blnk's int64 cast)."""
        assert parse_condition("balance", ">", "10.129", 100).precise_value == 1012
        assert parse_condition("balance", "<", "-10.129", 100).precise_value == -1012
        assert parse_condition("debit_balance", ">=", 3, 1).precise_value == 3

    def test_single_equals_is_double_equals(self) -> None:
        """The SDK's `=` is stored and compared as `==`."""
        condition = parse_condition("balance", "=", 5, 1)
        assert condition.operator == "=="
        assert condition.holds(Figures(credit=5))
        assert not condition.holds(Figures(credit=6))

    @pytest.mark.parametrize(
        ("operator", "balance", "expected"),
        [
            (">", 11, True),
            (">", 10, False),
            ("<", 9, True),
            (">=", 10, True),
            ("<=", 11, False),
            ("!=", 10, False),
        ],
    )
    def test_operators(self, operator: str, balance: int, expected: bool) -> None:
        """Each of Blnk's operators compares the figure with precise_value."""
        assert (
            parse_condition("balance", operator, 10, 1).holds(Figures(credit=balance)) is expected
        )

    @pytest.mark.parametrize(
        "bad",
        [
            _condition(field="available"),
            _condition(operator="=>"),
            _condition(value="ten"),
            _condition(precision=0.5),
            _condition(value=None),
            _condition(precision={}),  # was a TypeError out of Decimal: a 500 over HTTP
            _condition(value=[0, [1], 0]),  # Decimal reads a list as its tuple form
        ],
    )
    def test_invalid_conditions_are_refused(self, bad: dict[str, Any]) -> None:
        """Unknown fields and operators and non-numbers are a validation error."""
        with pytest.raises(LedgerValidationError):
            parse_request({"balance_id": "bln_x", "condition": bad})


class TestCache:
    def _monitor(self, balance_id: str) -> Monitor:
        return Monitor(
            monitor_id=f"mon_{uuid.uuid4()}",
            balance_id=balance_id,
            condition=parse_condition("balance", ">", 1, 1),
            description="",
            call_back_url="",
            meta_data={},
            created_at=datetime.now(UTC),
        )

    def test_entries_expire_after_the_ttl(self) -> None:
        """A cached monitor list is forgotten once older than the TTL."""
        clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
        cache = MonitorCache(ttl_s=30, clock=clock)
        cache.put("bln_a", (self._monitor("bln_a"),))
        clock.advance(29)
        assert cache.get("bln_a") is not None
        clock.advance(2)
        assert cache.get("bln_a") is None

    def test_size_is_bounded_least_recently_used_out(self) -> None:
        """Past its size the cache drops the balance used least recently."""
        cache = MonitorCache(balances_max=2)
        cache.put("bln_a", ())
        cache.put("bln_b", ())
        assert cache.get("bln_a") == ()
        cache.put("bln_c", ())
        assert len(cache) == 2
        assert cache.get("bln_b") is None
        assert cache.get("bln_a") == ()


class TestSdkCrud:
    def _balance(self, blnk: Any) -> str:
        return create_sdk_balance(blnk, f"monitors-{uuid.uuid4()}")

    def test_create_get_list_update_delete(self, blnk_events: Any) -> None:
        """The SDK's monitor calls round-trip Blnk's shapes; call_back_url is never returned."""
        balance_id = self._balance(blnk_events)
        created = blnk_events.balance_monitor.create(
            {
                "balance_id": balance_id,
                "condition": _condition(operator="=", value=12.5, precision=100),
                "description": "low balance",
                "call_back_url": "https://example.test/hook",
            }
        )
        assert created.status == 201, created.to_dict()
        monitor = created.data
        assert monitor["monitor_id"].startswith("mon_")
        assert monitor["condition"] == {
            "field": "balance",
            "operator": "==",
            "value": 12.5,
            "precision": 100,
            "precise_value": 1250,
        }
        assert "call_back_url" not in monitor
        got = blnk_events.balance_monitor.get(monitor["monitor_id"])
        assert got.status == 200
        assert got.data == monitor
        assert monitor["monitor_id"] in [
            m["monitor_id"] for m in blnk_events.balance_monitor.list().data
        ]
        by_balance = blnk_events.balance_monitor.list_by_balance_id(balance_id)
        assert [m["monitor_id"] for m in by_balance.data] == [monitor["monitor_id"]]
        updated = blnk_events.balance_monitor.update(
            monitor["monitor_id"],
            {"balance_id": balance_id, "condition": _condition(operator="<", value=1, precision=1)},
        )
        assert updated.status == 200
        assert updated.data == {"message": "BalanceMonitor updated successfully"}
        assert (
            blnk_events.balance_monitor.get(monitor["monitor_id"]).data["condition"]["operator"]
            == "<"
        )
        deleted = blnk_events.balance_monitor.delete(monitor["monitor_id"])
        assert deleted.status == 200
        assert deleted.data == {"message": "BalanceMonitor deleted successfully"}
        missing = blnk_events.balance_monitor.get(monitor["monitor_id"])
        assert missing.status == 404
        assert missing.error.code == "BAL_MONITOR_NOT_FOUND"

    def test_unknown_balance_is_404(self, blnk_events: Any) -> None:
        """A monitor on a balance that does not exist is refused with BAL_NOT_FOUND."""
        response = blnk_events.balance_monitor.create(
            {"balance_id": f"bln_{uuid.uuid4()}", "condition": _condition()}
        )
        assert response.status == 404
        assert response.error.code == "BAL_NOT_FOUND"

    async def test_alert_is_staged_when_a_transfer_meets_the_condition(
        self, blnk_events: Any, db: Database
    ) -> None:
        """Funding past a `>` threshold over HTTP stages one balance.monitor event with the figures."""
        balance_id = self._balance(blnk_events)
        monitor = blnk_events.balance_monitor.create(
            {
                "balance_id": balance_id,
                "condition": _condition(operator=">", value=10, precision=100),
            }
        ).data
        for amount in (500, 600):  # 5.00 (below), then 11.00 (above)
            response = blnk_events.transactions.create(
                {
                    "precise_amount": amount,
                    "precision": 100,
                    "reference": f"ref-{uuid.uuid4()}",
                    "currency": "USD",
                    "source": "@WorldUSD",
                    "destination": balance_id,
                    "allow_overdraft": True,
                    "skip_queue": True,
                    "description": "fund",
                }
            )
            assert response.status == 201
        found = await _monitor_events(db, balance_id)
        assert len(found) == 1
        payload = found[0]["payload"]
        assert found[0]["monitor_id"] == monitor["monitor_id"]
        assert payload["condition"]["precise_value"] == 1000
        assert payload["balance"]["balance"] == 1100


class TestHook:
    async def test_event_commits_in_the_batch_that_met_the_condition(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """The alert row carries the id of the batch whose figures met the condition."""
        cache = MonitorCache()
        engine = LedgerEngine(db, writer="monitor-test", batch_hooks=[MonitorHook(cache)])
        balance_id = await make_balance()
        async with db.transaction() as conn:
            request = parse_request(
                {"balance_id": balance_id, "condition": _condition("credit_balance", ">=", 2, 100)}
            )
            monitor = await monitors.create_monitor(
                conn, request, now=datetime.now(UTC), cache=cache
            )
        (first,) = await engine.execute(
            [transfer("@WorldUSD", balance_id, 150, allow_overdraft=True)]
        )
        (second,) = await engine.execute(
            [transfer("@WorldUSD", balance_id, 50, allow_overdraft=True)]
        )
        assert first.error is None
        assert second.error is None
        found = await _monitor_events(db, balance_id)
        assert [e["monitor_id"] for e in found] == [monitor.monitor_id]
        async with db.connection() as conn:
            batch = await conn.fetchval(
                "SELECT batch_id FROM ledger.transactions WHERE transaction_id = $1",
                second.record.transaction_id,  # type: ignore[union-attr]
            )
        assert found[0]["batch_id"] == batch
        assert found[0]["payload"]["balance"]["credit_balance"] == 200

    async def test_crud_invalidates_the_cache_in_process(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """Deleting a monitor stops its alerts at once in the same process (no TTL wait)."""
        cache = MonitorCache(ttl_s=3600)
        engine = LedgerEngine(db, writer="monitor-test", batch_hooks=[MonitorHook(cache)])
        balance_id = await make_balance()
        async with db.transaction() as conn:
            request = parse_request(
                {"balance_id": balance_id, "condition": _condition("balance", ">", 0, 1)}
            )
            monitor = await monitors.create_monitor(
                conn, request, now=datetime.now(UTC), cache=cache
            )
        await engine.execute([transfer("@WorldUSD", balance_id, 1, allow_overdraft=True)])
        assert cache.get(balance_id) is not None
        async with db.transaction() as conn:
            await monitors.delete_monitor(conn, monitor.monitor_id, cache=cache)
        await engine.execute([transfer("@WorldUSD", balance_id, 1, allow_overdraft=True)])
        assert len(await _monitor_events(db, balance_id)) == 1
        assert monitor.condition.value == Decimal(0)
