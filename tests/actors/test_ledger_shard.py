"""Ledger shards on a real local Ray: routing, coalescing, exact results, and crash recovery.

Goal: prove the sharded engine keeps the ledger exact under concurrency and survives a shard
being killed mid-load. Method: two `LedgerShard` actors on the test database; thousands of
concurrent transfers through `ShardedLedger` (coalesced per shard); then SQL checks that every
balance is what the accepted transfers imply and every currency sums to zero. For the crash,
one shard is killed while transfers are in flight; clients retry failed calls with the same
Idempotency-Key until they get an answer; each transfer must then exist exactly once and the
balances must match, and the killed shard must come back without intervention.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import ray

from actors.ledger_shard import CALL_POSTINGS_MAX, ShardConfig, ShardedLedger, start_shards
from kit.db import Database
from ledger.models import (
    CommitInflight,
    IdempotencyClaim,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    TransactionRecord,
    VoidInflight,
)
from ledger.verification import verify

pytestmark = [pytest.mark.ray, pytest.mark.db]

BALANCES = 50
TRANSFERS = 2_000
HOT_TRANSFERS = 1_000
SHARDS = 2
CRASH_IN_FLIGHT = 64  # transfers outstanding at once in the crash test
MIXED_BALANCES = 8
MIXED_WORKERS = 12
MIXED_OPERATIONS = 40  # each worker's, one at a time


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for this module."""
    ray.init(num_cpus=2, include_dashboard=False, namespace="dwaybank", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def shards(local_ray: None, database_dsn: str) -> list[Any]:
    """Two shard actors on the test database."""
    return start_shards(SHARDS, ShardConfig(database_url=database_dsn, pool_max_size=3))


@pytest.fixture
async def ledger(shards: list[Any]) -> ShardedLedger:
    """The ingress-side port over the shards."""
    return ShardedLedger(shards)


async def _make_balances(db: Database, count: int) -> list[str]:
    ids = [f"bln_{uuid.uuid4()}" for _ in range(count)]
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
            " SELECT id, 'general_ledger_id', 'USD' FROM unnest($1::text[]) AS id",
            ids,
        )
    return ids


def _transfer(
    source: str, destination: str, amount: int, *, key: str | None = None
) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=key or f"ref-{uuid.uuid4()}",
        precise_amount=amount,
        precision=100,
        currency="USD",
        description="",
        source=source,
        destination=destination,
        skip_queue=True,
        idempotency=IdempotencyClaim(key, "0" * 64) if key else None,
    )


async def _fund(ledger: ShardedLedger, balances: list[str], amount: int) -> None:
    commands = [
        PostTransaction(
            transaction_id=f"txn_{uuid.uuid4()}",
            reference=f"fund-{uuid.uuid4()}",
            precise_amount=amount,
            precision=100,
            currency="USD",
            description="",
            source="@WorldUSD",
            destination=b,
            allow_overdraft=True,
            skip_queue=True,
        )
        for b in balances
    ]
    outcomes = await ledger.execute(commands)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]


async def _figures(db: Database, ids: list[str]) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT balance_id, balance FROM ledger.balances WHERE balance_id = ANY($1)", ids
        )
    return {row["balance_id"]: int(row["balance"]) for row in rows}


async def _currency_sum(db: Database) -> int:
    async with db.connection() as conn:
        total = await conn.fetchval(
            "SELECT coalesce(sum(balance), 0) FROM ledger.balances WHERE currency = 'USD'"
        )
    return int(total)


@dataclass(slots=True)
class _Hold:
    source: str
    destination: str
    left: int  # what neither a commit nor a void has taken yet


class _MixedModel:
    """What the answers alone imply: every balance, and what each hold still holds."""

    def __init__(self, balances: list[str], funded: int) -> None:
        self.balances = dict.fromkeys(balances, funded)
        self.holds: dict[str, _Hold] = {}
        self.settled: list[str] = []  # applied transactions, to refund
        self.successes: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    def move(self, record: TransactionRecord) -> None:
        assert record.source is not None
        assert record.destination is not None
        self.balances[record.source] -= record.precise_amount
        self.balances[record.destination] += record.precise_amount

    def answered(self, kind: str, key: str, outcome: Outcome) -> None:
        """Take in one answer: `key` is the hold a commit or void named."""
        if outcome.error is not None:
            self.refusals[outcome.error.code] += 1
            return
        record = outcome.record
        assert record is not None
        status, settled_id = record.status.value, record.transaction_id
        if status == "QUEUED":  # the queued path ran its child in the same batch
            assert record.outcome is not None
            status, settled_id = record.outcome["status"], record.outcome["transaction_id"]
        if status == "REJECTED":
            self.refusals["REJECTED"] += 1
            return
        self.successes[kind] += 1
        if kind == "hold":
            assert status == "INFLIGHT"
            assert record.source is not None
            assert record.destination is not None
            self.holds[record.transaction_id] = _Hold(
                record.source, record.destination, record.precise_amount
            )
        elif kind == "void":
            self.holds[key].left -= record.precise_amount
        else:
            assert status == "APPLIED"
            self.move(record)
            if kind == "commit":
                self.holds[key].left -= record.precise_amount
            if kind != "refund":
                self.settled.append(settled_id)

    def inflight(self) -> tuple[dict[str, int], dict[str, int]]:
        """Outstanding holds per balance: debits at their sources, credits at their
        destinations."""
        held_out, held_in = dict.fromkeys(self.balances, 0), dict.fromkeys(self.balances, 0)
        for hold in self.holds.values():
            assert hold.left >= 0
            held_out[hold.source] += hold.left
            held_in[hold.destination] += hold.left
        return held_out, held_in


