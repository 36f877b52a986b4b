"""Bad input gets Blnk's 4xx and changes nothing; Idempotency-Key replays the first answer.

Raw HTTP (httpx) against the real server, since the SDK refuses most of these bodies before
sending them. After each refusal the tests check that no transaction and no balance changed.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from blnk_sdk.errors import parse_blnk_api_error_body

pytestmark = pytest.mark.db

# Valid RFC 3339 times whose offsets carry them past the first or last day that a UTC date
# can hold (year 0 and year 10000 once in UTC).
OUTSIDE_UTC_YEARS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


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
            ("precise_amount", True),  # lax validation read a boolean as 1
            ("amount", True),
            ("precision", True),
            ("overdraft_limit", True),
        ],
    )
    def test_unknown_field_type(self, http: httpx.Client, field: str, value: Any) -> None:
        """A field of the wrong JSON type is 400 and nothing is written (a boolean is no
        number, as Go's decoder has it)."""
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

    @pytest.mark.parametrize("currency", ["E UR", "€", "US$", "x" * 33])
    def test_a_currency_that_is_no_code(self, http: httpx.Client, currency: str) -> None:
        """A currency the balances cannot hold is 400 TXN_VALIDATION_ERROR, not the CHECK's
        500, and nothing is written."""
        balance_id = _balance(http)
        body = _body(balance_id, currency=currency, source=f"@World{currency}")
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
        _untouched(http, balance_id, body["reference"])

    def test_six_megabyte_body(self, http: httpx.Client) -> None:
        """A 6 MB body is refused with 413 before it is read (Blnk's limit is 5 MiB)."""
        balance_id = _balance(http)
        body = _body(balance_id, description="x" * (6 * 1024 * 1024))
        response = http.post("/transactions", json=body)
        assert response.status_code == 413
        assert response.json()["error_detail"]["code"] == "GEN_PAYLOAD_TOO_LARGE"
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize(
        "change",
        [
            {"description": "a\x00b"},
            {"reference": "nul\x00"},
            {"meta_data": {"note": "\x00"}},
            {"meta_data": {"\x00key": 1}},
        ],
    )
    def test_nul_character(self, http: httpx.Client, change: dict[str, Any]) -> None:
        """Text with U+0000, which PostgreSQL cannot store, is 400 GEN_MALFORMED_REQUEST before
        anything is written (it was a 500 from the database)."""
        balance_id = _balance(http)
        body = _body(balance_id, **change)
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
        assert "U+0000" in response.json()["error"]
        _untouched(http, balance_id, None if "reference" in change else body["reference"])

    @pytest.mark.parametrize(
        "path",
        [
            "/transactions/reference/a%00b",
            "/transactions?description=a%00b",
            "/balances/bln_%00",
            "/identities/idt_%00",
        ],
    )
    def test_nul_in_the_url(self, http: httpx.Client, path: str) -> None:
        """`%00` in a path or query is 400 GW_NUL_IN_URL in Blnk's body (it was a 500 from the
        database)."""
        response = http.get(path)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "GW_NUL_IN_URL"

    def test_escaped_backslash_before_u0000_is_ordinary_text(self, http: httpx.Client) -> None:
        """A backslash followed by the text `u0000` is not a NUL: stored and returned as sent."""
        balance_id = _balance(http)
        text = "path\\u0000 and \\\\u0000"
        body = _body(balance_id, description=text)
        response = http.post("/transactions", json=body)
        assert response.status_code == 201, response.text
        stored = http.get(f"/transactions/reference/{body['reference']}").json()
        assert stored["description"] == text

    def test_fractional_precision(self, http: httpx.Client) -> None:
        """A precision of 0.5 is 400 TXN_PRECISION_NOT_INTEGER."""
        balance_id = _balance(http)
        body = _body(balance_id, precision=0.5)
        response = http.post("/transactions", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_PRECISION_NOT_INTEGER"
        _untouched(http, balance_id, body["reference"])

    def test_too_many_significant_digits(self, http: httpx.Client) -> None:
        """An amount with more than 15 significant digits is 400 TXN_VALIDATION_ERROR, its message
        under Blnk's older key `errors`."""
        balance_id = _balance(http)
        body = _body(balance_id, amount="1234567890.1234567")
        body.pop("precise_amount")
        response = http.post("/transactions", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
        assert "significant digits" in response.json()["errors"]
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"precise_amount": -5}, "must not be negative"),
            ({"precise_amount": 0}, "greater than zero"),
            ({"precision": -100}, "precision must be between"),
        ],
    )
    def test_request_rules_are_validation_errors(
        self, http: httpx.Client, change: dict[str, Any], message: str
    ) -> None:
        """A negative or zero amount and a negative precision break Blnk's request validation:
        400 TXN_VALIDATION_ERROR under `errors` (a fractional precision alone has its own code)."""
        balance_id = _balance(http)
        body = {**_body(balance_id), **change}
        response = http.post("/transactions", json=body)
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "TXN_VALIDATION_ERROR"
        assert message in response.json()["errors"]
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

    @pytest.mark.parametrize(
        "change",
        [
            {"scheduled_for": "2030-01-01T00:00:00"},  # no offset
            {"inflight_expiry_date": "soon"},
            {"overdraft_limit": -1},
            {"overdraft_limit": "lots"},
            {"sources": [{"identifier": "@A", "distribution": "left"}]},  # with source
            {"destination": None},
            {
                "source": None,
                "sources": [{"identifier": "@A", "distribution": "left"}],
                "destinations": "legs",
            },
            {
                "destination": None,
                "destinations": [{"identifier": "@A", "precise_distribution": "1.5"}],
            },
            {"meta_data": {"blob": "x" * (64 * 1024)}},
        ],
    )
    def test_more_rule_violations(self, http: httpx.Client, change: dict[str, Any]) -> None:
        """Times without an offset, bad overdraft limits, both a side and its legs, a missing
        end, a fractional precise distribution, oversized metadata: 400, nothing written."""
        balance_id = _balance(http)
        body = {**_body(balance_id), **change}
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        assert "error_detail" in response.json()
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize("when", OUTSIDE_UTC_YEARS)
    @pytest.mark.parametrize(
        "field", ["effective_date", "scheduled_for", "inflight_expiry_date", "inflight_commit_date"]
    )
    @pytest.mark.parametrize("skip_queue", [True, False])
    def test_a_time_outside_years_1_to_9999_in_utc(
        self, http: httpx.Client, field: str, when: str, *, skip_queue: bool
    ) -> None:
        """A time whose offset carries it outside years 1-9999 in UTC is 400 and writes
        nothing: it was stored, answered 500, and made every later list and search of
        transactions a 500."""
        balance_id = _balance(http)
        body = _body(balance_id, inflight=field.startswith("inflight"), skip_queue=skip_queue)
        body[field] = when
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "GEN_MALFORMED_REQUEST"
        _untouched(http, balance_id, body["reference"])
        assert http.get("/transactions").status_code == 200

    @pytest.mark.parametrize("indicator", ["@", "@a b", "@\t"])
    @pytest.mark.parametrize("end", ["source", "destination", "sources"])
    def test_an_indicator_that_is_no_name(
        self, http: httpx.Client, end: str, indicator: str
    ) -> None:
        """An `@` end with no name or with a space in it is 400 TXN_VALIDATION_ERROR, as
        POST /balances refuses such an indicator (creating its balance broke the batch: 500)."""
        balance_id = _balance(http)
        body = _body(balance_id)
        if end == "sources":
            body.pop("source")
            body["sources"] = [
                {"identifier": "@WorldUSD", "distribution": "50%"},
                {"identifier": indicator, "distribution": "left"},
            ]
        elif end == "destination":
            body.update(source=balance_id, destination=indicator)
        else:
            body["source"] = indicator
        response = http.post("/transactions", json=body)
        _refusal(response, 400, "TXN_VALIDATION_ERROR", key="errors")
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize("when", OUTSIDE_UTC_YEARS)
    def test_a_bulk_item_time_outside_years_1_to_9999_in_utc(
        self, http: httpx.Client, when: str
    ) -> None:
        """A bulk whose item has such a time is refused whole (was a 500 after writing)."""
        balance_id = _balance(http)
        items = [_body(balance_id), _body(balance_id, effective_date=when)]
        response = http.post("/transactions/bulk", json={"transactions": items})
        assert response.status_code == 400, response.text
        assert "error_detail" in response.json()
        _untouched(http, balance_id, items[0]["reference"])

    @pytest.mark.parametrize("huge", ["1E+999999999", "1E-999999999", "1e400"])
    @pytest.mark.parametrize("field", ["amount", "precise_amount", "precision"])
    def test_numbers_out_of_range(self, http: httpx.Client, field: str, huge: str) -> None:
        """An exponent no amount needs is 400 at once: `precise_amount: "1E+999999999"` held a
        replica's CPU for minutes building a billion-digit integer, and `amount: 1e400` was a
        500."""
        balance_id = _balance(http)
        body = _body(balance_id)
        if field == "amount":
            body.pop("precise_amount")
        body[field] = huge
        response = http.post("/transactions", json=body)
        assert response.status_code == 400, response.text
        _untouched(http, balance_id, body["reference"])

    @pytest.mark.parametrize("huge", ["1E+999999999", "1e400"])
    def test_a_commit_out_of_range_is_400_and_leaves_the_hold(
        self, http: httpx.Client, huge: str
    ) -> None:
        """A commit of `amount: 1e400` broke the batch it ran in, and its caller was never
        answered."""
        balance_id = _balance(http)
        hold = http.post("/transactions", json=_body(balance_id, inflight=True)).json()
        response = http.put(
            f"/transactions/inflight/{hold['transaction_id']}",
            json={"status": "commit", "amount": huge, "skip_queue": True},
        )
        assert response.status_code == 400, response.text
        assert http.get(f"/balances/{balance_id}").json()["inflight_credit_balance"] == 100

    def test_an_overlong_idempotency_key(self, http: httpx.Client) -> None:
        balance_id = _balance(http)
        body = _body(balance_id)
        response = http.post("/transactions", json=body, headers={"Idempotency-Key": "k" * 256})
        assert response.status_code == 400, response.text
        _untouched(http, balance_id, body["reference"])

    def test_a_bulk_reusing_a_reference_is_refused_whole(self, http: httpx.Client) -> None:
        balance_id = _balance(http)
        item = _body(balance_id)
        response = http.post(
            "/transactions/bulk", json={"transactions": [item, dict(item)], "atomic": False}
        )
        assert response.status_code == 400, response.text
        _untouched(http, balance_id, item["reference"])
        empty = http.post("/transactions/bulk", json={"transactions": []})
        assert empty.status_code == 400, empty.text


