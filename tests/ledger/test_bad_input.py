"""Bad input gets Blnk's 4xx and changes nothing; Idempotency-Key replays the first answer.

Raw HTTP (httpx) against the real server, since the SDK refuses most of these bodies before
sending them. After each refusal the tests check that no transaction and no balance changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.db

UA = {"User-Agent": "python-requests/2.34.2"}


@pytest.fixture
def http(ledger_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the ledger server."""
    with httpx.Client(base_url=ledger_url, headers=UA, timeout=30) as client:
        yield client


def _balance(http: httpx.Client) -> str:
    response = http.post("/balances", json={"ledger_id": "general_ledger_id", "currency": "USD"})
    assert response.status_code == 201
    balance_id: str = response.json()["balance_id"]
    return balance_id


def _body(destination: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "precise_amount": 100,
        "precision": 100,
        "reference": f"bad-{uuid.uuid4()}",
        "currency": "USD",
        "description": "x",
        "source": "@WorldUSD",
        "destination": destination,
        "allow_overdraft": True,
        "skip_queue": True,
    }
    body.update(fields)
    return body


def _untouched(http: httpx.Client, balance_id: str, reference: str | None = None) -> None:
    assert http.get(f"/balances/{balance_id}").json()["balance"] == 0
    if reference is not None:
        assert http.get(f"/transactions/reference/{reference}").status_code == 404


class TestBadInput:
    def test_malformed_json(self, http: httpx.Client) -> None:
        """A body that is not JSON is 400 GEN_MALFORMED_REQUEST."""
        balance_id = _balance(http)
        response = http.post(
            "/transactions",
            content=b'{"precise_amount": 1,',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
        _untouched(http, balance_id)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("precise_amount", [1, 2]),
            ("amount", {"value": 1}),
            ("skip_queue", "yes"),
            ("meta_data", "text"),
        ],
    )
    def test_unknown_field_type(self, http: httpx.Client, field: str, value: Any) -> None:
        """A field of the wrong JSON type is 400 and nothing is written."""
        balance_id = _balance(http)
        body = _body(balance_id)
        body.pop("precise_amount", None)
        body[field] = value
        if field != "precise_amount":
            body.setdefault("precise_amount", 100)
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] in {
            "GEN_MALFORMED_REQUEST",
            "TXN_VALIDATION_ERROR",
        }
        _untouched(http, balance_id, body["reference"])

    def test_six_megabyte_body(self, http: httpx.Client) -> None:
        """A 6 MB body is refused with 413 before it is read (Blnk's limit is 5 MiB)."""
        balance_id = _balance(http)
        body = _body(balance_id, description="x" * (6 * 1024 * 1024))
        response = http.post("/transactions", json=body)
        assert response.status_code == 413
        assert response.json()["error_detail"]["code"] == "GEN_PAYLOAD_TOO_LARGE"
        _untouched(http, balance_id, body["reference"])

    def test_fractional_precision(self, http: httpx.Client) -> None:
        """A precision of 0.5 is 400 TXN_PRECISION_NOT_INTEGER."""
        balance_id = _balance(http)
        body = _body(balance_id, precision=0.5)
        response = http.post("/transactions", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_PRECISION_NOT_INTEGER"
        _untouched(http, balance_id, body["reference"])

    def test_too_many_significant_digits(self, http: httpx.Client) -> None:
        """An amount with more than 15 significant digits is 400 TXN_VALIDATION_ERROR."""
        balance_id = _balance(http)
        body = _body(balance_id, amount="1234567890.1234567")
        body.pop("precise_amount")
        response = http.post("/transactions", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
        assert "significant digits" in response.json()["error"]
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize(
        "change",
        [
            {"precise_amount": -5},
            {"amount": 1.5},
            {"source": None},
            {"reference": ""},
            {"currency": ""},
            {"source": "same"},
        ],
    )
    def test_rule_violations(self, http: httpx.Client, change: dict[str, Any]) -> None:
        """Amounts, ends, references and currencies that break a rule are 400."""
        balance_id = _balance(http)
        if change.get("source") == "same":
            change = {"source": balance_id}
        body = _body(balance_id, **change)
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        _untouched(http, balance_id)


class TestIdempotencyKey:
    def test_retry_returns_the_first_answer(self, http: httpx.Client) -> None:
        """The same key and body answers the first response again and applies once."""
        balance_id = _balance(http)
        body = _body(balance_id)
        key = {"Idempotency-Key": f"idem-{uuid.uuid4()}"}
        first = http.post("/transactions", json=body, headers=key)
        second = http.post("/transactions", json=body, headers=key)
        assert first.status_code == second.status_code == 201
        assert second.json()["transaction_id"] == first.json()["transaction_id"]
        assert http.get(f"/balances/{balance_id}").json()["balance"] == 100

    def test_same_key_other_body_is_409(self, http: httpx.Client) -> None:
        """Reusing a key with a different body is 409 and changes nothing."""
        balance_id = _balance(http)
        key = {"Idempotency-Key": f"idem-{uuid.uuid4()}"}
        assert http.post("/transactions", json=_body(balance_id), headers=key).status_code == 201
        other = http.post("/transactions", json=_body(balance_id, precise_amount=999), headers=key)
        assert other.status_code == 409
        assert other.json()["error_detail"]["code"] == "TXN_IDEMPOTENCY_CONFLICT"
        assert http.get(f"/balances/{balance_id}").json()["balance"] == 100


class TestRecover:
    @pytest.mark.parametrize(
        ("given", "rendered"),
        [
            ("2m", "2m0s"),
            ("90s", "1m30s"),
            ("1h30m", "1h30m0s"),
            ("500ms", "500ms"),
            ("1.5h", "1h30m0s"),
        ],
    )
    def test_threshold_is_a_go_duration(
        self, http: httpx.Client, given: str, rendered: str
    ) -> None:
        """The threshold is parsed and echoed the way Go renders durations; nothing is stuck."""
        response = http.post(f"/transactions/recover?threshold={given}")
        assert response.status_code == 200
        assert response.json() == {"recovered": 0, "threshold": rendered}

    def test_bad_threshold_is_400(self, http: httpx.Client) -> None:
        """A threshold that is not a duration is refused."""
        assert http.post("/transactions/recover?threshold=soon").status_code == 400
