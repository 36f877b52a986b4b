"""Money: integer minor units with a precision, converted from client decimals like Blnk.

Worked examples pin the rounding rule (half away from zero, shopspring's `Round(0)`); property
tests check that conversion is exact wherever it can be and never drifts by more than half a
minor unit where it cannot.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.money import (
    AMOUNT_SIGNIFICANT_DIGITS_MAX,
    PRECISION_MAX,
    InvalidAmountError,
    InvalidPrecisionError,
    Money,
    decimal_from_float,
    decimal_places,
    format_amount,
    from_minor_units,
    parse_decimal,
    parse_minor_units,
    parse_precision,
    to_minor_units,
)

POWERS_OF_TEN = st.sampled_from([10**k for k in range(0, 13)])


class TestWorkedExamples:
    @pytest.mark.parametrize(
        ("amount", "precision", "units"),
        [
            ("100.50", 100, 10050),
            ("0.005", 100, 1),  # half away from zero
            ("-0.005", 100, -1),  # ... also below zero
            ("0.0049", 100, 0),
            ("1.005", 100, 101),  # exact decimal, not the float 1.00499999...
            ("12.3456789", 1_000_000, 12345679),
            ("7", 1, 7),
            ("2.5", 1, 3),
            ("-2.5", 1, -3),
        ],
    )
    def test_to_minor_units(self, amount: str, precision: int, units: int) -> None:
        """A client decimal becomes the expected minor units."""
        assert to_minor_units(amount, precision) == units

    def test_float_is_read_as_its_shortest_text(self) -> None:
        """The float 1.005 means the decimal 1.005 (Go's 'f', -1), so it rounds up to 101."""
        assert decimal_from_float(1.005) == Decimal("1.005")
        assert to_minor_units(1.005, 100) == 101
        assert to_minor_units(0.1, 100) == 10

    def test_format_amount(self) -> None:
        """amount_string is plain decimal text without exponent or trailing zeros."""
        assert format_amount(10050, 100) == "100.5"
        assert format_amount(-1, 100) == "-0.01"
        assert format_amount(0, 100) == "0"
        assert format_amount(10**30, 1) == "1" + "0" * 30

    def test_non_decimal_precision_divides_to_16_places(self) -> None:
        """A precision that is not a power of ten divides like shopspring (16 places)."""
        assert from_minor_units(1, 3) == Decimal("0.3333333333333333")


class TestRejections:
    @pytest.mark.parametrize(
        "value", ["abc", "NaN", "Infinity", "", "1e", True, None, {}, [0, [1], 0], [1]]
    )
    def test_not_a_number(self, value: object) -> None:
        """Text that is not a finite number is refused, and so is any other JSON value: null,
        an object (Decimal's TypeError was a 500) or an array (Decimal reads `[0, [1], 0]` as
        its tuple form, 1)."""
        with pytest.raises(InvalidAmountError):
            to_minor_units(value, 100)  # type: ignore[arg-type]  # deliberately wrong input

    def test_too_many_significant_digits(self) -> None:
        """More than 15 significant digits cannot have come from a float honestly."""
        with pytest.raises(InvalidAmountError, match="significant digits"):
            to_minor_units("1234567890.1234567", 100)
        assert to_minor_units("12345678901234.5", 10) == 123456789012345

    @pytest.mark.parametrize("value", [0.5, "0.5", -1, PRECISION_MAX + 1, "1.5"])
    def test_bad_precision(self, value: object) -> None:
        """Precision must be a whole number between 1 and 10**18."""
        with pytest.raises(InvalidPrecisionError):
            parse_precision(value)  # type: ignore[arg-type]  # deliberately wrong input

    @pytest.mark.parametrize("value", [{}, [100], "x"])
    def test_precision_that_is_no_number(self, value: object) -> None:
        """A precision that is not a number is refused as one (callers map it to their 4xx)."""
        with pytest.raises(InvalidAmountError):
            parse_precision(value)  # type: ignore[arg-type]  # deliberately wrong input

    @pytest.mark.parametrize(
        ("value", "expected"), [(None, 1), (0, 1), (100, 100), (1e18, 10**18), ("1000", 1000)]
    )
    def test_good_precision(self, value: object, expected: int) -> None:
        """Missing or zero precision is 1; floats and strings that are whole numbers are fine."""
        assert parse_precision(value) == expected  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["1.5", 1.5, "x", True, "1" * 61])
    def test_bad_precise_amount(self, value: object) -> None:
        """precise_amount must be a whole number of bounded size."""
        with pytest.raises(InvalidAmountError):
            parse_minor_units(value)  # type: ignore[arg-type]

    def test_precise_amount_as_digit_string(self) -> None:
        """blnk-python sends precise_amount as a digit string; it is accepted exactly."""
        assert parse_minor_units("123456789012345678901") == 123456789012345678901


