"""Search in Typesense's shape, through Blnk's own Python SDK, over real HTTP.

Each test creates its own ledger, balances and transactions with a unique marker, so the
searches can be exact about what they find however many other rows the session's database
holds. What is proven: the result shape (201, found/out_of/page/hits/request_params), documents
as Blnk indexes them (string amounts, unix times, an `id`), `q` with `query_by`, Typesense's
`filter_by` syntax, `sort_by`, paging, multi-search, the reindex contract, and the 400s.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from blnk_sdk import BlnkClientOptions, blnk_init

from tests.ledger.conftest import fund_through_sdk

pytestmark = pytest.mark.db


def _ledger(client: Any, name: str) -> str:
    response = client.ledgers.create({"name": name, "meta_data": {"team": "search"}})
    assert response.status == 201, response.to_dict()
    ledger_id: str = response.data["ledger_id"]
    return ledger_id


def _balance(client: Any, ledger_id: str) -> str:
    response = client.ledger_balances.create({"ledger_id": ledger_id, "currency": "USD"})
    assert response.status == 201, response.to_dict()
    balance_id: str = response.data["balance_id"]
    return balance_id


@pytest.fixture
def seeded(blnk: Any) -> dict[str, Any]:
    """A balance with three transfers (100, 200, 300) whose descriptions share a unique marker."""
    marker = f"m{uuid.uuid4().hex[:10]}"
    ledger_id = _ledger(blnk, f"search {marker}")
    balance_id = _balance(blnk, ledger_id)
    moves = [
        fund_through_sdk(
            blnk,
            balance_id,
            amount,
            f"payout {marker} #{index}",
            meta_data={"batch": marker, "n": str(index)},
        )
        for index, amount in enumerate((100, 200, 300), start=1)
    ]
    return {"marker": marker, "ledger_id": ledger_id, "balance_id": balance_id, "moves": moves}


class TestSearch:
    def test_result_shape_and_documents(self, blnk: Any, seeded: dict[str, Any]) -> None:
        """A text search answers 201 in Typesense's shape; documents carry string amounts and unix times."""
        response = blnk.search.search(
            {"q": seeded["marker"], "query_by": "description"}, "transactions"
        )
        assert response.status == 201, response.to_dict()
        result = response.data
        assert result["found"] == 3
        assert result["out_of"] >= 3
        assert result["page"] == 1
        assert result["facet_counts"] == []
        assert result["request_params"]["collection_name"] == "transactions"
        assert isinstance(result["search_time_ms"], int)
        documents = [hit["document"] for hit in result["hits"]]
        assert all(hit["highlights"] == [] for hit in result["hits"])
        assert sorted(d["precise_amount"] for d in documents) == ["100", "200", "300"]
        first = documents[0]
        assert first["id"] == first["transaction_id"]
        assert isinstance(first["created_at"], int)
        assert first["created_at"] > 1_600_000_000
        assert first["status"] == "APPLIED"

    def test_filter_by_sort_and_paging(self, blnk: Any, seeded: dict[str, Any]) -> None:
        """filter_by comparisons, lists and ranges narrow the hits; sort_by and paging order them."""
        balance_id = seeded["balance_id"]

        def amounts(filter_by: str, **extra: Any) -> list[str]:
            params = {"q": "*", "filter_by": f"destination:={balance_id} && {filter_by}", **extra}
            response = blnk.search.search(params, "transactions")
            assert response.status == 201, response.to_dict()
            return [hit["document"]["precise_amount"] for hit in response.data["hits"]]

        assert amounts("precise_amount:>150", sort_by="precise_amount:asc") == ["200", "300"]
        assert amounts("precise_amount:[100..250]", sort_by="precise_amount:desc") == ["200", "100"]
        assert amounts("amount:<=1 && status:[APPLIED, INFLIGHT]") == ["100"]
        assert amounts("meta_data.n:=3") == ["300"]
        assert amounts(
            "(precise_amount:=100 || precise_amount:=300)", sort_by="precise_amount:asc"
        ) == ["100", "300"]
        page_two = blnk.search.search(
            {
                "q": "*",
                "filter_by": f"destination:={balance_id}",
                "sort_by": "precise_amount:asc",
                "page": 2,
                "per_page": 1,
            },
            "transactions",
        ).data
        assert page_two["found"] == 3
        assert page_two["page"] == 2
        assert [hit["document"]["precise_amount"] for hit in page_two["hits"]] == ["200"]

    def test_balances_ledgers_and_identities(self, blnk: Any, seeded: dict[str, Any]) -> None:
        """Balances, ledgers and identities are searchable too, each in Blnk's document shape."""
        balances = blnk.search.search(
            {"q": "*", "filter_by": f"ledger_id:={seeded['ledger_id']}"}, "balances"
        ).data
        assert balances["found"] == 1
        balance = balances["hits"][0]["document"]
        assert balance["balance"] == "600"
        assert balance["credit_balance"] == "600"
        assert balance["id"] == seeded["balance_id"]
        ledgers = blnk.search.search({"q": seeded["marker"], "query_by": "name"}, "ledgers").data
        assert [hit["document"]["ledger_id"] for hit in ledgers["hits"]] == [seeded["ledger_id"]]
        surname = f"Search{uuid.uuid4().hex[:8]}"
        identity = blnk.identity.create(
            {"identity_type": "individual", "first_name": "Grace", "last_name": surname}
        )
        assert identity.status == 201, identity.to_dict()
        people = blnk.search.search(
            {"q": surname.lower(), "query_by": "last_name,first_name"}, "identities"
        ).data
        assert people["found"] == 1
        assert people["hits"][0]["document"]["identity_id"] == identity.data["identity_id"]

    def test_invalid_searches_are_400(self, blnk: Any) -> None:
        """An unknown field, broken filter syntax or a bad sort answers 400 SRCH_QUERY_INVALID."""
        for params in (
            {"q": "*", "filter_by": "no_such_field:=1"},
            {"q": "*", "filter_by": "status:[APPLIED"},
            {"q": "*", "filter_by": "precise_amount:>ten"},
            {"q": "*", "sort_by": "precise_amount:sideways"},
            {"q": "x", "query_by": "nope"},
        ):
            response = blnk.search.search(params, "transactions")
            assert response.status == 400, (params, response.to_dict())
            assert response.error.code == "SRCH_QUERY_INVALID"

    def test_multi_search(self, blnk: Any, seeded: dict[str, Any]) -> None:
        """Several searches answer 200 with one result each; a bad one answers {code, error} in place."""
        response = blnk.search.multi_search(
            {
                "searches": [
                    {
                        "collection": "transactions",
                        "q": seeded["marker"],
                        "query_by": "description",
                    },
                    {
                        "collection": "balances",
                        "q": "*",
                        "filter_by": f"balance_id:={seeded['balance_id']}",
                    },
                    {"collection": "ledgers", "q": "*", "filter_by": "name:=[unterminated"},
                ]
            }
        )
        assert response.status == 200, response.to_dict()
        first, second, third = response.data["results"]
        assert first["found"] == 3
        assert second["hits"][0]["document"]["balance_id"] == seeded["balance_id"]
        assert third["code"] == 400
        assert "filter_by" in third["error"]


