"""The gateway's Prometheus metrics, registered once per process through `kit.metrics`.

Names and labels are part of the dashboard's contract (`ops/grafana/dwaybank.json`):

| Metric | Type | Labels |
|---|---|---|
| `http_requests_total` | counter | service, route (template), method, status |
| `http_request_duration_seconds` | histogram | service, route, method |
| `rate_limit_exceeded_total` | counter | service, route, tier, window |
| `rate_limit_unavailable_total` | counter | service, route, outcome (fail_open / fail_closed) |
| `shard_queue_depth` | gauge | kind (ledger / user), shard |
| `shard_batch_size` | gauge | kind, shard |

The two shard gauges are registered here so that the dashboard and the exposition have them from
the start; the shard areas set them with `kit.metrics.gauge(SHARD_QUEUE_DEPTH, ...)` using the
same name, help and labels (get-or-create returns this very object in the same process).

The two series every request updates are kept by `RequestMetrics`, a collector of their own:
a request adds to two plain numbers and one bucket under one lock, and the exposition is built
when Prometheus scrapes. Through prometheus_client's `Counter` and `Histogram` the same two
updates cost ~14,000 instructions a request (a lock and validation per value, the buckets
walked in Python); the exposition is the same text, `_created` series included.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from kit.errors import InvariantError
from kit.metrics import collector, counter, gauge

HTTP_REQUESTS: Final = "http_requests_total"
HTTP_DURATION: Final = "http_request_duration_seconds"
RATE_LIMIT_EXCEEDED: Final = "rate_limit_exceeded_total"
RATE_LIMIT_UNAVAILABLE: Final = "rate_limit_unavailable_total"
SHARD_QUEUE_DEPTH: Final = "shard_queue_depth"
SHARD_BATCH_SIZE: Final = "shard_batch_size"
SHARD_LABELS: Final = ("kind", "shard")
SHARD_QUEUE_DEPTH_HELP: Final = "Items waiting in a shard's mailbox"
SHARD_BATCH_SIZE_HELP: Final = "Items in the last batch a shard applied"
HTTP_REQUESTS_HELP: Final = "HTTP requests answered"
HTTP_DURATION_HELP: Final = (
    "Time from the request reaching the edge to the last byte of the response"
)
REQUEST_LABELS: Final = ("service", "route", "method", "status")
DURATION_LABELS: Final = ("service", "route", "method")
# Label sets of the two request series (route templates x methods x statuses, bounded by the
# route table); beyond this a new set is counted under the `overflow` route instead.
REQUEST_SERIES_MAX: Final = 10_000
OVERFLOW_ROUTE: Final = "overflow"


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()


class _Durations:
    __slots__ = ("buckets", "created", "total_s")

    def __init__(self, bucket_count: int) -> None:
        self.buckets = [0] * bucket_count  # per bucket, not cumulative; the last is +Inf
        self.total_s = 0.0
        self.created = time.time()


class RequestSeries:
    """The two cells one (service, route, method, status) updates: resolve once, record often."""

    __slots__ = ("count", "durations")

    def __init__(self, count: _Count, durations: _Durations) -> None:
        self.count = count
        self.durations = durations


class RequestMetrics:
    """`http_requests_total` and `http_request_duration_seconds`, one per process."""

    def __init__(self, buckets_s: Sequence[float], *, series_max: int = REQUEST_SERIES_MAX) -> None:
        bounds = tuple(float(b) for b in buckets_s if b != float("inf"))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise InvariantError("latency buckets must be distinct and increasing")
        self.bounds = bounds
        # The `le` label of each bucket, written as prometheus_client writes it.
        self._bucket_names = [
            *(floatToGoString(b) for b in bounds),  # type: ignore[no-untyped-call]
            "+Inf",
        ]
        self._series_max = series_max
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, str], _Count] = {}
        self._durations: dict[tuple[str, str, str], _Durations] = {}

    def series(self, service: str, route: str, method: str, status: int) -> RequestSeries:
        """The cells of one label set (created on first use)."""
        with self._lock:
            key = (service, route, method, str(status))
            if key not in self._counts and len(self._counts) >= self._series_max:
                key = (service, OVERFLOW_ROUTE, method, key[3])
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = _Count()
            durations = self._durations.get(key[:3])
            if durations is None:
                durations = self._durations[key[:3]] = _Durations(len(self.bounds) + 1)
            return RequestSeries(count, durations)

    def record(self, series: RequestSeries, elapsed_s: float) -> None:
        """Count one answer and its latency."""
        durations = series.durations
        index = bisect_left(self.bounds, elapsed_s)  # buckets are `le`: the first bound >= it
        lock = self._lock
        lock.acquire()  # not `with`: its protocol calls cost a quarter of this method
        try:
            series.count.value += 1
            durations.buckets[index] += 1
            durations.total_s += elapsed_s
        finally:
            lock.release()

    def describe(self) -> Iterator[Metric]:
        """The two families, without samples (the registry checks names on registration)."""
        yield CounterMetricFamily(HTTP_REQUESTS, HTTP_REQUESTS_HELP, labels=REQUEST_LABELS)
        yield HistogramMetricFamily(HTTP_DURATION, HTTP_DURATION_HELP, labels=DURATION_LABELS)

    def collect(self) -> Iterator[Metric]:
        """Both families as prometheus_client's own `Counter` and `Histogram` expose them."""
        with self._lock:
            counts = [(k, c.value, c.created) for k, c in self._counts.items()]
            durations = [
                (k, list(d.buckets), d.total_s, d.created) for k, d in self._durations.items()
            ]
        requests = CounterMetricFamily(HTTP_REQUESTS, HTTP_REQUESTS_HELP, labels=REQUEST_LABELS)
        for labels, value, created in counts:
            requests.add_metric(labels, float(value), created=created)
        yield requests
        histogram = HistogramMetricFamily(HTTP_DURATION, HTTP_DURATION_HELP, labels=DURATION_LABELS)
        for series_labels, buckets, total_s, created in durations:
            cumulative: list[tuple[str, float]] = []
            running = 0
            for name, count in zip(self._bucket_names, buckets, strict=True):
                running += count
                cumulative.append((name, float(running)))
            histogram.add_metric(series_labels, cumulative, total_s)
            histogram.samples.append(
                Sample(
                    HTTP_DURATION + "_created",
                    dict(zip(DURATION_LABELS, series_labels, strict=True)),
                    created,
                )
            )
        yield histogram


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The metric objects the edge updates."""

    requests: RequestMetrics
    rate_limit_exceeded: Counter
    rate_limit_unavailable: Counter
    shard_queue_depth: Gauge
    shard_batch_size: Gauge


def gateway_metrics(latency_buckets_s: Sequence[float]) -> GatewayMetrics:
    """The gateway's metrics (created on first call, the same objects afterwards: the first
    call's latency buckets are the process's)."""
    return GatewayMetrics(
        requests=collector(
            HTTP_REQUESTS, RequestMetrics, lambda: RequestMetrics(latency_buckets_s)
        ),
        rate_limit_exceeded=counter(
            RATE_LIMIT_EXCEEDED,
            "Requests refused by a rate-limit window",
            ("service", "route", "tier", "window"),
        ),
        rate_limit_unavailable=counter(
            RATE_LIMIT_UNAVAILABLE,
            "Requests decided without the rate limiter because it did not answer",
            ("service", "route", "outcome"),
        ),
        shard_queue_depth=gauge(SHARD_QUEUE_DEPTH, SHARD_QUEUE_DEPTH_HELP, SHARD_LABELS),
        shard_batch_size=gauge(SHARD_BATCH_SIZE, SHARD_BATCH_SIZE_HELP, SHARD_LABELS),
    )
