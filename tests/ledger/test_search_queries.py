"""Search parameters as a Typesense user writes them, and the 400s for the ones we cannot answer.

Goal: every `filter_by`, `sort_by`, `q`/`query_by`, paging and multi-search parameter a client
sends either narrows the hits exactly as documented in `ledger.search`, or is refused with a
400 in Blnk's error body, never a 500 and never a silently different query. Method: each test
seeds its own balance and transfers through Blnk's Python SDK with a unique marker and scopes
every search to that balance, so the expected hits are exact whatever else the session's
database holds; the searches go over raw HTTP (httpx), since the SDK refuses several of these
bodies before sending them.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from kit.db import Database
from ledger.search_repository import run_search
from ledger.surface_errors import SearchTimeoutError
from tests.ledger.conftest import fund_through_sdk

pytestmark = pytest.mark.db


def _new_balance(blnk: Any) -> str:
    response = blnk.ledger_balances.create({"ledger_id": "general_ledger_id", "currency": "USD"})
    assert response.status == 201, response.to_dict()
    balance_id: str = response.data["balance_id"]
    return balance_id


@pytest.fixture
def seeded(blnk: Any) -> dict[str, Any]:
    """A balance funded by 100, 200 and 300 (in that order), with distinct descriptions."""
    marker = f"m{uuid.uuid4().hex[:10]}"
    balance_id = _new_balance(blnk)
    descriptions = (f"Acme, Inc. && {marker}", f"50%_off {marker}", f"range a..b {marker}")
    groups = ("south", "north", "south")
    for amount, description, group in zip((100, 200, 300), descriptions, groups, strict=True):
        meta_data = {"group": group, "n": amount // 100}
        fund_through_sdk(blnk, balance_id, amount, description, meta_data=meta_data)
    return {"marker": marker, "balance_id": balance_id, "descriptions": descriptions}


def _search(http: httpx.Client, collection: str, **params: Any) -> httpx.Response:
    return http.post(f"/search/{collection}", json=params)


def _amounts(
    http: httpx.Client, seeded: dict[str, Any], filter_by: str, **params: Any
) -> list[str]:
    """The precise amounts of the seeded transfers that `filter_by` keeps, in the answer's order."""
    scoped = f"destination:={seeded['balance_id']} && ({filter_by})"
    response = _search(http, "transactions", q="*", filter_by=scoped, **params)
    assert response.status_code == 201, response.text
    return [hit["document"]["precise_amount"] for hit in response.json()["hits"]]


def _refused(response: httpx.Response, code: str = "SRCH_QUERY_INVALID") -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_detail"]["code"] == code
    message: str = body["error"]
    assert body["error_detail"]["message"] == message
    return message