class TestReindex:
    def test_reindex_reports_completion(self, blnk: Any) -> None:
        """Before any reindex GET is 404; a reindex answers 202 and is reported completed."""
        before = blnk.search.get_reindex_status()
        assert before.status == 404
        assert before.error.code == "SRCH_REINDEX_NOT_STARTED"
        started = blnk.search.start_reindex({"batch_size": 500})
        assert started.status == 202, started.to_dict()
        assert started.data["progress"]["status"] == "completed"
        progress = blnk.search.get_reindex_status()
        assert progress.status == 200
        assert progress.data["status"] == "completed"
        assert progress.data["processed_records"] == progress.data["total_records"]
        assert progress.data["total_records"] > 0


class TestSearchScopes:
    def test_search_needs_the_search_scope(self, blnk_master: Any, secure_ledger_url: str) -> None:
        """Searching is a search:write action (POST); multi-search counts as search."""
        owner = f"owner-{uuid.uuid4().hex[:8]}"
        keys = {
            scope: blnk_master.api_keys.create(
                {
                    "name": scope,
                    "owner": owner,
                    "scopes": [scope],
                    "expires_at": "2999-01-01T00:00:00Z",
                }
            ).data["key"]
            for scope in ("search:read", "search:write")
        }
        reader = blnk_init(
            keys["search:read"], BlnkClientOptions(base_url=secure_ledger_url, retry_count=1)
        )
        writer = blnk_init(
            keys["search:write"], BlnkClientOptions(base_url=secure_ledger_url, retry_count=1)
        )
        try:
            refused = reader.search.search({"q": "*"}, "ledgers")
            assert refused.status == 403
            assert refused.error.code == "AUTH_INSUFFICIENT_PERMISSIONS"
            assert writer.search.search({"q": "*"}, "ledgers").status == 201
            assert (
                writer.search.multi_search(
                    {"searches": [{"collection": "ledgers", "q": "*"}]}
                ).status
                == 200
            )
        finally:
            reader.close()
            writer.close()
