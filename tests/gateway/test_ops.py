"""The Grafana dashboard and the Prometheus example stay in step with the metrics we export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.metrics import (
    HTTP_DURATION,
    HTTP_REQUESTS,
    RATE_LIMIT_EXCEEDED,
    RATE_LIMIT_UNAVAILABLE,
    SHARD_BATCH_SIZE,
    SHARD_QUEUE_DEPTH,
)

ROOT = Path(__file__).resolve().parents[2]
OURS = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    RATE_LIMIT_EXCEEDED,
    RATE_LIMIT_UNAVAILABLE,
    SHARD_QUEUE_DEPTH,
    SHARD_BATCH_SIZE,
)


def _expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads((ROOT / "ops/grafana/dwaybank.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]


class TestDashboard:
    def test_every_gateway_metric_is_charted(self) -> None:
        """Each metric the gateway registers appears in at least one panel."""
        text = "\n".join(_expressions())
        for name in OURS:
            assert name in text, name

    def test_only_known_metrics_are_queried(self) -> None:
        """Every series a panel reads is ours or Ray's (`ray_...`)."""
        known = {HTTP_DURATION + "_bucket", *OURS}
        for expr in _expressions():
            names = set(re.findall(r"\b([a-z_]+)(?=\{|\)|\s*\[| or )", expr))
            queried = {n for n in names if n.endswith(("_total", "_bucket", "_depth", "_size"))}
            queried |= {n for n in names if n.startswith("ray_")}
            unknown = {n for n in queried if n not in known and not n.startswith("ray_")}
            assert unknown == set(), expr

    def test_serve_panels_exist(self) -> None:
        """Ray Serve's own request, error, latency and queue series are on the dashboard."""
        text = "\n".join(_expressions())
        for name in (
            "ray_serve_num_http_requests_total",
            "ray_serve_num_http_error_requests_total",
            "ray_serve_http_request_latency_ms_bucket",
            "ray_serve_deployment_queued_queries",
        ):
            assert name in text, name


class TestPrometheus:
    def test_scrapes_ray_discovery_and_both_applications(self) -> None:
        """Ray's service-discovery file and the two ingress /metrics paths are scraped."""
        config: dict[str, Any] = yaml.safe_load(
            (ROOT / "ops/prometheus/prometheus.yml").read_text()
        )
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        files = jobs["ray"]["file_sd_configs"][0]["files"]
        assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
        assert jobs["dwaybank-api"]["metrics_path"] == "/metrics"
        assert jobs["dwaybank-ledger"]["metrics_path"] == "/ledger/metrics"