class TestConcurrency:
    async def test_2000_concurrent_transfers_among_50_balances(
        self, ledger: ShardedLedger, db: Database
    ) -> None:
        """2,000 concurrent transfers end with the balances the accepted ones imply, sum zero."""
        balances = await _make_balances(db, BALANCES)
        await _fund(ledger, balances, 1_000)
        rng = random.Random(7)
        plans: list[tuple[str, str, int]] = []
        for _ in range(TRANSFERS):
            source, destination = rng.sample(balances, 2)
            plans.append((source, destination, rng.randint(1, 200)))
        outcomes = await asyncio.gather(
            *(ledger.execute([_transfer(s, d, a)]) for s, d, a in plans)
        )
        expected = dict.fromkeys(balances, 1_000)
        for (source, destination, amount), (outcome,) in zip(plans, outcomes, strict=True):
            if outcome.error is None:
                expected[source] -= amount
                expected[destination] += amount
            else:
                assert outcome.error.code == "TXN_INSUFFICIENT_FUNDS"
        assert await _figures(db, balances) == expected
        assert min(expected.values()) >= 0
        assert await _currency_sum(db) == 0

    async def test_1000_transfers_into_one_hot_balance(
        self, ledger: ShardedLedger, db: Database
    ) -> None:
        """1,000 concurrent transfers into one balance all land, exactly."""
        sources = await _make_balances(db, 20)
        (hot,) = await _make_balances(db, 1)
        await _fund(ledger, sources, 10_000)
        plans = [(sources[i % len(sources)], i % 97 + 1) for i in range(HOT_TRANSFERS)]
        outcomes = await asyncio.gather(*(ledger.execute([_transfer(s, hot, a)]) for s, a in plans))
        assert all(o.error is None for (o,) in outcomes)
        assert (await _figures(db, [hot]))[hot] == sum(a for _, a in plans)
        assert await _currency_sum(db) == 0

    async def test_mixed_operations_over_two_shards_match_a_model(
        self, ledger: ShardedLedger, db: Database
    ) -> None:
        """Transfers and holds (queued and not), whole and partial commits, voids and refunds
        racing over balances on both shards: every balance and every outstanding hold is what
        the answers alone imply, and the books verify."""
        balances = await _make_balances(db, MIXED_BALANCES)
        await _fund(ledger, balances, 10_000)
        model = _MixedModel(balances, 10_000)

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(MIXED_OPERATIONS):
                kind = rng.choice(["transfer", "transfer", "hold", "commit", "void", "refund"])
                key = ""
                command: Any
                if kind in {"transfer", "hold"}:
                    source, destination = rng.sample(balances, 2)
                    command = replace(
                        _transfer(source, destination, rng.randint(1, 3_000)),
                        skip_queue=rng.random() < 0.5,
                        inflight=kind == "hold",
                    )
                elif kind in {"commit", "void"} and model.holds:
                    key = rng.choice(list(model.holds))
                    child = (f"txn_{uuid.uuid4()}", f"ref_{uuid.uuid4()}")
                    part = rng.randint(1, 2_000) if rng.random() < 0.5 else None
                    command = (
                        CommitInflight(key, *child, precise_amount=part)
                        if kind == "commit"
                        else VoidInflight(key, *child)
                    )
                elif kind == "refund" and model.settled:
                    original = rng.choice(model.settled)
                    command = RefundTransaction(original, f"txn_{uuid.uuid4()}", skip_queue=True)
                else:
                    continue
                (outcome,) = await ledger.execute([command])
                model.answered(kind, key, outcome)

        await asyncio.gather(*(worker(seed) for seed in range(MIXED_WORKERS)))
        assert set(model.successes) == {"transfer", "hold", "commit", "void", "refund"}
        assert model.refusals["REJECTED"] + model.refusals["TXN_INSUFFICIENT_FUNDS"] > 0
        async with db.connection() as conn:
            rows = await conn.fetch(
                "SELECT balance_id, balance, inflight_debit_balance, inflight_credit_balance"
                " FROM ledger.balances WHERE balance_id = ANY($1)",
                balances,
            )
            report = await verify(conn)
        assert {r["balance_id"]: int(r["balance"]) for r in rows} == model.balances
        held_out, held_in = model.inflight()
        assert {r["balance_id"]: int(r["inflight_debit_balance"]) for r in rows} == held_out
        assert {r["balance_id"]: int(r["inflight_credit_balance"]) for r in rows} == held_in
        assert report.is_clean, report.findings[:3]

    async def test_concurrent_bulks_heavier_than_one_call_land_exactly(
        self, ledger: ShardedLedger, db: Database
    ) -> None:
        """Bulks whose items outweigh one call (a second call then leaves while the first is
        out) all apply, each item once, with exact balances and a zero sum."""
        balances = await _make_balances(db, 30)
        await _fund(ledger, balances, 1_000_000)
        rng = random.Random(5)
        bulk_size = 500
        # Five calls' worth at once over the two shards: one of them gets at least two and a
        # half, so its coalescer sends a second call while the first is out.
        bulks = 5 * CALL_POSTINGS_MAX // bulk_size
        plans: list[list[tuple[str, str, int]]] = []
        for _ in range(bulks):
            plan = []
            for _ in range(bulk_size):
                source, destination = rng.sample(balances, 2)
                plan.append((source, destination, rng.randint(1, 50)))
            plans.append(plan)
        commands = [
            PostBulk(
                batch_id=f"bulk_{uuid.uuid4()}",
                items=tuple(_transfer(s, d, a) for s, d, a in plan),
                atomic=False,
                inflight=False,
            )
            for plan in plans
        ]
        outcomes = await asyncio.gather(*(ledger.execute([c]) for c in commands))
        assert all(o.error is None for (o,) in outcomes), [o.error for (o,) in outcomes]
        expected = dict.fromkeys(balances, 1_000_000)
        for plan in plans:
            for source, destination, amount in plan:
                expected[source] -= amount
                expected[destination] += amount
        assert await _figures(db, balances) == expected
        assert await _currency_sum(db) == 0
        async with db.connection() as conn:
            posted = await conn.fetchval(
                "SELECT count(*) FROM ledger.transactions WHERE parent_transaction = ANY($1)",
                [c.batch_id for c in commands],
            )
        assert posted == bulks * bulk_size


