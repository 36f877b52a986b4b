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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from kit.metrics import counter, gauge, histogram

HTTP_REQUESTS: Final = "http_requests_total"
HTTP_DURATION: Final = "http_request_duration_seconds"
RATE_LIMIT_EXCEEDED: Final = "rate_limit_exceeded_total"
RATE_LIMIT_UNAVAILABLE: Final = "rate_limit_unavailable_total"
SHARD_QUEUE_DEPTH: Final = "shard_queue_depth"
SHARD_BATCH_SIZE: Final = "shard_batch_size"
SHARD_LABELS: Final = ("kind", "shard")
SHARD_QUEUE_DEPTH_HELP: Final = "Items waiting in a shard's mailbox"
SHARD_BATCH_SIZE_HELP: Final = "Items in the last batch a shard applied"


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The metric objects the edge updates."""

    requests: Counter
    duration: Histogram
    rate_limit_exceeded: Counter
    rate_limit_unavailable: Counter
    shard_queue_depth: Gauge
    shard_batch_size: Gauge


def gateway_metrics(latency_buckets_s: Sequence[float]) -> GatewayMetrics:
    """The gateway's metrics (created on first call, the same objects afterwards)."""
    return GatewayMetrics(
        requests=counter(
            HTTP_REQUESTS, "HTTP requests answered", ("service", "route", "method", "status")
        ),
        duration=histogram(
            HTTP_DURATION,
            "Time from the request reaching the edge to the last byte of the response",
            ("service", "route", "method"),
            buckets=latency_buckets_s,
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
