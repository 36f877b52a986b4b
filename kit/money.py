"""Money as integer minor units with a precision multiplier (Blnk's model).

An amount `a` in major units with precision `p` is stored as the integer `round(a * p)`; the
precision is a positive whole number (100 for cents, 1 when omitted, up to 10**18 as Blnk
allows). Client decimals become minor units here and nowhere else, rounding half away from
zero exactly as Blnk's shopspring `Round(0)` does. A float from a client must first go through
`decimal_from_float`, which renders it the way Go's `'f', -1` does (shortest round-trip text),
so `0.1` is `Decimal("0.1")` and never `0.1000000000000000055...`.

No float arithmetic on money happens in this module; every operation is on `int` or on
`Decimal` inside a local context wide enough to be exact.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

from kit.errors import ValidationError

PRECISION_DEFAULT: Final = 1  # Blnk treats a missing or zero precision as 1
PRECISION_MAX: Final = 10**18  # the largest precision Blnk accepts (1e18 as a JSON number)
AMOUNT_SIGNIFICANT_DIGITS_MAX: Final = (
    15  # a float64 holds 15 decimal digits exactly; more is silently lost
)
MINOR_UNITS_DIGITS_MAX: Final = (
    60  # bound on precise amounts, far above any real ledger (NUMERIC holds them)
)
DIVISION_PLACES: Final = (
    16  # shopspring-decimal's default DivisionPrecision for non-decimal precisions
)
_CONTEXT_DIGITS: Final = 120  # wide enough that products of bounded inputs are exact
# The largest power of ten any client number may carry, either way: far past any amount (60
# digits), precision (10**18), rate or limit, and small enough that no conversion of it to an
# integer or normalisation of it costs more than microseconds.
DECIMAL_EXPONENT_MAX: Final = 1_000

_EXACT = decimal.Context(
    prec=_CONTEXT_DIGITS,
    rounding=ROUND_HALF_UP,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)


class InvalidAmountError(ValidationError):
    """An amount is not a finite number, is out of range, or carries more digits than allowed."""

    code = "MONEY_INVALID_AMOUNT"
    status = 400


class InvalidPrecisionError(ValidationError):
    """A precision is not a positive whole number within range."""

    code = "MONEY_INVALID_PRECISION"
    status = 400


class FractionalPrecisionError(InvalidPrecisionError):
    """A precision with a fractional part (0.5): the case some APIs answer apart."""


def decimal_places(value: Decimal) -> int:
    """Digits after the point, trailing zeros aside (`1.50` has 1; `1E+3` has none; `1E-9`
    has 9), read from the value's digits without any arithmetic on its exponent."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise InvalidAmountError("not a finite number")
    written = "".join(map(str, digits))
    significant = written.rstrip("0")
    if not significant:  # zero, however written
        return 0
    return max(0, -exponent - (len(written) - len(significant)))


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The sum of decimals without rounding (Python's default context keeps 28 digits, and a
    ledger amount may carry more)."""
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def within_drift(a: Decimal, b: Decimal, drift: Decimal) -> bool:
    """|a - b| <= |b| x drift, computed without rounding."""
    return _EXACT.abs(_EXACT.subtract(a, b)) <= _EXACT.multiply(_EXACT.abs(b), drift)


def decimal_from_float(value: float) -> Decimal:
    """Turn a client float into the decimal its shortest text spells (Go's `'f', -1`)."""
    if not math.isfinite(value):
        raise InvalidAmountError("amount must be a finite number", amount=str(value))
    return Decimal(repr(value))


def parse_decimal(value: Decimal | int | float | str) -> Decimal:
    """Read a client amount (number or numeric text) as an exact finite `Decimal`."""
    if isinstance(value, bool):
        raise InvalidAmountError("amount must be a number, not a boolean")
    if isinstance(value, float):
        return decimal_from_float(value)
    if not isinstance(value, (Decimal, int, str)):
        # JSON's objects, arrays and null: Decimal raises TypeError for most, and reads a list
        # as its (sign, digits, exponent) tuple form.
        raise InvalidAmountError("amount must be a number or numeric text")
    try:
        result = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise InvalidAmountError("amount is not a number", amount=str(value)[:64]) from exc
    if not result.is_finite():
        raise InvalidAmountError("amount must be a finite number", amount=str(value)[:64])
    if abs(result.adjusted()) > DECIMAL_EXPONENT_MAX:
        # `int(Decimal("1E+999999999"))` builds a billion-digit integer (minutes of CPU), and
        # the exact context cannot normalise it: refused here, before any arithmetic.
        raise InvalidAmountError("number out of range", amount=str(value)[:64])
    return result


def significant_digits(value: Decimal) -> int:
    """Count the significant digits of `value` (trailing zeros of an integer part count)."""
    digits = value.normalize(_EXACT).as_tuple().digits
    stripped = list(digits)
    while len(stripped) > 1 and stripped[0] == 0:
        stripped.pop(0)
    return len(stripped) if any(stripped) else 1


def parse_precision(value: Decimal | int | float | str | None) -> int:
    """Validate a client precision: a whole number in [1, 10**18]; zero or missing means 1."""
    if value is None:
        return PRECISION_DEFAULT
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        exact = parse_decimal(value)
        if exact != exact.to_integral_value(context=_EXACT):
            raise FractionalPrecisionError("precision must be a whole number", precision=str(value))
        number = int(exact)
    if number == 0:
        return PRECISION_DEFAULT
    if number < 0 or number > PRECISION_MAX:
        raise InvalidPrecisionError(
            f"precision must be between 1 and {PRECISION_MAX}", precision=str(value)
        )
    return number


def to_minor_units(amount: Decimal | int | float | str, precision: int) -> int:
    """Convert a major-unit amount to integer minor units, half away from zero.

    Raises:
        InvalidAmountError: not a finite number, or more than 15 significant digits.
    """
    value = parse_decimal(amount)
    if significant_digits(value) > AMOUNT_SIGNIFICANT_DIGITS_MAX:
        raise InvalidAmountError(
            f"amount has more than {AMOUNT_SIGNIFICANT_DIGITS_MAX} significant digits; "
            "send precise_amount instead",
            amount=str(value)[:64],
        )
    scaled = _EXACT.multiply(value, Decimal(precision))
    if scaled.adjusted() >= MINOR_UNITS_DIGITS_MAX:
        raise InvalidAmountError(
            f"amount is more than {MINOR_UNITS_DIGITS_MAX} digits of minor units",
            amount=str(value)[:64],
        )
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def parse_minor_units(value: int | str | Decimal | float) -> int:
    """Read a client `precise_amount`: a bare integer or a digit string, nothing fractional."""
    if isinstance(value, bool):
        raise InvalidAmountError("precise_amount must be an integer, not a boolean")
    if isinstance(value, int):
        result = value
    else:
        number = parse_decimal(value)
        if number.adjusted() >= MINOR_UNITS_DIGITS_MAX:  # before int() builds it
            raise InvalidAmountError(
                f"precise_amount has more than {MINOR_UNITS_DIGITS_MAX} digits",
                amount=str(value)[:64],
            )
        if number != number.to_integral_value(context=_EXACT):
            raise InvalidAmountError(
                "precise_amount must be a whole number", amount=str(value)[:64]
            )
        result = int(number)
    if len(str(abs(result))) > MINOR_UNITS_DIGITS_MAX:
        raise InvalidAmountError(
            f"precise_amount has more than {MINOR_UNITS_DIGITS_MAX} digits", amount=str(value)[:64]
        )
    return result


def from_minor_units(units: int, precision: int) -> Decimal:
    """Major-unit decimal of `units`: exact for powers of ten, else 16 places like shopspring."""
    if precision <= 0:
        raise InvalidPrecisionError("precision must be positive", precision=precision)
    exponent = len(str(precision)) - 1
    if precision == 10**exponent:
        return Decimal(units).scaleb(-exponent, context=_EXACT)
    quotient = _EXACT.divide(Decimal(units), Decimal(precision))
    return quotient.quantize(Decimal(1).scaleb(-DIVISION_PLACES), context=_EXACT)


def format_amount(units: int, precision: int) -> str:
    """Plain decimal text of `units` in major units, without exponent (Blnk's `amount_string`)."""
    text = format(from_minor_units(units, precision), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of one currency at one precision."""

    units: int
    precision: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.units, bool) or not isinstance(self.units, int):
            raise InvalidAmountError("units must be an int", units=repr(self.units))
        if not 1 <= self.precision <= PRECISION_MAX:
            raise InvalidPrecisionError("precision out of range", precision=self.precision)

    @classmethod
    def of(cls, amount: Decimal | int | float | str, *, precision: int, currency: str) -> Money:
        """Build from a major-unit amount given by a client."""
        return cls(to_minor_units(amount, precision), precision, currency)

    def _check_same(self, other: Money) -> None:
        if (self.currency, self.precision) != (other.currency, other.precision):
            raise InvalidAmountError(
                "cannot combine amounts of different currency or precision",
                left=f"{self.currency}/{self.precision}",
                right=f"{other.currency}/{other.precision}",
            )

    def __add__(self, other: Money) -> Money:
        self._check_same(other)
        return Money(self.units + other.units, self.precision, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check_same(other)
        return Money(self.units - other.units, self.precision, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.units, self.precision, self.currency)

    @property
    def amount(self) -> Decimal:
        """The major-unit value."""
        return from_minor_units(self.units, self.precision)

    def __str__(self) -> str:
        return f"{format_amount(self.units, self.precision)} {self.currency}"
