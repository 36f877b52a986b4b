"""Locust scenarios. Run headless through `python -m loadtests`, or with locust's web UI:
`locust -f loadtests/locustfile.py --host http://127.0.0.1:8000`.

The mix: wallets moving money through the ledger (`ledger_flows.LedgerCustomer`) and a
monitoring system probing health. The identity scenario (`auth_flows.py`) runs on its own: the
per-address sign-up and login limits would turn most of its requests into 429s here.
"""

from __future__ import annotations

from locust import FastHttpUser, between, task

from loadtests.ledger_flows import LedgerCustomer

__all__ = ["HealthProbe", "LedgerCustomer"]


class HealthProbe(FastHttpUser):
    """What a load balancer and a monitoring system do: liveness often, readiness sometimes."""

    weight = 1  # against LedgerCustomer's 8
    wait_time = between(0, 0.01)

    @task(10)
    def live(self) -> None:
        self.client.get("/health/live", name="/health/live")

    @task(1)
    def ready(self) -> None:
        self.client.get("/health/ready", name="/health/ready")

    @task(1)
    def ledger_ready(self) -> None:
        self.client.get("/ledger/health/ready", name="/ledger/health/ready")
