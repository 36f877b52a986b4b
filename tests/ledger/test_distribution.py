"""Splitting a total across legs (`ledger.distribution.distribute`), exactly.

Examples of each rule and each refusal, then properties over totals of up to the 60 digits a
precise amount may carry: the legs always add up to the total, a fixed leg gets its amount, a
percentage leg gets the floor of its share (plus the final difference only when it is the
largest leg and no "left" leg took the remainder), a "left" leg gets what remains, and no leg
is negative.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.money import MINOR_UNITS_DIGITS_MAX
from ledger.distribution import LEGS_MAX, PERCENT_PLACES_MAX, distribute
from ledger.errors import InvalidDistributionError
from ledger.models import Leg

TOTAL_MAX = 10**MINOR_UNITS_DIGITS_MAX - 1


def _legs(*distributions: str) -> list[Leg]:
    return [Leg(f"bln_{index}", text) for index, text in enumerate(distributions)]


class TestRules:
    def test_percentages_round_down_and_the_difference_goes_to_the_largest_leg(self) -> None:
        # 1001 * 50 % = 500.5 each, floored to 500; the 1 left over goes to the first largest.
        assert distribute(1001, _legs("50%", "50%"), precision=100) == [501, 500]

    def test_fixed_legs_come_first_then_percentages_of_the_total_then_left(self) -> None:
        legs = _legs("left", "2.50", "10%")
        assert distribute(10_000, legs, precision=100) == [8_750, 250, 1_000]

    def test_a_precise_distribution_is_in_minor_units(self) -> None:
        legs = [Leg("bln_a", None, precise_distribution=7), Leg("bln_b", "left")]
        assert distribute(10, legs, precision=100) == [7, 3]

    def test_a_total_below_one_minor_unit_goes_to_the_first_leg(self) -> None:
        assert distribute(0, _legs("50%", "50%"), precision=100) == [0, 0]

    def test_trailing_zeros_of_a_percentage_add_no_places(self) -> None:
        long_half = "50." + "0" * (PERCENT_PLACES_MAX + 5) + "%"
        assert len(long_half) > PERCENT_PLACES_MAX
        assert distribute(10, [Leg("bln_a", long_half), Leg("bln_b", "left")], precision=1) == [
            5,
            5,
        ]

    @pytest.mark.parametrize(
        ("distributions", "message"),
        [
            (("60%", "50%"), "more than 100%"),
            (("left", "left"), "only one leg"),
            (("20.00", "left"), "exceeds what is left"),
            (("0%",), "above 0"),
            (("101%",), "at most 100"),
            (("abc%",), "invalid percentage"),
            (("12,5",), "invalid distribution"),
            (("",), "no distribution"),
            (("1E-999999999%",), "decimal places"),
            (("90%", "5.00"), "more than the amount"),
        ],
    )
    def test_refusals(self, distributions: tuple[str, ...], message: str) -> None:
        with pytest.raises(InvalidDistributionError, match=message):
            distribute(1_000, _legs(*distributions), precision=100)

    def test_leg_count_is_bounded(self) -> None:
        with pytest.raises(InvalidDistributionError, match="legs"):
            distribute(1_000, [], precision=100)
        with pytest.raises(InvalidDistributionError, match="legs"):
            distribute(1_000, _legs(*["left"] * (LEGS_MAX + 1)), precision=100)


class TestLargeTotals:
    """Totals past the 28 digits of Python's default decimal context."""

    def test_halves_of_a_30_digit_total(self) -> None:
        total = 123_456_789_012_345_678_901_234_567_891
        assert distribute(total, _legs("50%", "50%"), precision=1) == [
            total // 2 + 1,
            total // 2,
        ]

    def test_a_percentage_of_a_41_digit_total_is_exact(self) -> None:
        total = 10**40 + 7
        share, rest = distribute(total, _legs("33.33%", "left"), precision=100)
        assert share == total * 3333 // 10_000
        assert rest == total - share


percent_text = st.builds(
    lambda whole, places: f"{whole}.{places:04d}%" if places else f"{whole}%",
    st.integers(0, 60),
    st.integers(0, 9999),
).filter(lambda text: Fraction(text[:-1]) > 0)


@st.composite
def splits(draw: st.DrawFn) -> tuple[int, list[Leg]]:
    """A total and legs that fit it: fixed legs within the total, percentages within 100 %,
    at most one "left" leg, in any order."""
    total = draw(st.integers(1, TOTAL_MAX))
    legs: list[Leg] = []
    fixed_left = total
    percent_left = Fraction(100)
    for index in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["fixed", "percent", "percent"]))
        if kind == "fixed":
            amount = draw(st.integers(0, fixed_left))
            fixed_left -= amount
            legs.append(Leg(f"bln_{index}", None, precise_distribution=amount))
            continue
        text = draw(percent_text)
        if Fraction(text[:-1]) > percent_left:
            continue
        percent_left -= Fraction(text[:-1])
        legs.append(Leg(f"bln_{index}", text))
    if draw(st.booleans()) or not legs:
        legs.insert(draw(st.integers(0, len(legs))), Leg("bln_left", "left"))
    return total, legs


def _expected_shares(total: int, legs: list[Leg]) -> list[int | None]:
    """Each leg's amount by its own rule (None for the "left" leg)."""
    shares: list[int | None] = []
    for leg in legs:
        if leg.precise_distribution is not None:
            shares.append(leg.precise_distribution)
        elif leg.distribution == "left":
            shares.append(None)
        else:
            percent = Fraction((leg.distribution or "")[:-1])
            shares.append(total * percent.numerator // (percent.denominator * 100))
    return shares


class TestProperties:
    @given(splits())
    def test_legs_add_up_to_the_total_each_by_its_rule(self, split: tuple[int, list[Leg]]) -> None:
        total, legs = split
        shares = _expected_shares(total, legs)
        if sum(s for s in shares if s is not None) > total:
            # Fixed legs fit the total by construction; percentages on top of them may not.
            with pytest.raises(InvalidDistributionError, match="more than the amount"):
                distribute(total, legs, precision=100)
            return
        amounts = distribute(total, legs, precision=100)
        assert sum(amounts) == total
        assert all(amount >= 0 for amount in amounts)
        remainder = total - sum(s for s in shares if s is not None)
        has_left = None in shares
        bumped = [
            i
            for i, (amount, share) in enumerate(zip(amounts, shares, strict=True))
            if amount != share
        ]
        if has_left:
            assert bumped == [shares.index(None)]
            assert amounts[shares.index(None)] == remainder
        else:
            # Only the final difference moves, onto one leg: the first of the largest.
            assert len(bumped) <= 1
            if bumped:
                (index,) = bumped
                assert amounts[index] == shares[index] + remainder  # type: ignore[operator]
                assert shares[index] == max(s for s in shares if s is not None)

    @given(st.integers(1, TOTAL_MAX), st.integers(1, 100))
    def test_one_percentage_and_left_split_exactly(self, total: int, percent: int) -> None:
        share, rest = distribute(total, _legs(f"{percent}%", "left"), precision=1)
        assert share == total * percent // 100
        assert share + rest == total