class TestProperties:
    @given(units=st.integers(min_value=-(10**30), max_value=10**30), precision=POWERS_OF_TEN)
    def test_minor_units_round_trip_exactly(self, units: int, precision: int) -> None:
        """units -> decimal -> units is the identity for decimal precisions."""
        text = format_amount(units, precision)
        with localcontext(prec=100):
            assert Decimal(text) * precision == units
        assert parse_minor_units(units) == units

    @given(
        amount=st.decimals(
            min_value=Decimal("-1e9"), max_value=Decimal("1e9"), allow_nan=False, places=6
        ),
        precision=POWERS_OF_TEN,
    )
    def test_rounding_error_is_at_most_half_a_unit(self, amount: Decimal, precision: int) -> None:
        """Conversion never moves a value by more than half a minor unit."""
        units = to_minor_units(amount, precision)
        assert abs(Decimal(units) - amount * precision) <= Decimal("0.5")

    @given(
        amount=st.decimals(
            min_value=Decimal(0), max_value=Decimal("1e9"), allow_nan=False, places=4
        ),
        precision=POWERS_OF_TEN,
    )
    def test_rounding_is_symmetric_about_zero(self, amount: Decimal, precision: int) -> None:
        """Half away from zero: -x converts to exactly minus what x converts to."""
        assert to_minor_units(-amount, precision) == -to_minor_units(amount, precision)

    @given(cents=st.integers(min_value=-(10**13), max_value=10**13))
    def test_client_floats_land_on_the_intended_cent(self, cents: int) -> None:
        """A float a client wrote with two decimals (19.99) converts to exactly its cents."""
        assert to_minor_units(cents / 100, 100) == cents

    @given(
        a=st.integers(min_value=-(10**20), max_value=10**20),
        b=st.integers(min_value=-(10**20), max_value=10**20),
    )
    def test_money_arithmetic_is_exact(self, a: int, b: int) -> None:
        """Adding and subtracting Money is integer arithmetic on units."""
        x, y = Money(a, 100, "USD"), Money(b, 100, "USD")
        assert (x + y).units == a + b
        assert (x - y).units == a - b
        assert (-x).units == -a

    def test_money_refuses_mixed_currencies(self) -> None:
        """USD and EUR, or two precisions, never combine."""
        with pytest.raises(InvalidAmountError):
            _ = Money(1, 100, "USD") + Money(1, 100, "EUR")
        with pytest.raises(InvalidAmountError):
            _ = Money(1, 100, "USD") + Money(1, 1000, "USD")

    def test_significant_digit_limit_constant(self) -> None:
        """The limit is the 15 digits a float64 carries exactly."""
        assert AMOUNT_SIGNIFICANT_DIGITS_MAX == 15


@pytest.mark.parametrize(
    ("text", "places"),
    [("1.50", 1), ("1E+3", 0), ("1E-9", 9), ("0.000", 0), ("-12.345", 3), ("50." + "0" * 70, 0)],
)
def test_decimal_places_ignore_trailing_zeros(text: str, places: int) -> None:
    assert decimal_places(Decimal(text)) == places


def test_decimal_places_of_an_infinity_is_refused() -> None:
    with pytest.raises(InvalidAmountError):
        decimal_places(Decimal("Infinity"))


class TestOutOfRange:
    """Numbers whose exponent alone is huge are refused before any arithmetic: `int()` of
    1E+999999999 would build a billion-digit integer (minutes of CPU in a replica)."""

    @pytest.mark.parametrize("text", ["1E+999999999", "1E-999999999", "-1e1001", "0E+5000"])
    def test_parse_decimal_refuses_an_extreme_exponent(self, text: str) -> None:
        with pytest.raises(InvalidAmountError, match="out of range"):
            parse_decimal(text)

    def test_precise_amounts_and_precisions_refuse_it_too(self) -> None:
        with pytest.raises(InvalidAmountError):
            parse_minor_units("1E+999999999")
        with pytest.raises(InvalidAmountError):
            parse_minor_units("1e60")  # 61 digits
        assert parse_minor_units("1e59") == 10**59
        with pytest.raises(InvalidAmountError):
            parse_precision("1E+999999999")

    def test_minor_units_stop_at_sixty_digits(self) -> None:
        assert to_minor_units("1e57", 100) == 10**59
        with pytest.raises(InvalidAmountError, match="60 digits"):
            to_minor_units("1e58", 100)
        with pytest.raises(InvalidAmountError):
            to_minor_units("1e400", 100)  # was decimal.InvalidOperation: a 500
