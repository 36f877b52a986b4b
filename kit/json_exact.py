"""JSON bytes for answers that may carry integers past 64 bits (money in minor units can).

orjson refuses an integer above 64 bits; the standard library writes any integer exactly. The
fast path is orjson; only a document with such an integer pays for the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """`value` as JSON bytes, integers exact at any size; anything else unknown as its `str`."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, default=str, separators=(",", ":")).encode()