class Progress:
    """Counts answered transfers and retries after a 5xx."""

    def __init__(self) -> None:
        self.answered = 0
        self.retries = 0
        self.quarter = asyncio.Event()


async def _until_answered(
    ledger: ShardedLedger, command: PostTransaction, progress: Progress, total: int
) -> Outcome:
    for _ in range(200):
        (outcome,) = await ledger.execute([command])
        if outcome.error is None or outcome.error.status < 500:
            progress.answered += 1
            if progress.answered >= total // 4:
                progress.quarter.set()
            return outcome
        progress.retries += 1
        await asyncio.sleep(0.05)
    raise AssertionError("the ledger never came back")


class TestCrash:
    async def test_killing_a_shard_loses_nothing_and_applies_nothing_twice(
        self, shards: list[Any], ledger: ShardedLedger, db: Database
    ) -> None:
        """A shard killed mid-load restarts by itself; retried transfers apply exactly once."""
        balances = await _make_balances(db, 10)
        await _fund(ledger, balances, 100_000)
        rng = random.Random(11)
        keys = [f"crash-{uuid.uuid4()}" for _ in range(1_500)]
        plans: list[tuple[str, str, str, int]] = []
        for key in keys:
            source, destination = rng.sample(balances, 2)
            plans.append((key, source, destination, rng.randint(1, 50)))

        progress = Progress()

        async def killer() -> None:
            await progress.quarter.wait()
            ray.kill(shards[0], no_restart=False)

        # A bounded number in flight, so that work is still arriving and being executed when
        # the kill lands, however fast the shard has become.
        in_flight = asyncio.Semaphore(CRASH_IN_FLIGHT)

        async def submit(command: PostTransaction) -> Outcome:
            async with in_flight:
                return await _until_answered(ledger, command, progress, len(plans))

        results = await asyncio.gather(
            killer(), *(submit(_transfer(s, d, a, key=k)) for k, s, d, a in plans)
        )
        outcomes = [o for o in results[1:] if o is not None]
        assert len(outcomes) == len(plans)
        assert progress.retries > 0, "the kill interrupted calls in flight"
        assert all(o.error is None for o in outcomes), {o.error.code for o in outcomes if o.error}
        expected = dict.fromkeys(balances, 100_000)
        for _, source, destination, amount in plans:
            expected[source] -= amount
            expected[destination] += amount
        assert await _figures(db, balances) == expected
        async with db.connection() as conn:
            counts = await conn.fetch(
                "SELECT reference, count(*) AS n FROM ledger.transactions WHERE reference = ANY($1) GROUP BY 1",
                keys,
            )
        assert len(counts) == len(keys)
        assert {row["n"] for row in counts} == {1}
        stats = await ledger.stats()
        assert len(stats) == SHARDS
