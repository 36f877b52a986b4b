"""What a batch writes is what it reads back: every field of a transaction, through PostgreSQL.

A batch's new transactions travel to PostgreSQL as one jsonb array inside the statement that
opens the batch (`repository.open_batch`). These tests write random transactions that way and
read them back with the engine's own reader: amounts far past 64 bits, fractional overdraft
limits, timestamps with microseconds in any offset, metadata, split legs and outcomes must come
back equal, and text that JSON escapes (quotes, backslashes, newlines, non-ASCII) unchanged.
Each example runs in a transaction that is rolled back, so no batch is ever committed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.db import connect
from ledger import repository
from ledger.models import Effect, Figures, Leg, TransactionRecord, TransactionStatus

pytestmark = pytest.mark.db

# Status and effect pairs the table's CHECK allows, and whether a hold's progress may be set.
_STATES = [
    (TransactionStatus.APPLIED, Effect.APPLIED, False),
    (TransactionStatus.APPLIED, Effect.COMMIT, False),
    (TransactionStatus.INFLIGHT, Effect.INFLIGHT, True),
    (TransactionStatus.VOID, Effect.VOID, False),
    (TransactionStatus.QUEUED, Effect.NONE, False),
    (TransactionStatus.SCHEDULED, Effect.NONE, False),
    (TransactionStatus.REJECTED, Effect.NONE, False),
]

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
_big = st.integers(min_value=0, max_value=10**40)
_json_scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
# Naive bounds for `st.datetimes`, which then gets each value its own fixed offset.
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC).replace(tzinfo=None)
_LATEST = datetime(9998, 12, 30, tzinfo=UTC).replace(tzinfo=None)
_moment = st.builds(
    lambda base, minutes: base.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=_EARLIEST, max_value=_LATEST),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
_legs = st.none() | st.lists(
    st.builds(
        Leg,
        identifier=_text.filter(bool),
        distribution=st.none() | _text,
        precise_distribution=st.none() | st.integers(0, 2**63 - 1),
        narration=st.none() | _text,
        transaction_id=st.none() | st.just(f"txn_{uuid.uuid4()}"),
    ),
    max_size=3,
).map(tuple)


@st.composite
def _records(draw: st.DrawFn) -> TransactionRecord:
    status, effect, may_progress = draw(st.sampled_from(_STATES))
    amount = draw(_big)
    committed = draw(st.integers(0, amount)) if may_progress else 0
    voided = draw(st.integers(0, amount - committed)) if may_progress else 0
    source = "@" + draw(_text.filter(lambda t: t.strip() == t and " " not in t and t))
    return TransactionRecord(
        transaction_id=f"txn_{uuid.uuid4()}",
        parent_transaction=draw(st.sampled_from(["", f"txn_{uuid.uuid4()}"])),
        source=source[:255],
        destination=f"bln_{uuid.uuid4()}",
        reference=f"{draw(_text)}-{uuid.uuid4()}",
        precise_amount=amount,
        precision=draw(st.integers(min_value=1, max_value=10**30)),
        currency=draw(st.sampled_from(["USD", "EUR", "BTC", "usd.c", "X:Y_1-2"])),
        description=draw(_text),
        status=status,
        hash=draw(_text),
        allow_overdraft=draw(st.booleans()),
        overdraft_limit=Decimal(draw(st.integers(0, 10**30))).scaleb(-draw(st.integers(0, 6))),
        inflight=draw(st.booleans()),
        skip_queue=draw(st.booleans()),
        atomic=draw(st.booleans()),
        sources=draw(_legs),
        destinations=draw(_legs),
        committed_amount=committed,
        voided_amount=voided,
        outcome=draw(st.none() | st.dictionaries(_text, _json, max_size=3)),
        created_at=draw(_moment),
        effective_date=draw(st.none() | _moment),
        scheduled_for=draw(st.none() | _moment),
        inflight_expiry_date=draw(st.none() | _moment),
        inflight_commit_date=draw(st.none() | _moment),
        meta_data=draw(st.dictionaries(_text, _json, max_size=4)),
        effect=effect,
    )


class _RolledBackError(Exception):
    """Ends an example's transaction without committing it."""


