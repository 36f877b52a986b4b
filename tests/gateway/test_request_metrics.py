"""The request series' own collector: the same exposition as prometheus_client's metrics."""

from __future__ import annotations

import re
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import (
    DURATION_LABELS,
    HTTP_DURATION,
    HTTP_DURATION_HELP,
    HTTP_REQUESTS,
    HTTP_REQUESTS_HELP,
    OVERFLOW_ROUTE,
    REQUEST_LABELS,
    RequestMetrics,
)
from kit.errors import InvariantError

BUCKETS_S: Final = (0.001, 0.005, 0.025, 0.1, 1.0, 10.0)
_CREATED = re.compile(r"^(\S+_created\{.*\}) \S+$", re.MULTILINE)

records = st.lists(
    st.tuples(
        st.sampled_from(["api", "ledger"]),
        st.sampled_from(["/api/v1/me", "/api/v1/wallets/{wallet_id}", "unmatched"]),
        st.sampled_from(["GET", "POST", "OTHER"]),
        st.sampled_from([200, 201, 401, 404, 429, 500]),
        # Exact bounds, in between and beyond the last: `le` puts a bound's own value in it.
        st.one_of(st.sampled_from(BUCKETS_S), st.floats(0, 30, allow_nan=False)),
    ),
    max_size=60,
)


def _exposition(registry: CollectorRegistry) -> str:
    """The text a scrape reads, with the creation times (set at first use) masked."""
    return _CREATED.sub(r"\1 T", generate_latest(registry).decode())


def _scrape(metrics: RequestMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    return _exposition(registry)


class TestRequestMetrics:
    @settings(max_examples=60, deadline=None)
    @given(records)
    def test_exposition_is_prometheus_clients(
        self, recorded: list[tuple[str, str, str, int, float]]
    ) -> None:
        """Whatever is recorded, a scrape reads what prometheus_client's own `Counter` and
        `Histogram` would expose for the same answers (bucket counts, sums, series order)."""
        reference = CollectorRegistry()
        requests = Counter(HTTP_REQUESTS, HTTP_REQUESTS_HELP, REQUEST_LABELS, registry=reference)
        durations = Histogram(
            HTTP_DURATION,
            HTTP_DURATION_HELP,
            DURATION_LABELS,
            buckets=BUCKETS_S,
            registry=reference,
        )
        metrics = RequestMetrics(BUCKETS_S)
        for service, route, method, status, elapsed_s in recorded:
            requests.labels(service, route, method, str(status)).inc()
            durations.labels(service, route, method).observe(elapsed_s)
            metrics.record(metrics.series(service, route, method, status), elapsed_s)
        assert _scrape(metrics) == _exposition(reference)

    def test_a_series_keeps_counting(self) -> None:
        metrics = RequestMetrics(BUCKETS_S)
        series = metrics.series("api", "/api/v1/me", "GET", 200)
        for elapsed_s in (0.0005, 0.001, 0.002, 20.0):
            metrics.record(series, elapsed_s)
        assert metrics.series("api", "/api/v1/me", "GET", 200).count is series.count
        text = _scrape(metrics)
        labels = 'method="GET",route="/api/v1/me",service="api"'
        assert f'http_requests_total{{{labels},status="200"}} 4.0' in text
        assert f'http_request_duration_seconds_bucket{{le="0.001",{labels}}} 2.0' in text
        assert f'http_request_duration_seconds_bucket{{le="10.0",{labels}}} 3.0' in text
        assert f'http_request_duration_seconds_bucket{{le="+Inf",{labels}}} 4.0' in text
        assert f"http_request_duration_seconds_sum{{{labels}}} 20.0035" in text

    def test_label_sets_beyond_the_bound_share_the_overflow_route(self) -> None:
        metrics = RequestMetrics(BUCKETS_S, series_max=2)
        for route in ("/a", "/b", "/c", "/d"):
            metrics.record(metrics.series("api", route, "GET", 200), 0.01)
        metrics.record(metrics.series("api", "/a", "GET", 200), 0.01)  # known: its own series
        text = _scrape(metrics)
        assert 'http_requests_total{method="GET",route="/a",service="api",status="200"} 2.0' in text
        overflow = f'route="{OVERFLOW_ROUTE}",service="api",status="200"'
        assert f'http_requests_total{{method="GET",{overflow}}} 2.0' in text
        assert 'route="/c"' not in text

    @pytest.mark.parametrize("buckets", [(), (0.1, 0.05), (0.1, 0.1), (float("inf"),)])
    def test_buckets_must_increase(self, buckets: tuple[float, ...]) -> None:
        with pytest.raises(InvariantError):
            RequestMetrics(buckets)
