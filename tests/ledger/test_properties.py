"""Model-based property tests of the ledger engine (hypothesis state machine).

Goal: over random sequences of immediate and queued transfers, holds, partial commits, voids,
refunds and atomic bulks, the engine agrees with a tiny reference model of Blnk's rules, and
PostgreSQL's state keeps the invariants: every currency sums to zero, no balance goes below
zero unless an overdraft was allowed, and no hold is committed or voided beyond its amount.
Method: each rule runs one command through a real `LedgerEngine` on the test database (its own
event loop and pool, since the state machine is synchronous), updates the model only when the
model says the command must succeed, and checks the engine's answer agrees; invariants are
checked against SQL after every step.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from kit.db import Database
from kit.settings import Settings
from ledger.engine import LedgerEngine
from ledger.models import (
    CommitInflight,
    Leg,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    VoidInflight,
)

pytestmark = pytest.mark.db

CURRENCIES = ("USD", "EUR")
BALANCES_PER_CURRENCY = 3


@dataclass
class ModelBalance:
    currency: str
    credit: int = 0
    debit: int = 0
    inflight_credit: int = 0
    inflight_debit: int = 0
    # A refund is posted with allow_overdraft (as in Blnk): the refunded balance may go negative.
    was_refunded_from: bool = False

    @property
    def available(self) -> int:
        return self.credit - self.debit - self.inflight_debit


@dataclass
class ModelHold:
    source: str
    destination: str
    amount: int
    committed: int = 0
    voided: int = 0


@dataclass
class World:
    balances: dict[str, ModelBalance] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    refundable: dict[str, tuple[str, str, int]] = field(default_factory=dict)


def _transfer(
    source: str, destination: str, amount: int, currency: str, **flags: Any
) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=f"p-{uuid.uuid4()}",
        precise_amount=amount,
        precision=100,
        currency=currency,
        description="",
        source=source,
        destination=destination,
        **flags,
    )


class LedgerMachine(RuleBasedStateMachine):
    """Random ledger histories against a reference model."""

    holds = Bundle("holds")
    applied = Bundle("applied")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = self.loop.run_until_complete(Database.open(Settings(), DSN[0]))
        self.engine = LedgerEngine(self.db, writer="property")
        self.world = World()

    def teardown(self) -> None:
        self.loop.run_until_complete(self.db.close())
        self.loop.close()

    def run(self, command: Any) -> Outcome:
        (outcome,) = self.loop.run_until_complete(self.engine.execute([command]))
        return outcome

    @initialize()
    def make_balances(self) -> None:
        ids = []
        for currency in CURRENCIES:
            for _ in range(BALANCES_PER_CURRENCY):
                balance_id = f"bln_{uuid.uuid4()}"
                ids.append((balance_id, currency))
                self.world.balances[balance_id] = ModelBalance(currency)

        async def insert() -> None:
            async with self.db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                    [i for i, _ in ids],
                    ["general_ledger_id"] * len(ids),
                    [c for _, c in ids],
                )

        self.loop.run_until_complete(insert())

    def _pick(self, data: st.DataObject, currency: str | None = None) -> str:
        # Creation order, not id order: ids are random, and a draw must mean the same balance in
        # every run for hypothesis to replay and shrink.
        choices = [
            b for b, m in self.world.balances.items() if currency is None or m.currency == currency
        ]
        return data.draw(st.sampled_from(choices))

    def _other(self, data: st.DataObject, source: str) -> str:
        currency = self.world.balances[source].currency
        choices = [
            b for b, m in self.world.balances.items() if b != source and m.currency == currency
        ]
        return data.draw(st.sampled_from(choices))

    # ------------------------------------------------------------ rules

    @rule(data=st.data(), amount=st.integers(1, 5_000))
    def fund(self, data: st.DataObject, amount: int) -> None:
        destination = self._pick(data)
        currency = self.world.balances[destination].currency
        outcome = self.run(
            _transfer(
                f"@World{currency}",
                destination,
                amount,
                currency,
                allow_overdraft=True,
                skip_queue=True,
            )
        )
        assert outcome.error is None, outcome.error
        self.world.balances[destination].credit += amount

    @rule(target=applied, data=st.data(), amount=st.integers(1, 3_000), queued=st.booleans())
    def transfer(self, data: st.DataObject, amount: int, queued: bool) -> Any:
        source = self._pick(data)
        currency = self.world.balances[source].currency
        destination = self._other(data, source)
        outcome = self.run(_transfer(source, destination, amount, currency, skip_queue=not queued))
        must_pass = self.world.balances[source].available >= amount
        if queued:
            assert outcome.error is None
            assert outcome.record is not None
            assert outcome.record.outcome is not None
            passed = outcome.record.outcome["status"] == "APPLIED"
            posted_id = outcome.record.outcome["transaction_id"]
        else:
            passed = outcome.error is None
            posted_id = outcome.record.transaction_id if outcome.record else ""
        assert passed == must_pass, (outcome, self.world.balances[source])
        if not passed:
            return None
        self.world.balances[source].debit += amount
        self.world.balances[destination].credit += amount
        self.world.refundable[posted_id] = (source, destination, amount)
        return posted_id

    @rule(target=holds, data=st.data(), amount=st.integers(1, 3_000))
    def hold(self, data: st.DataObject, amount: int) -> Any:
        source = self._pick(data)
        currency = self.world.balances[source].currency
        destination = self._other(data, source)
        outcome = self.run(
            _transfer(source, destination, amount, currency, inflight=True, skip_queue=True)
        )
        must_pass = self.world.balances[source].available >= amount
        assert (outcome.error is None) == must_pass
        if not must_pass:
            return None
        assert outcome.record is not None
        self.world.balances[source].inflight_debit += amount
        self.world.balances[destination].inflight_credit += amount
        self.world.holds[outcome.record.transaction_id] = ModelHold(source, destination, amount)
        return outcome.record.transaction_id

    @rule(hold_id=holds, part=st.integers(0, 4_000))
    def commit(self, hold_id: str | None, part: int) -> None:
        if hold_id is None:
            return
        hold = self.world.holds[hold_id]
        remaining = hold.amount - hold.committed - hold.voided
        outcome = self.run(
            CommitInflight(
                target_id=hold_id,
                child_id=f"txn_{uuid.uuid4()}",
                child_reference=f"ref_{uuid.uuid4()}",
                precise_amount=part or None,
            )
        )
        amount = part or remaining
        must_pass = hold.voided == 0 and remaining > 0 and amount <= remaining
        assert (outcome.error is None) == must_pass, (outcome.error, hold, part)
        if must_pass:
            hold.committed += amount
            self.world.balances[hold.source].inflight_debit -= amount
            self.world.balances[hold.source].debit += amount
            self.world.balances[hold.destination].inflight_credit -= amount
            self.world.balances[hold.destination].credit += amount

    @rule(hold_id=consumes(holds))
    def void(self, hold_id: str | None) -> None:
        if hold_id is None:
            return
        hold = self.world.holds[hold_id]
        remaining = hold.amount - hold.committed - hold.voided
        outcome = self.run(
            VoidInflight(
                target_id=hold_id,
                child_id=f"txn_{uuid.uuid4()}",
                child_reference=f"ref_{uuid.uuid4()}",
            )
        )
        must_pass = hold.voided == 0 and remaining > 0
        assert (outcome.error is None) == must_pass
        if must_pass:
            hold.voided = remaining
            self.world.balances[hold.source].inflight_debit -= remaining
            self.world.balances[hold.destination].inflight_credit -= remaining

    @rule(posted_id=consumes(applied))
    def refund(self, posted_id: str | None) -> None:
        if posted_id is None:
            return
        source, destination, amount = self.world.refundable.pop(posted_id)
        outcome = self.run(
            RefundTransaction(
                original_id=posted_id, refund_id=f"txn_{uuid.uuid4()}", skip_queue=True
            )
        )
        assert outcome.error is None, outcome.error
        self.world.balances[destination].debit += amount
        self.world.balances[destination].was_refunded_from = True
        self.world.balances[source].credit += amount
        again = self.run(
            RefundTransaction(
                original_id=posted_id, refund_id=f"txn_{uuid.uuid4()}", skip_queue=True
            )
        )
        assert again.error is not None
        assert again.error.code == "TXN_ALREADY_REFUNDED"

    @rule(
        data=st.data(),
        amounts=st.lists(st.integers(1, 2_000), min_size=1, max_size=4),
        atomic=st.booleans(),
    )
    def bulk(self, data: st.DataObject, amounts: list[int], atomic: bool) -> None:
        currency = data.draw(st.sampled_from(CURRENCIES))
        plans = []
        for amount in amounts:
            source = self._pick(data, currency)
            destination = self._other(data, source)
            plans.append((source, destination, amount))
        items = tuple(_transfer(s, d, a, currency, skip_queue=True) for s, d, a in plans)
        outcome = self.run(
            PostBulk(batch_id=f"bulk_{uuid.uuid4()}", items=items, atomic=atomic, inflight=False)
        )
        trial = {b: m.available for b, m in self.world.balances.items()}
        passes = []
        for source, destination, amount in plans:
            ok = trial[source] >= amount
            passes.append(ok)
            if ok:
                trial[source] -= amount
                trial[destination] += amount
        if atomic and not all(passes):
            assert outcome.status_code == 400
            return
        assert outcome.status_code == (201 if any(passes) or atomic else 400)
        for (source, destination, amount), ok in zip(plans, passes, strict=True):
            if ok:
                self.world.balances[source].debit += amount
                self.world.balances[destination].credit += amount

    @rule(
        data=st.data(),
        percent=st.integers(1, 99),
        queued=st.booleans(),
        side=st.sampled_from(["destinations", "sources"]),
    )
    def split(self, data: st.DataObject, percent: int, queued: bool, side: str) -> None:
        """A split with a percentage leg and a `left` leg, within what its payers hold: each
        leg gets exactly its share (the percentage rounded down; `left` the rest)."""
        one = self._pick(data)
        two = self._other(data, one)
        currency = self.world.balances[one].currency
        third = next(
            b
            for b, m in self.world.balances.items()
            if m.currency == currency and b not in {one, two}
        )
        legs = (Leg(one, f"{percent}%"), Leg(two, "left"))
        if side == "destinations":
            room = self.world.balances[third].available
        else:  # each source pays its own share: the amount must fit both
            room = min(
                self.world.balances[one].available * 100 // percent,
                self.world.balances[two].available * 100 // (100 - percent),
            )
        if room < 1:
            return
        amount = data.draw(st.integers(1, min(room, 5_000)))
        share = amount * percent // 100
        base = replace(_transfer(third, third, amount, currency), skip_queue=not queued)
        if side == "destinations":
            command = replace(base, destination=None, destinations=legs)
        else:
            command = replace(base, source=None, sources=legs)
        outcome = self.run(command)
        assert outcome.error is None, outcome.error
        if queued:
            assert outcome.record is not None
            assert outcome.record.outcome is not None
            assert outcome.record.outcome["status"] == "APPLIED", outcome.record.outcome
        for balance_id, leg_amount in ((one, share), (two, amount - share)):
            if side == "destinations":
                self.world.balances[third].debit += leg_amount
                self.world.balances[balance_id].credit += leg_amount
            else:
                self.world.balances[balance_id].debit += leg_amount
                self.world.balances[third].credit += leg_amount

    # ------------------------------------------------------------ invariants

    @invariant()
    def database_matches_model_and_invariants_hold(self) -> None:
        if not self.world.balances:
            return

        async def read() -> tuple[list[Any], list[Any], list[Any]]:
            async with self.db.connection() as conn:
                rows = await conn.fetch(
                    "SELECT balance_id, credit_balance, debit_balance, inflight_credit_balance,"
                    " inflight_debit_balance, balance FROM ledger.balances WHERE balance_id = ANY($1)",
                    list(self.world.balances),
                )
                sums = await conn.fetch(
                    "SELECT currency, sum(balance) AS main, sum(inflight_balance) AS held FROM ledger.balances GROUP BY 1"
                )
                holds = await conn.fetch(
                    "SELECT transaction_id FROM ledger.transactions"
                    " WHERE status = 'INFLIGHT' AND committed_amount + voided_amount > precise_amount"
                )
            return rows, sums, holds

        rows, sums, overused = self.loop.run_until_complete(read())
        for row in rows:
            model = self.world.balances[row["balance_id"]]
            got = (
                int(row["credit_balance"]),
                int(row["debit_balance"]),
                int(row["inflight_credit_balance"]),
                int(row["inflight_debit_balance"]),
            )
            assert got == (model.credit, model.debit, model.inflight_credit, model.inflight_debit)
            if not model.was_refunded_from:
                assert int(row["balance"]) - model.inflight_debit >= 0, (
                    "no overdraft was ever allowed"
                )
        for row in sums:
            assert int(row["main"]) == 0, row
            assert int(row["held"]) == 0, row
        assert overused == []


DSN: list[str] = []


LedgerMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerStateMachine = LedgerMachine.TestCase


@pytest.fixture(autouse=True, scope="module")
def _dsn(database_dsn: str) -> None:
    DSN[:] = [database_dsn]
