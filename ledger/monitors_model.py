"""Balance monitor records: a condition on one figure of one balance (Blnk's model).

`value` is in major units; the comparison uses `precise_value = value x precision`, truncated
toward zero (Blnk: `int64(value * precision)`), against the balance's integer minor units.
"""

from __future__ import annotations

import operator as op
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from ledger.models import Figures

FIELDS: Final = frozenset(
    {
        "balance",
        "credit_balance",
        "debit_balance",
        "inflight_balance",
        "inflight_credit_balance",
        "inflight_debit_balance",
    }
)
# Blnk compares these six; its Python SDK sends "=", which Blnk never matches: "=" is "==" here.
COMPARISONS: Final[dict[str, Callable[[int, int], bool]]] = {
    ">": op.gt,
    "<": op.lt,
    ">=": op.ge,
    "<=": op.le,
    "!=": op.ne,
    "==": op.eq,
}
OPERATOR_ALIASES: Final = {"=": "=="}


def figure_of(figures: Figures, field: str) -> int:
    """The named figure of a balance, in minor units."""
    values = {
        "balance": figures.balance,
        "credit_balance": figures.credit,
        "debit_balance": figures.debit,
        "inflight_balance": figures.inflight,
        "inflight_credit_balance": figures.inflight_credit,
        "inflight_debit_balance": figures.inflight_debit,
    }
    return values[field]


@dataclass(frozen=True, slots=True)
class Condition:
    """`field operator precise_value`, e.g. `balance < 1000`."""

    field: str
    operator: str
    value: Decimal
    precision: int
    precise_value: int

    def holds(self, figures: Figures) -> bool:
        """True when the balance's figure satisfies the condition."""
        return COMPARISONS[self.operator](figure_of(figures, self.field), self.precise_value)

    def to_json(self) -> dict[str, Any]:
        """Blnk's condition object (`value` is a JSON number, as Go's float64 prints it)."""
        return {
            "field": self.field,
            "operator": self.operator,
            "value": float(self.value),
            "precision": self.precision,
            "precise_value": self.precise_value,
        }


@dataclass(frozen=True, slots=True)
class Monitor:
    """A stored balance monitor."""

    monitor_id: str
    balance_id: str
    condition: Condition
    description: str
    call_back_url: str
    meta_data: dict[str, Any]
    created_at: datetime