def _refusal(response: httpx.Response, status: int, code: str, *, key: str) -> dict[str, Any]:
    """A Blnk error body whose message is under `key` ("error", or the older "errors") and not
    the other one; Blnk's Python SDK reads the same code and message from it."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {key, "error_detail"}, body
    detail = body["error_detail"]
    assert detail["code"] == code
    if isinstance(body[key], str):
        assert body[key] == detail["message"]
    parsed = parse_blnk_api_error_body(body)
    assert (parsed.code, parsed.message) == (code, detail["message"])
    return body


class TestBlnkErrorBodies:
    """Blnk's validation paths answer their message under the older key `errors`
    (`withLegacyKey("errors")` in api/ledger.go, balance.go, transactions.go); every other
    refusal keeps `error`."""

    def test_ledger_validation(self, http: httpx.Client) -> None:
        """A ledger without a name, created or renamed, is refused under `errors`."""
        _refusal(
            http.post("/ledgers", json={"name": ""}), 400, "GEN_VALIDATION_ERROR", key="errors"
        )
        ledger_id = http.post("/ledgers", json={"name": "named"}).json()["ledger_id"]
        renamed = http.put(f"/ledgers/{ledger_id}", json={"name": ""})
        _refusal(renamed, 400, "GEN_VALIDATION_ERROR", key="errors")

    def test_ledger_body_that_does_not_bind(self, http: httpx.Client) -> None:
        """A ledger body that is not JSON, or has a wrong type, is refused under `errors` too."""
        not_json = http.post(
            "/ledgers", content=b'{"name": ', headers={"Content-Type": "application/json"}
        )
        _refusal(not_json, 400, "GEN_MALFORMED_REQUEST", key="errors")
        _refusal(
            http.post("/ledgers", json={"name": ["x"]}), 400, "GEN_MALFORMED_REQUEST", key="errors"
        )

    def test_balance_validation(self, http: httpx.Client) -> None:
        """A balance that breaks a create rule (lineage without identity, no currency) is refused
        under `errors`; a body that is not JSON keeps `error`, as in Blnk."""
        lineage = {"ledger_id": "general_ledger_id", "currency": "USD", "track_fund_lineage": True}
        body = _refusal(
            http.post("/balances", json=lineage), 400, "BAL_VALIDATION_ERROR", key="errors"
        )
        assert "identity_id" in body["errors"]
        no_currency = {"ledger_id": "general_ledger_id"}
        _refusal(
            http.post("/balances", json=no_currency), 400, "BAL_VALIDATION_ERROR", key="errors"
        )
        not_json = http.post(
            "/balances", content=b"[", headers={"Content-Type": "application/json"}
        )
        _refusal(not_json, 400, "GEN_MALFORMED_REQUEST", key="error")

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            ({"allocation_strategy": "RANDOM"}, "FIFO, LIFO or PROPORTIONAL"),
            ({"ledger_id": "own", "indicator": "@fees"}, "only in the general ledger"),
            ({"indicator": "fees"}, "starts with @"),
            ({"indicator": "@fee s"}, "no spaces"),
            ({"ledger_id": ""}, "ledger_id is required"),
            ({"currency": "US D"}, "currency is required"),
        ],
    )
    def test_balance_create_rules(
        self, http: httpx.Client, change: dict[str, Any], words: str
    ) -> None:
        """Each create rule Blnk checks is 400 under `errors`, and no balance appears."""
        ledger = http.post("/ledgers", json={"name": f"rules-{uuid.uuid4()}"}).json()["ledger_id"]
        body = {"ledger_id": "general_ledger_id", "currency": "USD", **change}
        if body["ledger_id"] == "own":
            body["ledger_id"] = ledger
        before = http.get("/balances", params={"ledger_id": ledger}).json()
        refused = _refusal(
            http.post("/balances", json=body), 400, "BAL_VALIDATION_ERROR", key="errors"
        )
        assert words in refused["errors"]
        assert http.get("/balances", params={"ledger_id": ledger}).json() == before == []
        if "indicator" in body:
            found = http.get(f"/balances/indicator/{body['indicator']}/currency/USD")
            assert found.status_code == 404

    def test_balance_in_an_unknown_ledger(self, http: httpx.Client) -> None:
        """A ledger that does not exist is 400 BAL_VALIDATION_ERROR (under `error`, naming it)."""
        missing = f"ldg_{uuid.uuid4()}"
        response = http.post("/balances", json={"ledger_id": missing, "currency": "USD"})
        body = _refusal(response, 400, "BAL_VALIDATION_ERROR", key="error")
        assert missing in body["error"]
        assert http.get("/balances", params={"ledger_id": missing}).json() == []

    def test_an_indicator_is_one_balance_per_currency(self, http: httpx.Client) -> None:
        """(indicator, currency) is unique: the second create is 409 and the first stays the
        one found; the same indicator in another currency is another balance."""
        indicator = f"@fees-{uuid.uuid4().hex[:8]}"
        body = {"ledger_id": "general_ledger_id", "currency": "USD", "indicator": indicator}
        first = http.post("/balances", json=body)
        assert first.status_code == 201
        _refusal(http.post("/balances", json=body), 409, "BAL_DUPLICATE_INDICATOR", key="error")
        found = http.get(f"/balances/indicator/{indicator}/currency/USD").json()
        assert found["balance_id"] == first.json()["balance_id"]
        euros = http.post("/balances", json={**body, "currency": "EUR"})
        assert euros.status_code == 201
        assert euros.json()["balance_id"] != found["balance_id"]

    def test_monitor_validation(self, http: httpx.Client) -> None:
        """A balance monitor that breaks a create rule is refused under `errors`."""
        response = http.post("/balance-monitors", json={"condition": {"field": "balance"}})
        _refusal(response, 400, "GEN_VALIDATION_ERROR", key="errors")

    @pytest.mark.parametrize(
        "change",
        [
            {"source": "same"},
            {"amount": 1.5},
            {"currency": ""},
            {"source": None},
        ],
    )
    def test_transaction_validation(self, http: httpx.Client, change: dict[str, Any]) -> None:
        """A transaction that breaks a request rule is 400 TXN_VALIDATION_ERROR under `errors`."""
        balance_id = _balance(http)
        if change.get("source") == "same":
            change = {"source": balance_id}
        response = http.post("/transactions", json=_body(balance_id, **change))
        _refusal(response, 400, "TXN_VALIDATION_ERROR", key="errors")
        _untouched(http, balance_id)

    def test_bulk_item_validation(self, http: httpx.Client) -> None:
        """An invalid item of a bulk request is TXN_VALIDATION_ERROR under `errors`, with its index."""
        balance_id = _balance(http)
        items = [_body(balance_id), _body(balance_id, source=balance_id)]
        response = http.post("/transactions/bulk", json={"transactions": items, "atomic": True})
        body = _refusal(response, 400, "TXN_VALIDATION_ERROR", key="errors")
        assert body["error_detail"]["details"]["index"] == 1
        _untouched(http, balance_id)

    def test_filter_parse_errors(self, http: httpx.Client) -> None:
        """Query filters that do not parse list every bad parameter under `errors`, and again
        as `error_detail.details` (Blnk's `filter.ParseError` items)."""
        response = http.get(
            "/balances", params={"created_at_between": "2024-01-01", "currency_eq": "x" * 1001}
        )
        body = _refusal(response, 400, "GEN_VALIDATION_ERROR", key="errors")
        assert body["error_detail"]["message"] == "invalid filter parameters"
        assert sorted(item["Param"] for item in body["errors"]) == [
            "created_at_between",
            "currency_eq",
        ]
        assert all(set(item) == {"Param", "Message"} for item in body["errors"])
        assert body["error_detail"]["details"] == body["errors"]

    @pytest.mark.parametrize("when", OUTSIDE_UTC_YEARS)
    @pytest.mark.parametrize("collection", ["ledgers", "balances", "transactions", "identities"])
    def test_a_filter_time_outside_years_1_to_9999_in_utc(
        self, http: httpx.Client, collection: str, when: str
    ) -> None:
        """A time filter that leaves years 1-9999 in UTC is 400, in the query and in
        `/filter` (the driver could not encode it: a 500)."""
        listed = http.get(f"/{collection}", params={"created_at_gt": when})
        _refusal(listed, 400, "GEN_VALIDATION_ERROR", key="error")
        filtered = http.post(
            f"/{collection}/filter",
            json={"filters": [{"field": "created_at", "operator": "gt", "value": when}]},
        )
        _refusal(filtered, 400, "GEN_VALIDATION_ERROR", key="error")
        between = http.post(
            f"/{collection}/filter",
            json={
                "filters": [
                    {
                        "field": "created_at",
                        "operator": "between",
                        "values": ["2020-01-01T00:00:00Z", when],
                    }
                ]
            },
        )
        _refusal(between, 400, "GEN_VALIDATION_ERROR", key="error")

    @pytest.mark.parametrize("when", OUTSIDE_UTC_YEARS)
    def test_a_balance_at_a_time_outside_years_1_to_9999_in_utc(
        self, http: httpx.Client, when: str
    ) -> None:
        """`/balances/{id}/at` with such a timestamp is 400 BAL_INVALID_TIMESTAMP (was a 500)."""
        balance_id = _balance(http)
        response = http.get(f"/balances/{balance_id}/at", params={"timestamp": when})
        _refusal(response, 400, "BAL_INVALID_TIMESTAMP", key="error")

    def test_a_metadata_merge_past_the_bound_is_400(self, http: httpx.Client) -> None:
        """Merges may not grow an entity's metadata past 64 KiB: unbounded, they grew a ledger
        to 260 MB (every list carried it) until PostgreSQL's jsonb limit made them 503."""
        ledger = http.post("/ledgers", json={"name": f"meta-{uuid.uuid4().hex[:6]}"}).json()
        path = f"/{ledger['ledger_id']}/metadata"
        first = http.post(path, json={"meta_data": {"a": "x" * (40 * 1024)}})
        assert first.status_code == 200, first.text
        second = http.post(path, json={"meta_data": {"b": "y" * (40 * 1024)}})
        _refusal(second, 400, "GEN_VALIDATION_ERROR", key="error")
        stored = http.get(f"/ledgers/{ledger['ledger_id']}").json()["meta_data"]
        assert set(stored) == {"a"}

    def test_a_new_entitys_metadata_past_the_bound_is_400(self, http: httpx.Client) -> None:
        """A ledger, a balance or a balance monitor is refused with metadata past 64 KiB, as a
        transaction or an identity is, and none is created."""
        big = {"note": "x" * (64 * 1024)}
        name = f"big-meta-{uuid.uuid4().hex[:8]}"
        ledger = http.post("/ledgers", json={"name": name, "meta_data": big})
        _refusal(ledger, 400, "GEN_VALIDATION_ERROR", key="errors")
        assert http.get("/ledgers", params={"name_eq": name}).json() == []
        ledger_id = http.post("/ledgers", json={"name": name}).json()["ledger_id"]
        balance = http.post(
            "/balances", json={"ledger_id": ledger_id, "currency": "USD", "meta_data": big}
        )
        _refusal(balance, 400, "BAL_VALIDATION_ERROR", key="errors")
        assert http.get("/balances", params={"ledger_id_eq": ledger_id}).json() == []
        balance_id = _balance(http)
        monitor = http.post(
            "/balance-monitors",
            json={
                "balance_id": balance_id,
                "condition": {"field": "balance", "operator": ">", "value": 10, "precision": 100},
                "meta_data": big,
            },
        )
        _refusal(monitor, 400, "GEN_VALIDATION_ERROR", key="errors")  # Blnk's key for a new one
        assert http.get(f"/balance-monitors/balances/{balance_id}").json() == []

    def test_other_refusals_keep_error(self, http: httpx.Client) -> None:
        """Unknown transactions and balances, a transaction body that does not parse and a
        filter on an unknown field keep the standard `error` key."""
        _refusal(http.get(f"/transactions/txn_{uuid.uuid4()}"), 404, "TXN_NOT_FOUND", key="error")
        _refusal(http.get(f"/balances/bln_{uuid.uuid4()}"), 404, "BAL_NOT_FOUND", key="error")
        not_json = http.post(
            "/transactions",
            content=b'{"precise_amount": 1,',
            headers={"Content-Type": "application/json"},
        )
        body = _refusal(not_json, 400, "GEN_MALFORMED_REQUEST", key="error")
        assert body["error"] == "Invalid input"
        unknown = http.get("/balances", params={"colour_eq": "red"})
        _refusal(unknown, 400, "GEN_VALIDATION_ERROR", key="error")


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


def test_openapi_documents_every_blnk_error_body(http: httpx.Client) -> None:
    """The ledger's OpenAPI error model lists the older bodies' members beside `error`, and only
    `error_detail` is required (it is the one member every variant has)."""
    schema = http.get("/openapi.json").json()
    model = schema["components"]["schemas"]["BlnkErrorBody"]
    assert model["required"] == ["error_detail"]
    assert {"error", "errors", "code", "message", "details", "error_detail"} <= set(
        model["properties"]
    )
    refused = schema["paths"]["/hooks/{hook_id}"]["get"]["responses"]["404"]
    assert refused["content"]["application/json"]["schema"]["$ref"].endswith("/BlnkErrorBody")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/balances/filter", "POST"),  # not GET, which /balances/{id} would take
        ("DELETE", "/transactions", "GET, POST"),
        ("POST", "/hooks/hk_1", "DELETE, GET, PUT"),
    ],
)
def test_method_not_allowed_lists_the_resources_methods(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    """A 405 names in `Allow` the methods the OpenAPI document lists for that path, in Blnk's
    error body, and the document agrees."""
    response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error_detail"]["code"] == "GEN_METHOD_NOT_ALLOWED"
    documented = http.get("/openapi.json").json()["paths"]
    template = "/hooks/{hook_id}" if path.startswith("/hooks/") else path
    assert ", ".join(sorted(m.upper() for m in documented[template])) == allowed


def test_openapi_documents_the_request_bodies(http: httpx.Client) -> None:
    """Every operation that reads a JSON body documents it by the model that validates it (the
    routes read the raw body for Blnk's own errors, so the document listed none), with the
    model's definitions inlined: no `$ref` into `$defs` that would point at the document root."""
    paths = http.get("/openapi.json").json()["paths"]
    undocumented = sorted(
        f"{method.upper()} {path}"
        for path, item in paths.items()
        for method, operation in item.items()
        if method in {"post", "put", "patch"} and "requestBody" not in operation
    )
    assert undocumented == [
        "POST /balances-snapshots",  # no body
        "POST /identities/{identity_id}/tokenize/{field}",  # no body
        "POST /reconciliation/upload",  # multipart, read by Starlette
        "POST /transactions/recover",  # no body
        "POST /webhooks/{subscription_id}/deliveries/{delivery_id}/redrive",  # no body
    ]
    # The bodies parsed field by field are documented by schemas built from the same bounds.
    monitor = paths["/balance-monitors"]["post"]["requestBody"]["content"]["application/json"]
    condition = monitor["schema"]["properties"]["condition"]["properties"]
    assert condition["operator"]["enum"] == ["!=", "<", "<=", "=", "==", ">", ">="]
    webhook = paths["/webhooks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert webhook["required"] == ["url", "event_types"]
    assert (
        "required"
        not in paths["/webhooks/{subscription_id}"]["patch"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
    )
    create = paths["/transactions"]["post"]["requestBody"]
    assert create["required"] is True
    schema = create["content"]["application/json"]["schema"]
    assert {"amount", "precise_amount", "precision", "reference", "sources"} <= set(
        schema["properties"]
    )
    leg = schema["properties"]["sources"]["anyOf"][0]["items"]
    assert leg["required"] == ["identifier"]  # the nested model, inlined
    assert paths["/refund-transaction/{transaction_id}"]["post"]["requestBody"]["required"] is False
    assert "#/$defs/" not in str(paths)
