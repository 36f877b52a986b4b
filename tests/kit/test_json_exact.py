"""`kit.json_exact.dumps`: orjson's bytes, and exact integers past 64 bits."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from kit.json_exact import dumps

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
