"""Exchange-rate records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class Rate:
    """One unit of `base` buys `rate` units of `quote` (major units), per `source` at `as_of`."""

    base: str
    quote: str
    rate: Decimal
    source: str
    as_of: datetime
    # Set when this rate is derived from the opposite pair: `rate` is then 1 / `inverse_of`
    # rounded for display, and a conversion divides by `inverse_of` exactly instead.
    inverse_of: Decimal | None = None

    def exact(self) -> Fraction:
        """The rate as an exact ratio (the true inverse of the opposite pair, if derived)."""
        if self.inverse_of is not None:
            return 1 / Fraction(self.inverse_of)
        return Fraction(self.rate)
