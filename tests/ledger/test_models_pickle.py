"""Ledger commands and outcomes survive pickling (how they cross the shard boundary) whole."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kit.errors import ValidationError
from ledger.models import (
    Effect,
    Figures,
    Leg,
    Outcome,
    PostBulk,
    PostTransaction,
    TransactionRecord,
    TransactionStatus,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _command(reference: str) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{reference}",
        reference=reference,
        precise_amount=12_345,
        precision=100,
        currency="USD",
        description="rent",
        source="bln_a",
        destination=None,
        destinations=(Leg("bln_b", "60%"), Leg("bln_c", "left")),
        meta_data={"note": "x", "n": [1, 2]},
    )


def _record() -> TransactionRecord:
    return TransactionRecord(
        transaction_id="txn_1",
        parent_transaction="",
        source="bln_a",
        destination="bln_b",
        reference="ref-1",
        precise_amount=10**20,
        precision=100,
        currency="USD",
        description="d",
        status=TransactionStatus.INFLIGHT,
        hash="ab" * 32,
        allow_overdraft=True,
        overdraft_limit=Decimal("12.5"),
        inflight=True,
        skip_queue=False,
        atomic=True,
        sources=None,
        destinations=(Leg("bln_b", None, 10, "n", "txn_2"),),
        committed_amount=3,
        voided_amount=4,
        outcome={"status": "APPLIED"},
        created_at=NOW,
        effective_date=None,
        scheduled_for=NOW,
        inflight_expiry_date=None,
        inflight_commit_date=None,
        meta_data={"k": "v"},
        effect=Effect.INFLIGHT,
    )


@pytest.mark.parametrize(
    "value",
    [
        _command("ref-a"),
        PostBulk(
            batch_id="bulk_1", items=(_command("r1"), _command("r2")), atomic=True, inflight=False
        ),
        Outcome(201, record=_record(), extra={"queued": True}),
        Outcome(400, error=ValidationError("bad amount")),
        Figures(1, 2, 3, 4),
    ],
)
def test_round_trip_is_equal_and_of_the_same_class(value: object) -> None:
    copy = pickle.loads(pickle.dumps(value, protocol=5))
    assert type(copy) is type(value)
    if isinstance(value, Outcome) and value.error is not None:
        assert isinstance(copy, Outcome)
        assert copy.error is not None
        assert (copy.status_code, type(copy.error), str(copy.error)) == (
            400,
            ValidationError,
            str(value.error),
        )
    else:
        assert copy == value


def test_frozen_copies_stay_frozen() -> None:
    copy = pickle.loads(pickle.dumps(_record()))
    with pytest.raises(AttributeError):
        copy.precise_amount = 1
