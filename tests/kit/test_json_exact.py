"""`kit.json_exact`: orjson's bytes and values, and exact integers past 64 bits both ways."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.json_exact import dumps, encode, loads


class Status(StrEnum):
    APPLIED = "APPLIED"


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_values)
def test_reads_back_equal_whatever_the_integers(value: object) -> None:
    assert json.loads(dumps(value)) == value


def test_orjson_bytes_when_orjson_can() -> None:
    value = {"amount": 2**63 - 1, "currency": "USD", "items": [1, None, True]}
    assert dumps(value) == orjson.dumps(value)


def test_past_64_bits_and_unknown_types() -> None:
    assert dumps({"amount": 2**80, "rate": Decimal("1.25")}) == (
        b'{"amount":1208925819614629174706176,"rate":"1.25"}'
    )


@given(_values)
def test_loads_reads_back_what_either_writer_wrote(value: object) -> None:
    assert loads(dumps(value)) == value
    assert loads(encode(value)) == value
    assert loads(encode(value, sort_keys=True)) == value


def test_orjson_reads_big_integers_as_floats_and_loads_does_not() -> None:
    text = b'{"wei": 123456789012345678901234567, "rate": 1.5, "note": "1234567890123456789"}'
    assert orjson.loads(text)["wei"] == 1.2345678901234568e26  # why `loads` exists
    assert loads(text) == {
        "wei": 123456789012345678901234567,
        "rate": 1.5,
        "note": "1234567890123456789",
    }
    assert loads(text.decode()) == loads(text)
    assert loads(b"[-9223372036854775809]") == [-(2**63) - 1]


@pytest.mark.parametrize(
    "text",
    [
        b"[NaN]",
        b"[Infinity]",
        b"[-Infinity]",
        b"[1e400]",
        b'["\\ud800"]',
        b'["\xff"]',
        b"[1,]",
        b"{} []",
        b"[" * 5_000 + b"]" * 5_000,
    ],
)
def test_loads_refuses_what_orjson_refuses_on_either_path(text: bytes) -> None:
    """The same refusals with and without an integer that sends the text to the slower reader."""
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's JSONDecodeError or ours
        orjson.loads(text)
    with pytest.raises(ValueError):  # noqa: PT011
        loads(text)
    if text.startswith(b"[") and text.endswith(b"]"):
        with pytest.raises(ValueError):  # noqa: PT011
            loads(b"[1234567890123456789012, " + text[1:])


def test_encode_refuses_what_json_has_no_type_for() -> None:
    """A store never gets a value's text in place of a number (dumps, for answers, does)."""
    with pytest.raises(TypeError):
        encode({"rate": Decimal("1.25")})
    with pytest.raises(TypeError):
        encode({"wei": 2**80, "rate": Decimal("1.25")})
    assert encode({"b": 2**80, "a": 1}, sort_keys=True) == b'{"a":1,"b":1208925819614629174706176}'


def test_encode_writes_what_orjson_writes_beside_a_big_integer() -> None:
    """Instants, UUIDs and enumerations come out as orjson writes them, with or without an
    integer that orjson refuses in the same value."""
    values = [
        datetime(2026, 12, 1, 18, 0, tzinfo=UTC),
        datetime(2026, 12, 1, 18, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 12, 1, 18, 0),  # noqa: DTZ001 - a naive instant, written without offset
        date(2026, 12, 1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Status.APPLIED,
    ]
    small = encode({"values": values, "amount": 1})
    big = encode({"values": values, "amount": 2**80})
    assert big == small.replace(b'"amount":1}', b'"amount":1208925819614629174706176}')
