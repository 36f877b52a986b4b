"""Locust scenario for the ledger: what a wallet backend does through Blnk's API under `/ledger`.

Each simulated customer opens `BALANCES_PER_USER` USD balances, funds each from `@World`, then
loops: transfers between its own balances (most often), reads a balance, looks a transfer up by
its reference, and now and then places a hold (an inflight transaction) and commits it. Every
write carries a fresh reference, so a retry could never post twice. Transfers are small against
the funding, so the balances never run dry and every answer is expected to be a 2xx: anything
else is a failure in locust's report.

    locust -f loadtests/ledger_flows.py --headless --host http://127.0.0.1:8000 -u 32 -r 32 -t 30s
"""

from __future__ import annotations

import random
import uuid
from typing import Any, Final

from locust import FastHttpUser, between, task

LEDGER_ID: Final = "general_ledger_id"  # the ledger every installation starts with
BALANCES_PER_USER: Final = 5
FUNDING_UNITS: Final = 100_000_000  # minor units per balance, far above what a run moves
TRANSFER_UNITS_MAX: Final = 1_000
PRECISION: Final = 100


class LedgerCustomer(FastHttpUser):
    """A wallet moving money between its own balances."""

    weight = 8
    wait_time = between(0, 0.05)

    def on_start(self) -> None:
        self.balances: list[str] = []
        self.references: list[str] = []
        for _ in range(BALANCES_PER_USER):
            response = self.client.post(
                "/ledger/balances",
                json={"ledger_id": LEDGER_ID, "currency": "USD"},
                name="/ledger/balances [create]",
            )
            balance_id = response.json().get("balance_id") if response.status_code == 201 else None
            if balance_id:
                self.balances.append(balance_id)
                self._post(
                    {"source": "@World", "destination": balance_id, "allow_overdraft": True},
                    FUNDING_UNITS,
                    name="/ledger/transactions [fund]",
                )

    def _post(self, legs: dict[str, Any], units: int, *, name: str) -> dict[str, Any] | None:
        reference = f"load-{uuid.uuid4()}"
        body = {
            "precise_amount": units,
            "precision": PRECISION,
            "currency": "USD",
            "reference": reference,
            "description": "load test",
            "skip_queue": True,
            **legs,
        }
        response = self.client.post("/ledger/transactions", json=body, name=name)
        if response.status_code != 201:
            return None
        self.references.append(reference)
        del self.references[:-100]  # remember the recent ones only
        answer: dict[str, Any] = response.json()
        return answer

    def _pair(self) -> tuple[str, str]:
        source, destination = random.sample(self.balances, 2)
        return source, destination

    @task(10)
    def transfer(self) -> None:
        if len(self.balances) < 2:
            return
        source, destination = self._pair()
        units = random.randint(1, TRANSFER_UNITS_MAX)
        self._post(
            {"source": source, "destination": destination},
            units,
            name="/ledger/transactions [transfer]",
        )

    @task(3)
    def read_balance(self) -> None:
        if self.balances:
            balance_id = random.choice(self.balances)
            self.client.get(f"/ledger/balances/{balance_id}", name="/ledger/balances/{id}")

    @task(1)
    def find_by_reference(self) -> None:
        if self.references:
            reference = random.choice(self.references)
            self.client.get(
                f"/ledger/transactions/reference/{reference}",
                name="/ledger/transactions/reference/{reference}",
            )

    @task(1)
    def hold_and_commit(self) -> None:
        if len(self.balances) < 2:
            return
        source, destination = self._pair()
        hold = self._post(
            {"source": source, "destination": destination, "inflight": True},
            random.randint(1, TRANSFER_UNITS_MAX),
            name="/ledger/transactions [hold]",
        )
        if hold is not None:
            self.client.put(
                f"/ledger/transactions/inflight/{hold['transaction_id']}",
                json={"status": "commit"},
                name="/ledger/transactions/inflight/{id} [commit]",
            )
