"""Pure rules behind the API surface: reconciliation matching, the `filter_by` parser, and the
single-flight loader of the caches. No database: these are worked examples of the decisions
the HTTP tests exercise end to end, at the boundaries where they are easiest to get wrong.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.matching import (
    Criterion,
    Side,
    aggregate,
    candidate_bounds,
    criterion,
    group_bounds,
    rules_hold,
)
from ledger.search_filter import CLAUSES_MAX, NESTING_MAX, Both, Clause, Either, parse_filter
from ledger.single_flight import SingleFlight
from ledger.surface_errors import MatchingRuleInvalidError, SearchQueryInvalidError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _side(
    amount: str,
    *,
    at: datetime | None = NOW,
    currency: str = "USD",
    reference: str = "r",
    description: str = "d",
) -> Side:
    return Side(Decimal(amount), at, (currency,) if currency else (), (reference,), (description,))


def _rule(*criteria: Criterion) -> tuple[Criterion, ...]:
    return criteria


class TestMatching:
    def test_amount_drift_is_a_fraction_of_the_ledger_amount(self) -> None:
        """equals with drift 0.01 accepts 1% of the ledger amount and nothing beyond."""
        rule = _rule(criterion("amount", "equals", "", "", Decimal("0.01")))
        assert rules_hold([rule], _side("101.00"), _side("100.00"))
        assert not rules_hold([rule], _side("101.01"), _side("100.00"))

    def test_date_drift_is_in_seconds(self) -> None:
        """A date equals with 60 s of drift accepts a minute apart, not a minute and a second."""
        rule = _rule(criterion("date", "equals", "", "", Decimal(60)))
        assert rules_hold([rule], _side("1", at=NOW + timedelta(seconds=60)), _side("1"))
        assert not rules_hold([rule], _side("1", at=NOW + timedelta(seconds=61)), _side("1"))
        assert not rules_hold([rule], _side("1", at=None), _side("1"))

    def test_text_matching(self) -> None:
        """equals ignores case; contains allows a percent of edits; an empty value matches nothing."""
        equals = _rule(criterion("reference", "equals", "", "", Decimal(0)))
        assert rules_hold([equals], _side("1", reference="INV-7"), _side("1", reference="inv-7"))
        assert not rules_hold([equals], _side("1", reference=""), _side("1", reference=""))
        fuzzy = _rule(criterion("description", "contains", "", "", Decimal(20)))
        assert rules_hold(
            [fuzzy], _side("1", description="payroll march"), _side("1", description="payrol march")
        )
        assert not rules_hold(
            [fuzzy], _side("1", description="payroll"), _side("1", description="rent")
        )

    def test_any_rule_may_match(self) -> None:
        """A rule set matches when one of its rules has every criterion holding."""
        by_amount = _rule(criterion("amount", "equals", "", "", Decimal(0)))
        by_reference = _rule(criterion("reference", "equals", "", "", Decimal(0)))
        assert rules_hold(
            [by_amount, by_reference], _side("2", reference="x"), _side("3", reference="x")
        )
        assert not rules_hold(
            [by_amount, by_reference], _side("2", reference="x"), _side("3", reference="y")
        )

    def test_a_group_is_its_sum_earliest_date_and_any_member(self) -> None:
        """A mixed-currency group passes a currency criterion; its text matches through any member."""
        group = aggregate(
            [
                _side("1.50", currency="USD", reference="a"),
                _side("2.50", at=NOW - timedelta(hours=1), currency="EUR", reference="b"),
            ]
        )
        assert group.amount == Decimal("4.00")
        assert group.occurred_at == NOW - timedelta(hours=1)
        currency = _rule(criterion("currency", "equals", "", "", Decimal(0)))
        reference = _rule(criterion("reference", "equals", "", "", Decimal(0)))
        assert rules_hold([currency], _side("4", currency="GBP"), group)
        assert rules_hold([reference], _side("4", reference="B"), group)

    def test_candidate_bounds_cover_every_rule(self) -> None:
        """The bounds are the union over rules; a rule without an amount criterion lifts the amount bound."""
        exact = _rule(
            criterion("amount", "equals", "", "", Decimal(0)),
            criterion("currency", "equals", "", "", Decimal(0)),
        )
        loose = _rule(criterion("amount", "equals", "", "", Decimal("0.5")))
        bounds = candidate_bounds([exact, loose], _side("100"))
        assert bounds is not None
        assert (bounds.amount_low, bounds.amount_high) == (Decimal(0), Decimal(200))
        assert bounds.currency is None
        only_exact = candidate_bounds([exact], _side("100"))
        assert only_exact is not None
        assert (only_exact.amount_low, only_exact.amount_high, only_exact.currency) == (
            Decimal(100),
            Decimal(100),
            "USD",
        )
        text_only = candidate_bounds(
            [_rule(criterion("reference", "equals", "", "", Decimal(0)))], _side("100")
        )
        assert text_only is not None
        assert text_only.amount_low is None

    def test_a_date_rule_without_a_date_matches_nothing(self) -> None:
        """A rule on dates cannot match a record that has none: no candidates at all."""
        rule = _rule(criterion("date", "equals", "", "", Decimal(10)))
        assert candidate_bounds([rule], _side("1", at=None)) is None

    def test_group_members_keep_only_the_date_floor(self) -> None:
        """A member of a group is bounded only by the earliest date its group may start at."""
        rule = _rule(
            criterion("amount", "equals", "", "", Decimal(0)),
            criterion("date", "equals", "", "", Decimal(60)),
        )
        bounds = group_bounds(candidate_bounds([rule], _side("10")))
        assert bounds is not None
        assert (bounds.amount_low, bounds.amount_high, bounds.date_high) == (None, None, None)
        assert bounds.date_low == NOW - timedelta(seconds=60)

    @pytest.mark.parametrize(
        ("field", "operator", "drift"),
        [
            ("amount", "contains", 0),
            ("amount", "equals", 2),
            ("date", "equals", -1),
            ("colour", "equals", 0),
            ("reference", "matches", 0),
            ("description", "contains", 101),
        ],
    )
    def test_invalid_criteria_are_refused(self, field: str, operator: str, drift: int) -> None:
        """Unknown fields or operators, nonsense pairs and drifts out of range are RECON_RULE_INVALID."""
        with pytest.raises(MatchingRuleInvalidError):
            criterion(field, operator, "", "", Decimal(drift))


class TestFilterSyntax:
    def test_precedence_lists_and_ranges(self) -> None:
        """`&&` binds tighter than `||`; lists, ranges and backticked values parse as Typesense writes them."""
        node = parse_filter("a:=1 || b:[x, `y, z`] && c:[1..5, 10..20]")
        assert node == Either(
            (
                Clause("a", "eq", ("1",)),
                Both(
                    (Clause("b", "in", ("x", "y, z")), Clause("c", "range", ("1", "5", "10", "20")))
                ),
            )
        )
        assert parse_filter("meta_data.tier:!=[gold, silver]") == Clause(
            "meta_data.tier", "not_in", ("gold", "silver")
        )
        assert parse_filter("  ") is None

    @pytest.mark.parametrize(
        "text",
        [
            "status",
            "status:",
            "status:[A",
            "(status:A",
            "status:>[1,2]",
            "x:[1..2, 3]",
            "x:`open",
            "(" * (NESTING_MAX + 1) + "a:1" + ")" * (NESTING_MAX + 1),
            " && ".join(f"f{i}:1" for i in range(CLAUSES_MAX + 1)),
        ],
    )
    def test_malformed_filters_are_refused(self, text: str) -> None:
        """Broken or oversized filters are SRCH_QUERY_INVALID, never a partial query."""
        with pytest.raises(SearchQueryInvalidError):
            parse_filter(text)


class TestSingleFlight:
    async def test_concurrent_callers_share_one_load(self) -> None:
        """Ten callers of one key cause one load and all get its result."""
        flight: SingleFlight[str, int] = SingleFlight()
        loads = 0
        release = asyncio.Event()

        async def load() -> int:
            nonlocal loads
            loads += 1
            await release.wait()
            return 42

        callers = [asyncio.create_task(flight.run("k", load)) for _ in range(10)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*callers) == [42] * 10
        assert loads == 1

    async def test_a_cancelled_caller_does_not_cancel_the_load(self) -> None:
        """When one waiter goes away the others still get the result."""
        flight: SingleFlight[str, str] = SingleFlight()
        release = asyncio.Event()

        async def load() -> str:
            await release.wait()
            return "done"

        leaver = asyncio.create_task(flight.run("k", load))
        stayer = asyncio.create_task(flight.run("k", load))
        await asyncio.sleep(0)
        leaver.cancel()
        release.set()
        assert await stayer == "done"
        with pytest.raises(asyncio.CancelledError):
            await leaver
