"""Split a total across legs, exactly as Blnk's `CalculateDistributionsPrecise` does.

Rules, in order: fixed legs (a major-unit amount such as "240.23", or `precise_distribution`
in minor units) come first and may not exceed what is left; then percentages of the *total*
(rounded down to a whole minor unit), which may not add up past 100%; then at most one "left"
leg takes what remains; any final difference goes to the largest leg, so the legs always add
up to the total exactly. A total below one minor unit goes wholly to the first leg.

Percentages are exact fractions and every share is computed in integers: a precise amount may
carry up to 60 digits (`kit.money.MINOR_UNITS_DIGITS_MAX`), past the 28 of Python's default
decimal context, which rounded a 30-digit total's halves up past the total and shifted a
40-digit total's share by whole minor units. A percentage carries at most
`PERCENT_PLACES_MAX` decimal places, as many as a leg's distribution field (64 characters) can
write out, so that an exponent such as `1E-999999999%` cannot become a fraction whose
denominator has a billion digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

from kit.money import InvalidAmountError as MoneyInvalidAmountError
from kit.money import decimal_places, to_minor_units
from ledger.errors import InvalidDistributionError
from ledger.models import Leg

LEGS_MAX: Final = 1000  # a split with more legs than this is a bulk request
PERCENT_PLACES_MAX: Final = 64  # decimal places of a percentage, trailing zeros aside
HUNDRED: Final = 100


def _percentage(text: str) -> Fraction:
    """The percentage as an exact fraction (33.33% is 3333/100)."""
    try:
        value = Decimal(text[:-1].strip())
    except InvalidOperation as exc:
        raise InvalidDistributionError(f"invalid percentage distribution {text!r}") from exc
    if not value.is_finite() or value <= 0 or value > HUNDRED:
        raise InvalidDistributionError(f"percentage must be above 0 and at most 100: {text!r}")
    if decimal_places(value) > PERCENT_PLACES_MAX:  # trailing zeros (50.000%) add none
        raise InvalidDistributionError(
            f"a percentage has at most {PERCENT_PLACES_MAX} decimal places: {text!r}"
        )
    return Fraction(value)


def _fixed(leg: Leg, precision: int) -> int | None:
    """A fixed leg's amount in minor units; None for percentage and "left" legs."""
    text = (leg.distribution or "").strip()
    if leg.precise_distribution is not None:
        return leg.precise_distribution
    if text.endswith("%") or text.lower() == "left":
        return None
    if not text:
        raise InvalidDistributionError(f"leg {leg.identifier!r} has no distribution")
    try:
        return to_minor_units(text, precision)
    except MoneyInvalidAmountError as exc:
        raise InvalidDistributionError(f"invalid distribution {text!r}") from exc


def _classify(index: int, leg: Leg, percentages: dict[int, Fraction], left: list[int]) -> None:
    text = (leg.distribution or "").strip()
    if text.endswith("%"):
        percentages[index] = _percentage(text)
    else:
        left.append(index)


def distribute(total: int, legs: Sequence[Leg], *, precision: int) -> list[int]:
    """The amount of each leg, in minor units, summing to `total`."""
    if not 1 <= len(legs) <= LEGS_MAX:
        raise InvalidDistributionError(f"a split needs between 1 and {LEGS_MAX} legs")
    if total < 1:
        return [total] + [0] * (len(legs) - 1)
    amounts = [0] * len(legs)
    remaining = total
    percentages: dict[int, Fraction] = {}
    left: list[int] = []
    for index, leg in enumerate(legs):
        fixed = _fixed(leg, precision)
        if fixed is None:
            _classify(index, leg, percentages, left)
            continue
        if fixed < 0 or fixed > remaining:
            raise InvalidDistributionError(
                f"fixed distribution {fixed} of {leg.identifier!r} exceeds what is left ({remaining})"
            )
        amounts[index] = fixed
        remaining -= fixed
    if sum(percentages.values(), Fraction(0)) > HUNDRED:
        raise InvalidDistributionError("percentage distributions add up to more than 100%")
    if len(left) > 1:
        raise InvalidDistributionError('only one leg may take the "left" remainder')
    for index, percent in percentages.items():
        share = total * percent.numerator // (percent.denominator * HUNDRED)  # floor, exact
        amounts[index] = share
        remaining -= share
    if remaining < 0:
        raise InvalidDistributionError("the distributions add up to more than the amount")
    if left:
        amounts[left[0]] = remaining
        remaining = 0
    if remaining:
        largest = max(range(len(amounts)), key=lambda i: (amounts[i], -i))
        amounts[largest] += remaining
    return amounts
