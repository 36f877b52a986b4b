"""Exchange-rate records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Rate:
    """One unit of `base` buys `rate` units of `quote` (major units), per `source` at `as_of`."""

    base: str
    quote: str
    rate: Decimal
    source: str
    as_of: datetime
