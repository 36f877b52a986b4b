"""Metadata merges on a bulk id, through Blnk's own Python SDK over real HTTP.

A bulk request has no row of its own; its transactions name it as `parent_transaction`. A
merge on `bulk_<uuid>` lands in every transaction of the batch, as in Blnk.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.db


def _bulk(blnk: Any, count: int) -> str:
    ledger_id = blnk.ledgers.create({"name": "bulk metadata"}).data["ledger_id"]
    balance_id = blnk.ledger_balances.create({"ledger_id": ledger_id, "currency": "USD"}).data[
        "balance_id"
    ]
    items = [
        {
            "precise_amount": 100 + i,
            "precision": 100,
            "reference": f"ref-{uuid.uuid4()}",
            "currency": "USD",
            "description": "bulk",
            "source": "@WorldUSD",
            "destination": balance_id,
            "allow_overdraft": True,
        }
        for i in range(count)
    ]
    response = blnk.transactions.create_bulk({"transactions": items, "atomic": True})
    assert response.status == 201, response.to_dict()
    batch_id: str = response.data["batch_id"]
    return batch_id


class TestBulkMetadata:
    def test_merge_reaches_every_transaction_of_the_batch(self, blnk: Any) -> None:
        """Keys merged on a bulk id appear on each of its transactions; the answer is the keys given."""
        batch_id = _bulk(blnk, 3)
        merged = blnk.metadata.update(batch_id, {"meta_data": {"settlement": "2026-03-01"}})
        assert merged.status == 200, merged.to_dict()
        assert merged.data == {"meta_data": {"settlement": "2026-03-01"}}
        found = blnk.search.filter(
            {"filters": [{"field": "parent_transaction", "operator": "eq", "value": batch_id}]},
            "transactions",
        )
        assert found.status == 200, found.to_dict()
        assert len(found.data) == 3
        assert all(t["meta_data"]["settlement"] == "2026-03-01" for t in found.data)

    def test_unknown_bulk_id_is_404(self, blnk: Any) -> None:
        """A bulk id no transaction names answers 404 META_ENTITY_NOT_FOUND."""
        response = blnk.metadata.update(f"bulk_{uuid.uuid4()}", {"meta_data": {"a": 1}})
        assert response.status == 404
        assert response.error.code == "META_ENTITY_NOT_FOUND"
