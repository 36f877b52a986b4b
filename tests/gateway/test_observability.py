"""Metrics and the audit line over real HTTP: route templates, counts, decisions, no secrets."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from gateway.policy import GatewayPolicy, MetricsPolicy
from kit.telemetry import JsonFormatter

SERVICE = "observed"
AUDIT_WAIT_S = 10.0


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app(service=SERVICE))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


class _Lines(logging.Handler):
    """Audit lines as the JSON formatter writes them, collected from the server's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, object]] = []
        self.setFormatter(JsonFormatter())
        self._arrived = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._arrived:
            self.lines.append(json.loads(self.format(record)))
            self._arrived.notify_all()

    def for_request(self, request_id: str) -> list[dict[str, object]]:
        """The lines of one request, once written (the line follows the response's last byte)."""

        def found() -> list[dict[str, object]]:
            return [x for x in self.lines if x.get("request_id") == request_id]

        with self._arrived:
            self._arrived.wait_for(found, timeout=AUDIT_WAIT_S)
            return found()


@pytest.fixture
def audit() -> Iterator[_Lines]:
    """The audit lines written while the test runs."""
    logger = logging.getLogger("dwaybank.audit")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _count(text: str, route: str, method: str, status: int) -> float:
    line = (
        f'http_requests_total{{method="{method}",route="{route}",'
        f'service="{SERVICE}",status="{status}"}} '
    )
    found = [x for x in text.splitlines() if x.startswith(line)]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


class TestMetrics:
    def test_requests_are_counted_by_route_template(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """Two wallets by id are one series, labelled with the template, not the raw path."""
        token = {"Authorization": f"Bearer {mint()}"}
        template = "/api/v1/wallets/{wallet_id}"
        before = _count(http.get("/metrics").text, template, "GET", 200)
        http.get("/api/v1/wallets/w-1", headers=token)
        http.get("/api/v1/wallets/w-2", headers=token)
        text = http.get("/metrics").text
        assert _count(text, template, "GET", 200) == before + 2
        assert "/api/v1/wallets/w-1" not in text

    def test_refusals_and_unmatched_paths_are_counted(self, http: httpx.Client) -> None:
        """A 401 counts under its route; every unknown path shares the `unmatched` label."""
        before = http.get("/metrics").text
        http.get("/api/v1/me")
        http.get(f"/probe/{uuid.uuid4()}")
        after = http.get("/metrics").text
        assert (
            _count(after, "/api/v1/me", "GET", 401) == _count(before, "/api/v1/me", "GET", 401) + 1
        )
        assert _count(after, "unmatched", "GET", 404) == _count(before, "unmatched", "GET", 404) + 1

    def test_latency_histogram_has_the_seed_buckets(self, http: httpx.Client) -> None:
        """http_request_duration_seconds keeps every seed boundary (plus finer ones below 0.1 s)."""
        http.get("/health/live")
        text = http.get("/metrics").text
        prefix = (
            'http_request_duration_seconds_bucket{le="%s",method="GET",route="/health/live",'
            f'service="{SERVICE}"}}'
        )
        for bound in ("0.1", "0.3", "0.5", "0.7", "1.0", "3.0", "5.0", "7.0", "10.0", "0.001"):
            assert any(line.startswith(prefix % bound) for line in text.splitlines()), bound

    def test_rate_limit_and_shard_metrics_are_registered(self, http: httpx.Client) -> None:
        """The dashboard's other series exist from the start, before anything sets them."""
        text = http.get("/metrics").text
        for name in (
            "rate_limit_exceeded_total",
            "rate_limit_unavailable_total",
            "shard_queue_depth",
            "shard_batch_size",
        ):
            assert f"# TYPE {name} " in text, name

    @pytest.mark.parametrize("is_on", [False, True])
    def test_fastapi_opentelemetry_follows_the_policy(
        self, edge_app: Callable[..., FastAPI], is_on: bool
    ) -> None:
        """FastAPI's own OpenTelemetry instrumentation is off unless `metrics.opentelemetry`
        turns it on (FastAPI keeps its configuration on the app; it has no public reader)."""
        policy = GatewayPolicy(metrics=MetricsPolicy(opentelemetry=is_on))
        config = edge_app(policy=policy)._telemetry
        assert (config["tracing"], config["metrics"], config["logs"]) == (is_on, is_on, is_on)


class TestAudit:
    def test_one_line_per_request_without_secrets(
        self, http: httpx.Client, mint: Callable[..., str], audit: _Lines
    ) -> None:
        """An authenticated request writes one line with who, where, what and how it went."""
        user_id = uuid.uuid4()
        token = mint(user_id=user_id)
        response = http.get(
            "/api/v1/me",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "audit-req-0001"},
        )
        assert response.status_code == 200
        [line] = audit.for_request("audit-req-0001")
        assert line["message"] == "request"
        assert line["ts"]
        assert line["service"] == SERVICE
        assert line["user_id"] == str(user_id)
        assert line["ip"] == "127.0.0.1"
        assert (line["method"], line["route"], line["status"]) == ("GET", "/api/v1/me", 200)
        assert isinstance(line["latency_ms"], float)
        assert line["decision"] == "allow"
        assert token not in json.dumps(line)
        assert token.split(".")[2] not in json.dumps(audit.lines)

    @pytest.mark.parametrize(
        ("path", "headers", "decision"),
        [
            ("/api/v1/me", {}, "deny_token_missing"),
            ("/api/v1/me", {"Authorization": "Bearer not.a.token"}, "deny_token_invalid"),
            ("/api/v1/wallets/balance", {"User-Agent": "nikto"}, "deny_user_agent"),
            ("/api/v1/admin/users", {}, "deny_address"),
        ],
    )
    def test_refusals_name_the_decision(
        self, http: httpx.Client, audit: _Lines, path: str, headers: dict[str, str], decision: str
    ) -> None:
        """Each refusal's line says which policy decided."""
        request_id = f"audit-{uuid.uuid4()}"
        http.get(path, headers={**headers, "X-Request-ID": request_id})
        [line] = audit.for_request(request_id)
        assert line["decision"] == decision
        assert line["user_id"] is None

    def test_crash_is_audited_as_error(
        self, http: httpx.Client, mint: Callable[..., str], audit: _Lines
    ) -> None:
        """A 500 from a crashing handler is audited with the `error` decision."""
        request_id = f"audit-{uuid.uuid4()}"
        http.get(
            "/api/v1/crash",
            headers={"Authorization": f"Bearer {mint()}", "X-Request-ID": request_id},
        )
        [line] = audit.for_request(request_id)
        assert (line["status"], line["decision"]) == (500, "error")
