"""The scheduler: scheduled transactions, hold expiry and automatic commits, idempotently.

Goal: prove that each kind of due work is found (and nothing that is not due), executed once
through the ledger port, and that repeats (a restart mid-tick, a second scheduler, a client who
acted first) are recognised as done rather than failures. Method: rows are created through the
real engine on the test database with dates an hour ahead; the scheduler runs with a frozen
clock set past them, so nothing sleeps; the results are read back with SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger.engine import LedgerEngine
from ledger.models import CommitInflight, Leg, VoidInflight
from ledger.scheduler import RETRY_BACKOFF_BASE_S, Due, Scheduler, is_done, plan
from ledger.schemas import TransactionIn, transaction_command
from tests.ledger.conftest import MakeBalance, funded_balance, transfer

pytestmark = pytest.mark.db

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _later(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


async def _figures(db: Database, balance_id: str) -> tuple[int, int, int]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT balance, inflight_debit_balance, inflight_credit_balance FROM ledger.balances WHERE balance_id = $1",
            balance_id,
        )
    assert row is not None
    return (
        int(row["balance"]),
        int(row["inflight_debit_balance"]),
        int(row["inflight_credit_balance"]),
    )


async def _scheduled_transfer(
    engine: LedgerEngine, make_balance: MakeBalance, amount: int
) -> tuple[str, datetime, str]:
    """A funded source pays a new balance `amount` an hour from now: (destination, when,
    the SCHEDULED row's id)."""
    source = await funded_balance(engine, make_balance, 1_000)
    destination = await make_balance()
    when = _later(1)
    (scheduled,) = await engine.execute(
        [transfer(source, destination, amount, skip_queue=False, scheduled_for=when)]
    )
    assert scheduled.record is not None
    assert scheduled.record.status.value == "SCHEDULED"
    return destination, when, scheduled.record.transaction_id


async def _outcome_status(db: Database, row_id: str) -> str:
    async with db.connection() as conn:
        outcome = await conn.fetchval(
            "SELECT outcome FROM ledger.transactions WHERE transaction_id = $1", row_id
        )
    status: str = outcome["status"]
    return status


class TestPlan:
    def test_each_kind_becomes_its_command(self) -> None:
        """Due scheduled rows run, expired holds void, holds due for commit commit."""
        due = Due(
            scheduled=["txn_s"],
            expiries=[("txn_e", T0, None)],
            commits=[("txn_c", T0, None)],
        )
        actions = plan(due, now=T0)
        assert [(a.kind, a.row_id, type(a.command).__name__) for a in actions] == [
            ("scheduled", "txn_s", "RunScheduled"),
            ("expiry", "txn_e", "VoidInflight"),
            ("commit", "txn_c", "CommitInflight"),
        ]

    def test_a_hold_past_both_dates_takes_the_earlier(self) -> None:
        """Commit first when the commit date came first; void first when the expiry did."""
        earlier, later = T0 - timedelta(minutes=2), T0 - timedelta(minutes=1)
        committed = plan(Due([], [("txn_h", later, earlier)], [("txn_h", earlier, later)]), now=T0)
        assert [type(a.command) for a in committed] == [CommitInflight]
        voided = plan(Due([], [("txn_h", earlier, later)], [("txn_h", later, earlier)]), now=T0)
        assert [type(a.command) for a in voided] == [VoidInflight]


class TestTicks:
    async def test_scheduled_transaction_runs_once_when_due(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """A SCHEDULED row is left alone before its time, runs after it, and never twice."""
        destination, when, row_id = await _scheduled_transfer(engine, make_balance, 300)
        before = Scheduler(db, engine, clock=FrozenClock(when - timedelta(seconds=1)))
        assert all(
            a.row_id != row_id
            for a in plan(await before.due(before.clock.now()), now=before.clock.now())
        )
        scheduler = Scheduler(db, engine, clock=FrozenClock(when + timedelta(milliseconds=10)))
        report = await scheduler.tick()
        assert report.executed >= 1
        assert (await _figures(db, destination))[0] == 300
        again = await scheduler.tick()
        assert row_id not in [
            a.row_id
            for a in plan(await scheduler.due(scheduler.clock.now()), now=scheduler.clock.now())
        ]
        assert again.failed == 0
        assert await _outcome_status(db, row_id) == "APPLIED"

    async def test_a_scheduled_split_is_stored_then_runs_its_legs(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """A split's SCHEDULED row keeps Blnk's empty `destination` (its legs name the
        balances) and, when due, posts one child per leg."""
        source = await funded_balance(engine, make_balance, 1_000)
        bob, carol = await make_balance(), await make_balance()
        when = _later(1)
        legs = (Leg(bob, "25%"), Leg(carol, "left"))
        (scheduled,) = await engine.execute(
            [
                replace(
                    transfer(source, "", 400, skip_queue=False, scheduled_for=when),
                    destination=None,
                    destinations=legs,
                )
            ]
        )
        assert scheduled.error is None, scheduled.error
        assert scheduled.record is not None
        assert (scheduled.record.status.value, scheduled.record.destination) == ("SCHEDULED", "")
        scheduler = Scheduler(db, engine, clock=FrozenClock(when + timedelta(milliseconds=10)))
        assert (await scheduler.tick()).failed == 0
        assert (await _figures(db, bob))[0] == 100
        assert (await _figures(db, carol))[0] == 300
        async with db.connection() as conn:
            children = await conn.fetch(
                "SELECT destination, precise_amount FROM ledger.transactions"
                " WHERE parent_transaction = $1 ORDER BY reference",
                scheduled.record.transaction_id,
            )
        assert [(r["destination"], int(r["precise_amount"])) for r in children] == [
            (bob, 100),
            (carol, 300),
        ]

    async def test_expired_hold_is_voided(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """A hold past its expiry releases its remainder and is not found again."""
        source = await funded_balance(engine, make_balance, 1_000)
        destination = await make_balance()
        expiry = _later(1)
        (hold,) = await engine.execute(
            [transfer(source, destination, 400, inflight=True, inflight_expiry_date=expiry)]
        )
        assert hold.record is not None
        assert await _figures(db, source) == (1_000, 400, 0)
        scheduler = Scheduler(db, engine, clock=FrozenClock(expiry + timedelta(seconds=1)))
        report = await scheduler.tick()
        assert report.executed >= 1
        assert await _figures(db, source) == (1_000, 0, 0)
        assert await _figures(db, destination) == (0, 0, 0)
        due = await scheduler.due(scheduler.clock.now())
        assert hold.record.transaction_id not in [hold_id for hold_id, _, _ in due.expiries]

    async def test_hold_due_for_commit_commits_the_remainder(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """After a client's partial commit, the commit date commits what is left."""
        source = await funded_balance(engine, make_balance, 1_000)
        destination = await make_balance()
        commit_date = _later(1)
        (hold,) = await engine.execute(
            [transfer(source, destination, 500, inflight=True, inflight_commit_date=commit_date)]
        )
        assert hold.record is not None
        hold_id = hold.record.transaction_id
        (partial,) = await engine.execute(
            [
                CommitInflight(
                    hold_id, f"txn_{uuid.uuid4()}", f"ref_{uuid.uuid4()}", precise_amount=200
                )
            ]
        )
        assert partial.error is None
        scheduler = Scheduler(db, engine, clock=FrozenClock(commit_date + timedelta(seconds=1)))
        await scheduler.tick()
        assert await _figures(db, source) == (500, 0, 0)
        assert await _figures(db, destination) == (500, 0, 0)

    async def test_repeats_are_counted_as_done(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """Two schedulers that planned the same void: one voids, the other's refusal is done."""
        source = await funded_balance(engine, make_balance, 1_000)
        expiry = _later(1)
        (hold,) = await engine.execute(
            [
                transfer(
                    source, await make_balance(), 100, inflight=True, inflight_expiry_date=expiry
                )
            ]
        )
        assert hold.record is not None
        clock = FrozenClock(expiry + timedelta(seconds=1))
        first, second = Scheduler(db, engine, clock=clock), Scheduler(db, engine, clock=clock)
        due = await first.due(clock.now())
        mine = [a for a in plan(due, now=clock.now()) if a.row_id == hold.record.transaction_id]
        theirs = [a for a in plan(due, now=clock.now()) if a.row_id == hold.record.transaction_id]
        (done,) = await engine.execute([mine[0].command])
        (repeat,) = await engine.execute([theirs[0].command])
        assert done.error is None
        assert repeat.error is not None
        assert repeat.error.code == "TXN_ALREADY_VOIDED"
        assert is_done(repeat)
        report = await second.tick()
        assert report.failed == 0
        assert await _figures(db, source) == (1_000, 0, 0)


class TestFailures:
    async def test_a_failed_row_waits_out_its_backoff_then_runs(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """A scheduled row the ledger cannot take (its queue is full: 503) is counted failed,
        left alone until its backoff has passed even once the ledger answers again, then run."""
        destination, when, row_id = await _scheduled_transfer(engine, make_balance, 300)
        saturated = LedgerEngine(db, writer="saturated", queue_items_max=0)
        clock = FrozenClock(when + timedelta(milliseconds=10))
        scheduler = Scheduler(db, saturated, clock=clock)
        first = await scheduler.tick()
        assert first.failed >= 1
        assert (await _figures(db, destination))[0] == 0
        scheduler.port = engine  # the ledger answers again, but the backoff has not passed
        second = await scheduler.tick()
        assert second.skipped >= 1
        assert (await _figures(db, destination))[0] == 0
        clock.advance(RETRY_BACKOFF_BASE_S + 0.1)
        third = await scheduler.tick()
        assert third.executed >= 1
        assert (await _figures(db, destination))[0] == 300
        assert await _outcome_status(db, row_id) == "APPLIED"


class TestGoZeroTimes:
    async def test_a_hold_with_go_zero_dates_neither_expires_nor_commits(
        self, db: Database, engine: LedgerEngine, make_balance: MakeBalance
    ) -> None:
        """`0001-01-01T00:00:00Z`, Go's zero time, is how Blnk (and these answers) write an
        unset time, and Blnk reads it back as unset: a hold sent with it as its expiry and
        commit dates stays INFLIGHT through a scheduler tick (stored as dates, they were due
        at once), and a zero `scheduled_for` schedules nothing."""
        source = await funded_balance(engine, make_balance, 1_000)
        destination = await make_balance()
        zero = "0001-01-01T00:00:00Z"
        body = TransactionIn.model_validate(
            {
                "precise_amount": 300,
                "precision": 100,
                "reference": f"zero-{uuid.uuid4()}",
                "currency": "USD",
                "source": source,
                "destination": destination,
                "inflight": True,
                "skip_queue": True,
                "scheduled_for": zero,
                "inflight_expiry_date": zero,
                "inflight_commit_date": zero,
            }
        )
        (hold,) = await engine.execute([transaction_command(body, now=datetime.now(UTC))])
        assert hold.record is not None
        assert hold.record.status.value == "INFLIGHT"
        await Scheduler(db, engine).tick()
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT status, scheduled_for, inflight_expiry_date, inflight_commit_date,"
                " committed_amount, voided_amount FROM ledger.transactions"
                " WHERE transaction_id = $1",
                hold.record.transaction_id,
            )
        assert row is not None
        assert dict(row) == {
            "status": "INFLIGHT",
            "scheduled_for": None,
            "inflight_expiry_date": None,
            "inflight_commit_date": None,
            "committed_amount": 0,
            "voided_amount": 0,
        }
        assert await _figures(db, source) == (1_000, 300, 0)
