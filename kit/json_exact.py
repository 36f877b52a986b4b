"""JSON with integers exact at any size (money in minor units can pass 64 bits: 100 ETH is
10^20 wei).

orjson is the fast path both ways, but it refuses to write an integer past 64 bits and, worse,
*reads* one as a float without a word (`123456789012345678901234567` comes back
`1.2345678901234568e+26`). So:

- `dumps` (answers) and `encode` (stores) fall back to the standard library's writer, which writes
  any integer exactly, when orjson refuses one;
- `loads` hands a text holding a run of 19 or more digits (the shortest integer orjson may read
  as a float; the run may as well be inside a string, which only costs the slower parser) to
  the standard library's reader, with orjson's refusals kept: NaN and Infinity, a number that
  overflows a double, a lone surrogate, text that is not UTF-8, and nesting deeper than the
  interpreter's recursion allows (~1,000 levels there; orjson's bound is 1,024). Anything that
  is not JSON raises `ValueError`.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time
from enum import Enum
from typing import Any, Final
from uuid import UUID

import orjson

# A run of 19 digits, found in C: every digit becomes "0", then one `in` (a regular expression
# took ~6 us on a 400-byte body, ten times this).
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN: Final = b"0" * 19


def dumps(value: Any) -> bytes:
    """`value` as JSON bytes, integers exact at any size; anything else unknown as its `str`."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, default=str, separators=(",", ":")).encode()


def encode(value: Any, *, sort_keys: bool = False) -> bytes:
    """`value` as JSON bytes for a store (a jsonb column) or a digest: integers exact at any
    size, and a value JSON has no type for is a `TypeError`, never its text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        text = json.dumps(
            value,
            separators=(",", ":"),
            allow_nan=False,
            sort_keys=sort_keys,
            default=_as_orjson_writes,
        )
        return text.encode()


def _as_orjson_writes(value: Any) -> Any:
    """What orjson writes natively, for the standard library's writer: instants in RFC 3339
    (`isoformat`, orjson's own text), UUIDs as text, enumerations as their values."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(text: bytes | str) -> Any:
    """JSON text (UTF-8) to Python values, integers exact at any size; `ValueError` if it is
    not JSON."""
    raw = text.encode() if isinstance(text, str) else text
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZERO):
        return orjson.loads(raw)
    return _loads_standard(raw)


def _loads_standard(raw: bytes) -> Any:
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant
        )
        # The reader accepts an escaped lone surrogate ("\ud800"), which no UTF-8 store can
        # hold; writing the value back finds one.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except UnicodeError as exc:
        raise ValueError("JSON text is not valid UTF-8") from exc
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} overflows a double")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
