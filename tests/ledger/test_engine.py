"""The group-commit engine's reference checks, against real PostgreSQL.

A batch's first attempt does not look its references up: `transactions_reference_unique`
refuses a batch that reuses one, and the retry looks them up, so the command that reused it is
answered 409 TXN_DUPLICATE_REFERENCE and the others commit, exactly as if the lookup had been
made first. These tests post references that another writer (a second engine on the same
database, as another shard would be) took earlier, and check each answer, the balances, and
how many attempts the engine made.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from kit.db import Database
from ledger.engine import REFERENCE_LOOKUP_BATCHES, LedgerEngine
from ledger.models import IdempotencyClaim, Outcome, PostTransaction, RefundTransaction
from tests.ledger.conftest import MakeBalance, funded_balance, transfer

pytestmark = pytest.mark.db


def _code(outcome: Outcome) -> str | None:
    return None if outcome.error is None else outcome.error.code


async def _balance(db: Database, balance_id: str) -> int:
    async with db.connection() as conn:
        return int(
            await conn.fetchval(
                "SELECT balance FROM ledger.balances WHERE balance_id = $1", balance_id
            )
        )


class TestReferences:
    async def test_a_reference_taken_by_another_writer_is_409(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A reference another writer committed is refused 409; the rest of the batch commits."""
        other, engine = LedgerEngine(db, writer="test-other"), LedgerEngine(db, writer="test")
        a, b = await funded_balance(other, make_balance, 1_000), await make_balance()
        reference = f"ref-{uuid.uuid4()}"
        (first,) = await other.execute([transfer(a, b, 100, reference=reference)])
        assert first.error is None
        reused, fresh = await engine.execute(
            [transfer(a, b, 200, reference=reference), transfer(a, b, 300)]
        )
        assert reused.status_code == 409
        assert _code(reused) == "TXN_DUPLICATE_REFERENCE"
        assert fresh.status_code == 201
        assert fresh.error is None
        assert (await _balance(db, a), await _balance(db, b)) == (600, 400)
        assert engine.batches_retried == 1  # the optimistic attempt, then the lookup

    async def test_after_a_refusal_references_are_looked_up_first(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """Replayed references cost one failed attempt per run of batches, not one per batch."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 1_000), await make_balance()
        taken = [transfer(a, b, 1) for _ in range(3)]
        assert all(o.error is None for o in await engine.execute(taken))
        for command in taken:
            (outcome,) = await engine.execute([transfer(a, b, 1, reference=command.reference)])
            assert _code(outcome) == "TXN_DUPLICATE_REFERENCE"
        assert engine.batches_retried == 1
        assert len(taken) < REFERENCE_LOOKUP_BATCHES

    async def test_a_reference_twice_in_one_batch_is_409_once(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """Within a batch the second use is refused in Python, without a failed attempt."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 1_000), await make_balance()
        reference = f"ref-{uuid.uuid4()}"
        first, second = await engine.execute(
            [transfer(a, b, 100, reference=reference), transfer(a, b, 100, reference=reference)]
        )
        assert first.status_code == 201
        assert _code(second) == "TXN_DUPLICATE_REFERENCE"
        assert engine.batches_retried == 0
        assert await _balance(db, b) == 100

    async def test_a_second_refund_is_refused(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A refund's reference (`<id>_refund`) taken by an earlier refund answers 409."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 1_000), await make_balance()
        (posted,) = await engine.execute([transfer(a, b, 250)])
        assert posted.record is not None
        original = posted.record.transaction_id
        (refund,) = await engine.execute([RefundTransaction(original, f"txn_{uuid.uuid4()}")])
        assert refund.error is None
        fresh = LedgerEngine(db, writer="test-other")
        (again,) = await fresh.execute([RefundTransaction(original, f"txn_{uuid.uuid4()}")])
        assert _code(again) == "TXN_ALREADY_REFUNDED"
        assert await _balance(db, b) == 0

    async def test_an_idempotency_key_replays_its_first_answer(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A replayed key answers its first 201 though its reference is taken; a new key with a
        taken reference is refused 409."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 1_000), await make_balance()
        reference = f"ref-{uuid.uuid4()}"

        def keyed(key: str) -> PostTransaction:
            return transfer(
                a, b, 100, reference=reference, idempotency=IdempotencyClaim(key, "a" * 64)
            )

        key = f"key-{uuid.uuid4()}"
        (first,) = await LedgerEngine(db, writer="test-other").execute([keyed(key)])
        assert first.status_code == 201
        assert first.record is not None
        replay, other_key = await engine.execute([keyed(key), keyed(f"key-{uuid.uuid4()}")])
        assert replay.status_code == 201
        assert replay.extra == {"idempotent_replay": True}
        assert replay.body is not None
        assert replay.body["transaction_id"] == first.record.transaction_id
        assert _code(other_key) == "TXN_DUPLICATE_REFERENCE"
        assert await _balance(db, b) == 100


class TestBatchFailures:
    async def test_a_command_postgresql_refuses_fails_alone(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A command the posting rules accept but a CHECK refuses (a description past the
        column's bound, which the API would have stopped) fails on its own: the batch is
        halved until it is alone, and every other command of the batch commits."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 10_000), await make_balance()
        commands = [transfer(a, b, 10 + i) for i in range(9)]
        commands.insert(5, transfer(a, b, 1_000, description="x" * 5_000))
        outcomes = await engine.execute(commands)
        assert [_code(o) for o in outcomes] == [None] * 5 + ["GEN_INTERNAL"] + [None] * 4
        assert outcomes[5].status_code == 500
        assert await _balance(db, b) == sum(10 + i for i in range(9))
        assert await _balance(db, a) == 10_000 - sum(10 + i for i in range(9))
        async with db.connection() as conn:
            written = await conn.fetchval(
                "SELECT count(*) FROM ledger.transactions WHERE transaction_id = ANY($1)",
                [c.transaction_id for c in commands],
            )
        assert written == 9

    async def test_a_full_queue_refuses_at_once_and_writes_nothing(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """Past `queue_items_max` the whole call is refused with 503 (retry shortly)."""
        a, b = await funded_balance(LedgerEngine(db), make_balance, 1_000), await make_balance()
        engine = LedgerEngine(db, writer="test", queue_items_max=4)
        outcomes = await engine.execute([transfer(a, b, 1) for _ in range(5)])
        assert {o.status_code for o in outcomes} == {503}
        assert {_code(o) for o in outcomes} == {"LEDGER_UNAVAILABLE"}
        assert await _balance(db, b) == 0
        (fits,) = await engine.execute([transfer(a, b, 1)])
        assert fits.error is None

    async def test_a_command_that_breaks_the_posting_code_fails_alone(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A bug met by one command (here a command built with an amount of the wrong type,
        which no API would pass) is that command's 500; the rest of its batch commits and every
        caller is answered (an exception escaping the batch left its callers waiting)."""
        engine = LedgerEngine(db, writer="test")
        a, b = await funded_balance(engine, make_balance, 10_000), await make_balance()
        commands = [transfer(a, b, 10 + i) for i in range(5)]
        commands.insert(2, replace(transfer(a, b, 1), precise_amount="not a number"))  # type: ignore[arg-type]
        outcomes = await asyncio.wait_for(engine.execute(commands), timeout=60)
        assert [_code(o) for o in outcomes] == [None, None, "GEN_INTERNAL", None, None, None]
        assert await _balance(db, b) == sum(10 + i for i in range(5))