@pytest.fixture(scope="module")
def session(database_dsn: str) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    """One connection (with the product's codecs) on a loop of its own, for every example."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(connect(database_dsn, timeout_s=10))
    try:
        yield loop, conn
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def _write_and_read(
    session: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
    records: list[TransactionRecord],
    changes: dict[str, Figures] | None = None,
) -> tuple[int, list[TransactionRecord | None], list[tuple[Any, ...]]]:
    loop, conn = session

    async def run() -> tuple[int, list[TransactionRecord | None], list[tuple[Any, ...]]]:
        read: list[TransactionRecord | None] = []
        try:
            async with conn.transaction():
                batch_id = await repository.open_batch(
                    conn,
                    writer="test",
                    item_count=len(records),
                    changes=changes or {},
                    records=records,
                )
                read.extend(
                    [await repository.find_transaction(conn, r.transaction_id) for r in records]
                )
                batches = await conn.fetch(
                    "SELECT t.transaction_id, t.batch_id, t.outcome IS NULL AS no_outcome,"
                    " t.sources IS NULL AS no_sources, t.destinations IS NULL AS no_destinations"
                    " FROM ledger.transactions t WHERE t.transaction_id = ANY($1::text[])",
                    [r.transaction_id for r in records],
                )
                raise _RolledBackError
        except _RolledBackError:
            pass
        return batch_id, read, sorted(tuple(row) for row in batches)

    return loop.run_until_complete(run())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(_records(), min_size=1, max_size=5))
def test_every_field_reads_back_equal(
    session: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], records: list[TransactionRecord]
) -> None:
    batch_id, read, rows = _write_and_read(session, records)
    assert read == records
    # Every row joined this batch, and an absent outcome or split is SQL NULL, not JSON null.
    assert rows == sorted(
        (r.transaction_id, batch_id, r.outcome is None, r.sources is None, r.destinations is None)
        for r in records
    )


def test_a_batch_with_no_transactions_still_opens(
    session: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
) -> None:
    """Nothing to insert and nothing to move: the batch row is still written (its id is new)."""
    first, read, _ = _write_and_read(session, [])
    second, _, _ = _write_and_read(session, [])
    assert read == []
    assert second > first


def test_one_record_past_what_json_numbers_and_utc_carry(
    session: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
) -> None:
    """An amount of 10**40 minor units, a limit of 12.345, an instant at +05:00 with
    microseconds and text JSON must escape, read back as written (the instant as the same one)."""
    instant = datetime(2026, 12, 1, 10, 39, 45, 123456, tzinfo=timezone(timedelta(hours=5)))
    record = TransactionRecord(
        transaction_id=f"txn_{uuid.uuid4()}",
        parent_transaction="",
        source=f"bln_{uuid.uuid4()}",
        destination=f"bln_{uuid.uuid4()}",
        reference='quote " backslash \\ newline \n emoji \U0001f600 ' + str(uuid.uuid4()),
        precise_amount=10**40,
        precision=10**18,
        currency="USD",
        description="tab\there",
        status=TransactionStatus.APPLIED,
        hash="h",
        allow_overdraft=True,
        overdraft_limit=Decimal("12.345"),
        inflight=False,
        skip_queue=True,
        atomic=False,
        sources=None,
        destinations=(Leg("@split", "50%", 2**62, "half", None),),
        committed_amount=0,
        voided_amount=0,
        outcome={"status": "APPLIED", "nested": [1, None, {"k": "v"}]},
        created_at=instant,
        effective_date=instant - timedelta(microseconds=1),
        scheduled_for=None,
        inflight_expiry_date=None,
        inflight_commit_date=None,
        meta_data={"order": 7, "tags": ["a", "b"]},
        effect=Effect.APPLIED,
    )
    _, (read,), _ = _write_and_read(session, [record])
    assert read == record
    assert read is not None
    assert read.precise_amount == 10**40
    assert read.overdraft_limit == Decimal("12.345")
    assert read.created_at.astimezone(UTC) == datetime(2026, 12, 1, 5, 39, 45, 123456, tzinfo=UTC)


def test_the_same_statement_moves_the_balances(
    session: tuple[asyncio.AbstractEventLoop, asyncpg.Connection],
) -> None:
    """The batch's summed changes are recorded under its id and applied to the balances."""
    loop, conn = session

    async def run() -> tuple[int, list[Any], list[Any]]:
        try:
            async with conn.transaction():
                ids = sorted(f"bln_{uuid.uuid4()}" for _ in range(2))
                await conn.execute(
                    "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
                    " SELECT id, 'general_ledger_id', 'USD' FROM unnest($1::text[]) id",
                    ids,
                )
                changes = {ids[0]: Figures(debit=10**30 + 5), ids[1]: Figures(credit=10**30 + 5)}
                batch_id = await repository.open_batch(
                    conn, writer="test", item_count=1, changes=changes, records=[]
                )
                balances = await conn.fetch(
                    "SELECT balance_id, balance, credit_balance, debit_balance, version"
                    " FROM ledger.balances WHERE balance_id = ANY($1::text[]) ORDER BY balance_id",
                    ids,
                )
                recorded = await conn.fetch(
                    "SELECT balance_id, batch_id, credit, debit FROM ledger.balance_changes"
                    " WHERE balance_id = ANY($1::text[]) ORDER BY balance_id",
                    ids,
                )
                raise _RolledBackError((batch_id, balances, recorded))
        except _RolledBackError as done:
            return done.args[0]  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    batch_id, balances, recorded = loop.run_until_complete(run())
    moved = 10**30 + 5
    assert [tuple(r) for r in balances] == [
        (balances[0]["balance_id"], -moved, 0, moved, 1),
        (balances[1]["balance_id"], moved, moved, 0, 1),
    ]
    assert [(r["batch_id"], r["credit"], r["debit"]) for r in recorded] == [
        (batch_id, 0, moved),
        (batch_id, moved, 0),
    ]
