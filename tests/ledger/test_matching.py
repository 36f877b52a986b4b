"""Reconciliation matching on amounts past the 28 digits of Python's default decimal context.

A ledger amount may carry up to 60 digits; a group's sum and an `equals` comparison with a drift
are computed without rounding, so two amounts that differ only past the 28th digit never match
by accident, and a drift is honoured to the last digit.
"""

from __future__ import annotations

from decimal import Decimal

from ledger.matching import Criterion, Side, aggregate, criterion_holds


def _side(amount: str) -> Side:
    return Side(Decimal(amount), None, ("USD",), (), ())


EQUALS = Criterion("amount", "equals")


def test_a_group_sum_keeps_every_digit() -> None:
    group = aggregate([_side("1000000000000000000000000000"), _side("0.000000001")])
    assert group.amount == Decimal("1000000000000000000000000000.000000001")
    assert not criterion_holds(EQUALS, group, _side("1000000000000000000000000000"))
    assert criterion_holds(EQUALS, group, _side("1000000000000000000000000000.000000001"))


def test_a_drift_is_exact_on_long_amounts() -> None:
    ledger = _side("123456789012345678901234567890")
    tenth_percent = Criterion("amount", "equals", allowable_drift=Decimal("0.001"))
    inside = _side("123580245801358024580135802457.890")  # + 0.1 % exactly
    outside = _side("123580245801358024580135802457.891")  # a thousandth more
    assert criterion_holds(tenth_percent, inside, ledger)
    assert not criterion_holds(tenth_percent, outside, ledger)
