"""Every combination of a transaction's paths, and what can follow it, over HTTP.

Goal: no combination of the flags that choose a transaction's path (`skip_queue`, `inflight`,
a future or past `scheduled_for`, `dry_run`) and of its shape (one source and destination, or
split legs on either side) is a 500, and none leaves the books out of balance, whatever is
then asked of it (commit, void, refund, each queued or not). Splits on the queued and
scheduled paths, and legs that round down to nothing, were all 500s until migrations 0114 and
0115; tests one feature at a time had not met them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kit.db import Database
from ledger.verification import verify
from tests.ledger.servers import UA

pytestmark = pytest.mark.db

SHAPES = ("plain", "destinations", "sources")
SCHEDULES = (None, "2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z")  # none, future, past
COMBINATIONS = list(itertools.product(SHAPES, [True, False], [True, False], SCHEDULES))


@pytest.fixture
async def http(ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ledger_url, headers=UA, timeout=30) as client:
        yield client


async def _balance(http: httpx.AsyncClient, funded: bool) -> str:
    created = await http.post(
        "/balances", json={"ledger_id": "general_ledger_id", "currency": "USD"}
    )
    balance_id: str = created.json()["balance_id"]
    if funded:
        response = await http.post(
            "/transactions",
            json={
                "precise_amount": 100_000,
                "precision": 100,
                "reference": f"fund-{uuid.uuid4()}",
                "currency": "USD",
                "source": "@WorldUSD",
                "destination": balance_id,
                "allow_overdraft": True,
                "skip_queue": True,
            },
        )
        assert response.status_code == 201, response.text
    return balance_id


async def _body(http: httpx.AsyncClient, shape: str) -> dict[str, Any]:
    a, b, c = await _balance(http, True), await _balance(http, True), await _balance(http, False)
    shapes: dict[str, dict[str, Any]] = {
        "plain": {"source": a, "destination": c},
        "destinations": {
            "source": a,
            "destinations": [
                {"identifier": b, "distribution": "33.33%"},
                {"identifier": c, "distribution": "left"},
            ],
        },
        "sources": {  # 1 % of 10.01 is a leg of 0.10; 0.01 % would round down to nothing
            "destination": c,
            "sources": [
                {"identifier": a, "distribution": "0.01%"},
                {"identifier": b, "distribution": "left"},
            ],
        },
    }
    ends = shapes[shape]
    return {
        "precise_amount": 1_001,
        "precision": 100,
        "reference": f"combo-{uuid.uuid4()}",
        "currency": "USD",
        "description": "combination",
        **ends,
    }


@pytest.mark.parametrize("combination", COMBINATIONS)
async def test_no_combination_fails_or_unbalances_the_books(
    http: httpx.AsyncClient, db: Database, combination: tuple[str, bool, bool, str | None]
) -> None:
    shape, skip_queue, inflight, scheduled_for = combination
    body = await _body(http, shape)
    body.update(skip_queue=skip_queue, inflight=inflight)
    if scheduled_for is not None:
        body["scheduled_for"] = scheduled_for
    preview = await http.post("/transactions", json={**body, "dry_run": True})
    assert preview.status_code == 200, preview.text
    posted = await http.post("/transactions", json=body)
    assert posted.status_code == 201, posted.text
    transaction_id = posted.json()["transaction_id"]
    answers = [await http.get(f"/transactions/{transaction_id}")]
    answers.extend(
        [
            await http.put(
                f"/transactions/inflight/{transaction_id}",
                json={"status": action, "skip_queue": not queued},
            )
            for action, queued in itertools.product(("commit", "void"), (False, True))
        ]
    )
    answers.extend(
        [
            await http.post(f"/refund-transaction/{transaction_id}", json={"skip_queue": not q})
            for q in (False, True)
        ]
    )
    assert all(a.status_code < 500 for a in answers), [(a.status_code, a.text) for a in answers]
    async with db.connection() as conn:
        report = await verify(conn)
    assert report.is_clean, report.findings[:3]
