"""Readiness with the node's memory and CPU and the external providers' checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.app import create_app
from gateway.health import DependencyCheck
from gateway.policy import GatewayPolicy, HealthPolicy
from kit.errors import ProviderUnavailableError


async def _up() -> None:
    return None


async def _kyc_down() -> dict[str, Any]:
    raise ProviderUnavailableError("Jumio answered 502 at https://user:secret@netverify.example")


def _ready(serve: Callable[[FastAPI], str], app: FastAPI) -> httpx.Response:
    with httpx.Client(base_url=serve(app), timeout=30) as http:
        return http.get("/health/ready")


class TestNodeChecks:
    def test_memory_and_cpu_are_reported(self, serve: Callable[[FastAPI], str]) -> None:
        """Every ingress reports the node's memory and CPU, report-only by default."""
        app = create_app(title="t", version="1", checks=lambda: [DependencyCheck("db", _up)])
        response = _ready(serve, app)
        assert response.status_code == 200
        checks = response.json()["checks"]
        assert checks["memory"]["status"] == "up"
        assert checks["memory"]["critical"] is False
        assert 0 < checks["memory"]["percent"] <= 100
        assert checks["memory"]["process_rss_bytes"] > 0
        assert {"percent", "load_1m"} <= set(checks["cpu"])

    def test_critical_memory_over_its_limit_is_503(self, serve: Callable[[FastAPI], str]) -> None:
        """Marked critical with a limit the node exceeds, memory turns readiness to 503."""
        policy = GatewayPolicy(
            health=HealthPolicy(memory_percent_max=0.01, is_memory_critical=True)
        )
        app = create_app(title="t", version="1", checks=list, policy=policy)
        response = _ready(serve, app)
        assert response.status_code == 503
        memory = response.json()["checks"]["memory"]
        assert memory["status"] == "down"
        assert memory["reason"] == "GW_SYSTEM_PRESSURE"
        assert memory["percent"] > 0.01


class TestProviderChecks:
    def test_provider_checks_appear_without_leaking(self, serve: Callable[[FastAPI], str]) -> None:
        """A failing provider is reported by code; its URL and credentials stay in the logs."""
        app = create_app(
            title="t",
            version="1",
            checks=list,
            provider_checks=[DependencyCheck("kyc.jumio", _kyc_down, is_critical=False)],
        )
        response = _ready(serve, app)
        assert response.status_code == 200
        assert response.json()["checks"]["kyc.jumio"]["reason"] == "GEN_PROVIDER_UNAVAILABLE"
        assert "secret" not in response.text
