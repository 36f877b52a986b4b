"""Reconciliation matching rules: validation, evaluation, and the candidate bounds they imply.

A rule is a list of criteria; a pair (external side, ledger side) matches a rule when every
criterion holds, and matches a rule set when some rule matches (Blnk's matchesRules). A side is
one record or a group: its amount is the group's sum, its date the earliest, its text fields
every member's value (a text criterion holds if it holds for some member), and a ledger group
whose currencies differ counts as "MIXED", which any currency criterion accepts (Blnk's rule).

Criteria compare the external value with the ledger value, as Blnk's do:

- amount (major units, exact decimals): `equals` holds when |external - ledger| <= |ledger| x
  allowable_drift (a fraction, 0-1); `greater_than` / `less_than` compare external to ledger;
- date: `equals` within allowable_drift seconds; `greater_than` (external later) / `less_than`;
- currency, reference, description: `equals` ignores case; `contains` holds when one contains
  the other, or their Levenshtein distance is within allowable_drift percent of the longer.
  Unlike Blnk, an empty value matches nothing (an empty description is not evidence).

Which field takes which operator is checked when a rule is saved (Blnk accepts `contains` on an
amount and never matches it). `value` and `pattern` are kept and returned but, as in Blnk, not
used by the matching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from rapidfuzz.distance import Levenshtein

from kit.money import exact_sum, within_drift
from ledger.surface_errors import MatchingRuleInvalidError

CRITERIA_MAX: Final = 20
RULE_NAME_LENGTH_MAX: Final = 255
RULE_DESCRIPTION_LENGTH_MAX: Final = 4096
CRITERION_TEXT_LENGTH_MAX: Final = 255  # value, pattern
AMOUNT_DRIFT_MAX: Final = Decimal(1)  # a fraction of the ledger amount (Blnk's bound)
DATE_DRIFT_S_MAX: Final = Decimal(366 * 24 * 3600)  # a year of seconds
TEXT_DRIFT_MAX: Final = Decimal(100)  # percent of the longer string
MIXED_CURRENCY: Final = "MIXED"
DATE_FIRST: Final = datetime.min.replace(tzinfo=UTC)
DATE_LAST: Final = datetime.max.replace(tzinfo=UTC)
OPERATORS_BY_FIELD: Final[dict[str, frozenset[str]]] = {
    "amount": frozenset({"equals", "greater_than", "less_than"}),
    "date": frozenset({"equals", "greater_than", "less_than"}),
    "currency": frozenset({"equals", "contains"}),
    "reference": frozenset({"equals", "contains"}),
    "description": frozenset({"equals", "contains"}),
}
ALL_OPERATORS: Final = frozenset({"equals", "greater_than", "less_than", "contains"})


@dataclass(frozen=True, slots=True)
class Criterion:
    """One condition of a rule."""

    field: str
    operator: str
    value: str = ""
    pattern: str = ""
    allowable_drift: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        """Blnk's MatchingCriteria (the drift is a number: a fraction, seconds or a percent)."""
        return {
            "field": self.field,
            "operator": self.operator,
            "value": self.value,
            "pattern": self.pattern,
            "allowable_drift": float(self.allowable_drift),
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Criterion:
        """From stored JSON (already validated when it was saved)."""
        return cls(
            field=item["field"],
            operator=item["operator"],
            value=item.get("value", ""),
            pattern=item.get("pattern", ""),
            allowable_drift=Decimal(str(item.get("allowable_drift", 0))),
        )


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a comparison: a record, or a group's aggregate."""

    amount: Decimal
    occurred_at: datetime | None
    currencies: tuple[str, ...]
    references: tuple[str, ...]
    descriptions: tuple[str, ...]


def criterion(field: str, operator: str, value: str, pattern: str, drift: Decimal) -> Criterion:
    """A validated criterion (RECON_RULE_INVALID otherwise)."""
    if not field or not operator:
        raise MatchingRuleInvalidError("field and operator are required for each criteria")
    if operator not in ALL_OPERATORS:
        raise MatchingRuleInvalidError(f"invalid operator {operator[:32]!r}")
    if field not in OPERATORS_BY_FIELD:
        raise MatchingRuleInvalidError(f"invalid field {field[:32]!r}")
    if operator not in OPERATORS_BY_FIELD[field]:
        raise MatchingRuleInvalidError(f"{field} cannot use {operator}")
    if len(value) > CRITERION_TEXT_LENGTH_MAX or len(pattern) > CRITERION_TEXT_LENGTH_MAX:
        raise MatchingRuleInvalidError(
            f"value and pattern hold at most {CRITERION_TEXT_LENGTH_MAX} characters"
        )
    limit = (
        AMOUNT_DRIFT_MAX
        if field == "amount"
        else DATE_DRIFT_S_MAX
        if field == "date"
        else TEXT_DRIFT_MAX
    )
    if not drift.is_finite() or not Decimal(0) <= drift <= limit:
        unit = {"amount": "a fraction", "date": "seconds"}.get(field, "a percent")
        raise MatchingRuleInvalidError(f"drift for {field} must be between 0 and {limit} ({unit})")
    return Criterion(field, operator, value, pattern, drift)


def drift_of(value: float | int | str) -> Decimal:
    """A client's drift number as an exact decimal (converted once, here)."""
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise MatchingRuleInvalidError("allowable_drift must be a number") from exc


# ---------------------------------------------------------------- evaluation


def _similar(a: str, b: str, drift: Decimal) -> bool:
    a, b = a.casefold(), b.casefold()
    if not a or not b:
        return False
    if a in b or b in a:
        return True
    allowed = int(max(len(a), len(b)) * drift / 100)
    return bool(Levenshtein.distance(a, b, score_cutoff=allowed) <= allowed)


def _text_holds(c: Criterion, external: Sequence[str], ledger: Sequence[str]) -> bool:
    for e in external:
        for i in ledger:
            if c.operator == "equals" and e and e.casefold() == i.casefold():
                return True
            if c.operator == "contains" and _similar(e, i, c.allowable_drift):
                return True
    return False


def _amount_holds(c: Criterion, external: Decimal, ledger: Decimal) -> bool:
    if c.operator == "equals":
        return within_drift(external, ledger, c.allowable_drift)
    return external > ledger if c.operator == "greater_than" else external < ledger


def _date_holds(c: Criterion, external: datetime | None, ledger: datetime | None) -> bool:
    if external is None or ledger is None:
        return False
    if c.operator == "equals":
        return Decimal(str(abs((external - ledger).total_seconds()))) <= c.allowable_drift
    return external > ledger if c.operator == "greater_than" else external < ledger


_TEXT_VALUES: Final = {
    "currency": "currencies",
    "reference": "references",
    "description": "descriptions",
}


def criterion_holds(c: Criterion, external: Side, ledger: Side) -> bool:
    """Whether one criterion holds between the two sides."""
    if c.field == "amount":
        return _amount_holds(c, external.amount, ledger.amount)
    if c.field == "date":
        return _date_holds(c, external.occurred_at, ledger.occurred_at)
    if c.field == "currency" and MIXED_CURRENCY in ledger.currencies:
        return True
    values = _TEXT_VALUES[c.field]
    return _text_holds(c, getattr(external, values), getattr(ledger, values))


def rules_hold(rules: Sequence[Sequence[Criterion]], external: Side, ledger: Side) -> bool:
    """Some rule has every criterion holding."""
    return any(all(criterion_holds(c, external, ledger) for c in rule) for rule in rules)


def aggregate(sides: Sequence[Side]) -> Side:
    """A group as one side: the sum, the earliest date, every member's text values."""
    dates = [s.occurred_at for s in sides if s.occurred_at is not None]
    currencies = tuple(dict.fromkeys(c for s in sides for c in s.currencies))
    return Side(
        amount=exact_sum(s.amount for s in sides),
        occurred_at=min(dates) if dates else None,
        currencies=currencies if len(currencies) <= 1 else (*currencies, MIXED_CURRENCY),
        references=tuple(r for s in sides for r in s.references),
        descriptions=tuple(d for s in sides for d in s.descriptions),
    )


# ---------------------------------------------------------------- candidate bounds


@dataclass(frozen=True, slots=True)
class Bounds:
    """What every ledger side a rule set could match satisfies (None: unbounded)."""

    amount_low: Decimal | None = None
    amount_high: Decimal | None = None
    date_low: datetime | None = None
    date_high: datetime | None = None
    currency: str | None = None


def _rule_bounds(rule: Sequence[Criterion], external: Side) -> Bounds | None:
    """The bounds of one rule, or None when it can match nothing (a date criterion, no date)."""
    amount_low = amount_high = None
    date_low = date_high = None
    currency = None
    e = external.amount
    for c in rule:
        if c.field == "amount" and c.operator == "equals" and c.allowable_drift < 1:
            margin = abs(e) * c.allowable_drift / (1 - c.allowable_drift)
            amount_low, amount_high = (
                _tighter_low(amount_low, e - margin),
                _tighter_high(amount_high, e + margin),
            )
        elif c.field == "amount" and c.operator == "greater_than":
            amount_high = _tighter_high(amount_high, e)
        elif c.field == "amount" and c.operator == "less_than":
            amount_low = _tighter_low(amount_low, e)
        elif c.field == "date":
            if external.occurred_at is None:
                return None
            moment = external.occurred_at
            if c.operator == "equals":
                drift = timedelta(seconds=float(c.allowable_drift))
                date_low, date_high = (
                    _tighter_low(date_low, _shifted(moment, -drift)),
                    _tighter_high(date_high, _shifted(moment, drift)),
                )
            elif c.operator == "greater_than":
                date_high = _tighter_high(date_high, moment)
            else:
                date_low = _tighter_low(date_low, moment)
        elif c.field == "currency" and c.operator == "equals" and len(external.currencies) == 1:
            currency = external.currencies[0]
    return Bounds(amount_low, amount_high, date_low, date_high, currency)


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, held within years 1-9999 (a statement may date a line at either end)."""
    try:
        return moment + by
    except OverflowError:
        return DATE_FIRST if by < timedelta(0) else DATE_LAST


def _tighter_low(current: Any, new: Any) -> Any:
    return new if current is None or new > current else current


def _tighter_high(current: Any, new: Any) -> Any:
    return new if current is None or new < current else current


def _looser(values: list[Any], *, low: bool) -> Any:
    if any(v is None for v in values):
        return None
    return min(values) if low else max(values)


def candidate_bounds(rules: Sequence[Sequence[Criterion]], external: Side) -> Bounds | None:
    """Bounds every ledger side matching some rule satisfies (the union over rules); None when
    no rule can match at all."""
    per_rule = [b for b in (_rule_bounds(rule, external) for rule in rules) if b is not None]
    if not per_rule:
        return None
    currencies = {b.currency for b in per_rule}
    return Bounds(
        amount_low=_looser([b.amount_low for b in per_rule], low=True),
        amount_high=_looser([b.amount_high for b in per_rule], low=False),
        date_low=_looser([b.date_low for b in per_rule], low=True),
        date_high=_looser([b.date_high for b in per_rule], low=False),
        currency=currencies.pop() if len(currencies) == 1 else None,
    )


def group_bounds(bounds: Bounds | None) -> Bounds | None:
    """Bounds a member of a ledger group satisfies: only the earliest-date floor survives (the
    group's sum and currency mix are not a member's, and later members may come after it)."""
    if bounds is None:
        return None
    return Bounds(date_low=bounds.date_low)