class TestFilterValues:
    def test_amounts_compare_as_numbers(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """Amounts are strings in the documents but compare as numbers: 100 > 99, not "100" < "99"."""
        ordered = {"sort_by": "precise_amount:asc"}
        assert _amounts(http, seeded, "precise_amount:>99", **ordered) == ["100", "200", "300"]
        assert _amounts(http, seeded, "precise_amount:<1000", **ordered) == ["100", "200", "300"]
        assert _amounts(http, seeded, "precise_amount:>=200 && precise_amount:<=200") == ["200"]
        assert _amounts(http, seeded, "amount:>1.5", **ordered) == ["200", "300"]
        assert _amounts(http, seeded, "precise_amount:[0..150, 250..1000]", **ordered) == [
            "100",
            "300",
        ]

    def test_negation(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """`:!=` excludes one value or a list of them; on a missing metadata key it keeps the row."""
        ordered = {"sort_by": "precise_amount:asc"}
        assert _amounts(http, seeded, "precise_amount:!=200", **ordered) == ["100", "300"]
        assert _amounts(http, seeded, "precise_amount:!=[100, 300]") == ["200"]
        assert _amounts(http, seeded, "meta_data.group:!=south") == ["200"]
        assert _amounts(http, seeded, "meta_data.absent:!=x", **ordered) == ["100", "200", "300"]
        assert _amounts(http, seeded, "status:!=APPLIED") == []

    def test_match_contains_and_exact_equals(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """On text, `:` finds the value anywhere (any case); `:=` wants the whole value."""
        marker = seeded["marker"]
        assert _amounts(http, seeded, "description:acme") == ["100"]
        assert _amounts(http, seeded, "description:=acme") == []
        assert _amounts(http, seeded, f"description:=`Acme, Inc. && {marker}`") == ["100"]

    def test_backticked_list_values_are_literal(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """In a list, a backticked value holding `..` is a value to equal, not a range."""
        literal = seeded["descriptions"][2]
        assert _amounts(http, seeded, f"description:=[`{literal}`]") == ["300"]
        assert _amounts(http, seeded, f"description:=[`{literal}`, `no such`]") == ["300"]

    def test_like_wildcards_in_values_are_literal(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """`%` and `_` in a value or a query term match themselves, not any text."""
        assert _amounts(http, seeded, "description:%_") == ["200"]
        response = _search(
            http,
            "transactions",
            q="%_",
            query_by="description",
            filter_by=f"destination:={seeded['balance_id']}",
        )
        assert [hit["document"]["precise_amount"] for hit in response.json()["hits"]] == ["200"]

    def test_values_that_look_like_sql_are_data(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """Quotes and SQL in values and terms are compared as text; in field names they are refused."""
        assert _amounts(http, seeded, "description:=`x' OR '1'='1`") == []
        assert _amounts(http, seeded, "meta_data.group:=`south' OR 'a'='a`") == []
        response = _search(
            http,
            "transactions",
            q="' OR 1=1 --",
            filter_by=f"destination:={seeded['balance_id']}",
        )
        assert response.json()["found"] == 0
        for params in (
            {"filter_by": "meta_data.a'b:=1"},
            {"sort_by": "meta_data.x');DROP TABLE ledger.ledgers;--:asc"},
            {"sort_by": "created_at; DROP TABLE ledger.ledgers:asc"},
            {"q": "x", "query_by": "description,(SELECT 1)"},
        ):
            _refused(_search(http, "transactions", **params))

    def test_integer_field_against_any_number(self, http: httpx.Client, blnk: Any) -> None:
        """`version` (an integer) compares with fractions and numbers past 2**63 exactly, as numbers."""
        balance_id = _new_balance(blnk)

        def found(filter_by: str) -> int:
            scoped = f"balance_id:={balance_id} && {filter_by}"
            response = _search(http, "balances", q="*", filter_by=scoped)
            assert response.status_code == 201, response.text
            count: int = response.json()["found"]
            return count

        assert found("version:<0.5") == 1
        assert found("version:=[0.5]") == 0
        assert found("version:>-0.5") == 1
        assert found("version:<99999999999999999999") == 1
        assert found("version:[0..99999999999999999999]") == 1
        assert found("version:!=[0.0, 99999999999999999999]") == 0

    @pytest.mark.parametrize(
        ("collection", "filter_by"),
        [
            ("transactions", "precise_amount:>1E+999999999"),
            ("transactions", "precise_amount:>1E-20000"),
            ("transactions", "precise_amount:>NaN"),
            ("transactions", "amount:<Infinity"),
            ("balances", "version:>1E+999999999"),
            ("balances", "balance:=[1, sNaN]"),
            ("transactions", "created_at:>0001-01-01T00:00:00+14:00"),
            ("transactions", "created_at:<9999-12-31T23:59:59-14:00"),
            ("transactions", "created_at:>999999999999"),
            ("transactions", "created_at:>2024-01-01T00:00:00"),
            ("transactions", "inflight:=maybe"),
        ],
    )
    def test_values_out_of_range_are_400(
        self, http: httpx.Client, collection: str, filter_by: str
    ) -> None:
        """A number or time no column can hold, or a bool that is not one, is a 400 naming the field."""
        message = _refused(_search(http, collection, q="*", filter_by=filter_by))
        assert filter_by.split(":", 1)[0] in message

    @pytest.mark.parametrize(
        "filter_by",
        [
            "9lives:=1",
            "status:=APPLIED )",
            "status:=[" + ", ".join(["APPLIED"] * 101) + "]",
            "status:=" + "A" * 4096,
            "status:=[`a..b`, 1..2]",
        ],
    )
    def test_malformed_filters_are_400(self, http: httpx.Client, filter_by: str) -> None:
        """A bad field name, stray text, an oversized list or text, or a value/range mix is a 400."""
        message = _refused(_search(http, "transactions", q="*", filter_by=filter_by))
        assert message.startswith("filter_by: ")

    def test_id_is_the_document_id(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """`id` filters and sorts as the collection's own id, as in Typesense's documents."""
        scoped = f"destination:={seeded['balance_id']}"
        response = _search(http, "transactions", q="*", filter_by=scoped, sort_by="id:desc")
        ids = [hit["document"]["id"] for hit in response.json()["hits"]]
        assert ids == sorted(ids, reverse=True)
        assert len(ids) == 3
        assert _amounts(http, seeded, f"id:={ids[1]}") == [
            hit["document"]["precise_amount"]
            for hit in response.json()["hits"]
            if hit["document"]["transaction_id"] == ids[1]
        ]

    def test_times_as_unix_seconds_or_rfc3339(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """Times filter by unix seconds (as Blnk's documents hold them) or RFC 3339 with an offset."""
        everything = ["100", "200", "300"]
        ordered = {"sort_by": "precise_amount:asc"}
        assert _amounts(http, seeded, "created_at:>1600000000", **ordered) == everything
        assert _amounts(http, seeded, "created_at:<1600000000") == []
        window = "created_at:[2020-01-01T00:00:00Z..2999-01-01T00:00:00+02:00]"
        assert _amounts(http, seeded, window, **ordered) == everything
        assert _amounts(http, seeded, "effective_date:>=1600000000.5", **ordered) == everything


class TestSortAndPaging:
    def test_several_sort_fields(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """Later sort fields break the ties of earlier ones; a field without a direction is asc."""
        assert _amounts(
            http, seeded, "precise_amount:>0", sort_by="meta_data.group:asc,precise_amount:desc"
        ) == ["200", "300", "100"]
        assert _amounts(
            http, seeded, "precise_amount:>0", sort_by="meta_data.group:desc, precise_amount"
        ) == ["100", "300", "200"]

    def test_text_match_alone_orders_as_the_default(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """`_text_match` is ignored: alone it orders as no sort_by does (newest first)."""
        newest_first = ["300", "200", "100"]
        assert _amounts(http, seeded, "precise_amount:>0") == newest_first
        assert _amounts(http, seeded, "precise_amount:>0", sort_by="_text_match:desc") == (
            newest_first
        )
        assert _amounts(
            http, seeded, "precise_amount:>0", sort_by="_text_match:desc,precise_amount:asc"
        ) == ["100", "200", "300"]

    @pytest.mark.parametrize(
        "sort_by",
        [
            "a:asc,b:asc",
            "precise_amount:asc,amount:asc,created_at:asc,status:asc",
            "precise_amount:up",
        ],
    )
    def test_bad_sort_is_400(self, http: httpx.Client, sort_by: str) -> None:
        """An unknown field, more than three fields or a direction other than asc/desc is a 400."""
        _refused(_search(http, "transactions", q="*", sort_by=sort_by))

    @pytest.mark.parametrize(
        ("page", "per_page"), [(0, 10), (4001, 10), (-1, 10), (1, 0), (1, 251), (1, -5)]
    )
    def test_paging_out_of_bounds_is_400(
        self, http: httpx.Client, page: int, per_page: int
    ) -> None:
        """`page` runs 1-4000 and `per_page` 1-250 (Typesense's cap); outside, a 400 names which."""
        message = _refused(_search(http, "ledgers", q="*", page=page, per_page=per_page))
        assert ("per_page" if page == 1 else "page") in message

    def test_paging_edges(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """per_page 250 is allowed; a page past the end is empty but still counts what was found."""
        scoped = f"destination:={seeded['balance_id']}"
        full = _search(http, "transactions", q="*", filter_by=scoped, per_page=250).json()
        assert full["found"] == 3
        assert len(full["hits"]) == 3
        assert full["request_params"]["per_page"] == 250
        past = _search(http, "transactions", q="*", filter_by=scoped, page=3, per_page=2).json()
        assert past["found"] == 3
        assert past["page"] == 3
        assert past["hits"] == []

    def test_wrong_types_are_400_invalid_input(self, http: httpx.Client) -> None:
        """A page that is not an integer or a q that is not text is Blnk's "Invalid input"."""
        for params in ({"q": "*", "page": 1.5}, {"q": 5}, {"q": "*", "filter_by": ["a:1"]}):
            message = _refused(_search(http, "ledgers", **params), "GEN_MALFORMED_REQUEST")
            assert message.startswith("Invalid input")


class TestQuery:
    def test_every_term_must_appear_in_some_field(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """Terms are ANDed; each may match any field of `query_by`; `*` matches everything."""
        marker, balance_id = seeded["marker"], seeded["balance_id"]

        def found(q: str, query_by: str) -> int:
            response = _search(http, "transactions", q=q, query_by=query_by)
            assert response.status_code == 201, response.text
            count: int = response.json()["found"]
            return count

        assert found(f"{marker} ACME", "description") == 1
        assert found(f"{marker} {balance_id}", "description") == 0
        assert found(f"{marker} {balance_id}", "description,destination") == 3
        assert found(f"{marker} {balance_id}", " description , destination ,") == 3
        assert found(f"{marker} north", "description") == 0
        assert found(f"{marker} north", "description,meta_data.group") == 1
        scoped = _search(http, "transactions", q="*", filter_by=f"destination:={balance_id}")
        assert scoped.json()["found"] == 3

    def test_default_query_by(self, http: httpx.Client, seeded: dict[str, Any]) -> None:
        """Without `query_by`, a word searches the collection's usual text fields."""
        response = _search(http, "transactions", q=seeded["marker"])
        assert response.json()["found"] == 3

    def test_query_limits_are_400(self, http: httpx.Client) -> None:
        """More than eight terms or sixteen query_by fields, or an unknown field, is a 400."""
        _refused(_search(http, "transactions", q="a b c d e f g h i"))
        _refused(_search(http, "transactions", q="x", query_by=",".join(["reference"] * 17)))
        _refused(_search(http, "transactions", q="x", query_by="reference,nope"))

    def test_unanswered_parameters_are_ignored(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """include_fields, exclude_fields and facet_by are accepted; documents come whole."""
        response = _search(
            http,
            "transactions",
            q="*",
            filter_by=f"destination:={seeded['balance_id']} && precise_amount:=100",
            include_fields="id",
            exclude_fields="precise_amount",
            facet_by="status",
        )
        assert response.status_code == 201, response.text
        (hit,) = response.json()["hits"]
        assert hit["document"]["precise_amount"] == "100"
        assert hit["document"]["meta_data"] == {"group": "south", "n": 1}
        assert response.json()["facet_counts"] == []

    def test_unknown_collection_is_400(self, http: httpx.Client) -> None:
        """Only ledgers, balances, transactions and identities are searchable."""
        message = _refused(_search(http, "reconciliations", q="*"))
        assert "reconciliations" in message


class TestMultiSearch:
    def test_each_bad_search_answers_in_its_place(
        self, http: httpx.Client, seeded: dict[str, Any]
    ) -> None:
        """A bad search answers {code, error} naming what is wrong; the others still answer."""
        response = http.post(
            "/multi-search",
            json={
                "searches": [
                    {"collection": "nope", "q": "*"},
                    {"collection": "ledgers", "q": "*", "per_page": 999},
                    {"collection": "ledgers", "q": "*", "page": "first"},
                    {
                        "collection": "transactions",
                        "q": "*",
                        "filter_by": f"destination:={seeded['balance_id']}",
                    },
                ]
            },
        )
        assert response.status_code == 200, response.text
        unknown, too_many, wrong_type, good = response.json()["results"]
        assert unknown == {"code": 404, "error": "Collection `nope` not found."}
        assert too_many == {"code": 400, "error": "per_page must be 1 to 250"}
        assert wrong_type["code"] == 400
        assert "page" in wrong_type["error"]
        assert "SearchIn" not in wrong_type["error"]
        assert good["found"] == 3

    def test_search_count_is_bounded(self, http: httpx.Client) -> None:
        """No searches, or more than fifty, is a 400 for the whole request."""
        _refused(http.post("/multi-search", json={"searches": []}))
        _refused(http.post("/multi-search", json={}))
        many = [{"collection": "ledgers", "q": "*"}] * 51
        _refused(http.post("/multi-search", json={"searches": many}), "GEN_MALFORMED_REQUEST")


class TestReindexLimits:
    def test_batch_size_over_the_limit_is_400(self, http: httpx.Client) -> None:
        """A batch_size past 10,000 is refused before anything is logged."""
        message = _refused(http.post("/search/reindex", json={"batch_size": 10_001}))
        assert "batch_size" in message


class TestSearchTimeout:
    async def test_a_cancelled_search_is_a_timeout_error(self, db: Database) -> None:
        """A search that outlives its statement timeout is SRCH_TIMEOUT (503), not a driver error."""
        async with db.connection() as conn:
            with pytest.raises(SearchTimeoutError) as caught:
                await run_search(conn, "SELECT pg_sleep(0.2)", "SELECT 1", [], timeout_ms=10)
            # The read-only transaction was rolled back: the connection takes new work.
            assert await conn.fetchval("SELECT 1") == 1
        assert caught.value.status == 503
        assert caught.value.code == "SRCH_TIMEOUT"
