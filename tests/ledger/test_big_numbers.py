"""Amounts past 64 bits (a crypto wallet's smallest units: 100 ETH is 10^20 wei) stay exact on
every path: a bare JSON number in a request, the stored answer an Idempotency-Key replays, a
queued transaction's outcome and the outbox's event payloads."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.db

BIG = 123_456_789_012_345_678_901_234_567  # 27 digits: a float keeps 17 of them


def _balance(http: httpx.Client) -> str:
    response = http.post("/balances", json={"ledger_id": "general_ledger_id", "currency": "ETH"})
    assert response.status_code == 201, response.text
    balance_id: str = response.json()["balance_id"]
    return balance_id


def _post(http: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST with the body written by the standard library, as the SDKs' `requests` does: an
    integer of any size is a bare JSON number."""
    return http.post(
        "/transactions",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def _transfer(destination: str, amount: int, **fields: Any) -> dict[str, Any]:
    return {
        "precise_amount": amount,
        "precision": 10**18,
        "reference": f"big-{uuid.uuid4()}",
        "currency": "ETH",
        "description": "big",
        "source": "@WorldETH",
        "destination": destination,
        "allow_overdraft": True,
        "skip_queue": True,
        **fields,
    }


def _exact(response: httpx.Response) -> Any:
    """The body parsed with integers exact (httpx's own parser is the standard library's)."""
    return json.loads(response.content)


class TestBigNumbers:
    def test_a_bare_json_number_past_64_bits_is_exact(self, http: httpx.Client) -> None:
        """orjson alone read it as a float (refused as an amount, rounded in metadata)."""
        balance_id = _balance(http)
        response = _post(http, _transfer(balance_id, BIG, meta_data={"wei": BIG + 1}))
        assert response.status_code == 201, response.text
        assert _exact(response)["precise_amount"] == BIG
        read = _exact(http.get(f"/transactions/{_exact(response)['transaction_id']}"))
        assert read["precise_amount"] == BIG
        assert read["meta_data"]["wei"] == BIG + 1
        assert _exact(http.get(f"/balances/{balance_id}"))["balance"] == BIG

    def test_an_idempotent_replay_is_exact(self, http: httpx.Client) -> None:
        """The stored first answer holds the amount (orjson refused to write it: a 500)."""
        balance_id = _balance(http)
        body = _transfer(balance_id, BIG)
        key = f"idem-{uuid.uuid4()}"
        first = _post(http, body, **{"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        again = _post(http, body, **{"Idempotency-Key": key})
        assert again.status_code == 201, again.text
        assert _exact(again) == _exact(first)
        assert _exact(again)["precise_amount"] == BIG

    def test_a_queued_outcome_is_exact(self, http: httpx.Client) -> None:
        """The queued row and its recorded outcome read back with no amount as a float."""
        balance_id = _balance(http)
        queued = _post(http, _transfer(balance_id, BIG, skip_queue=False))
        assert queued.status_code == 201, queued.text
        queued_id = _exact(queued)["transaction_id"]
        for _ in range(100):
            row = _exact(http.get(f"/transactions/{queued_id}"))
            if row.get("outcome") or row["status"] != "QUEUED":
                break
        assert _exact(http.get(f"/balances/{balance_id}"))["balance"] == BIG
        assert json.dumps(row).find("e+") == -1, row  # no amount turned into a float
