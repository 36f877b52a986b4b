"""Prometheus helpers: one registry per process, get-or-create metric constructors.

Ray may import a module more than once in a worker (redeploys, reloads); creating a metric twice
on one registry raises, so every metric is made through `counter` / `gauge` / `histogram`, which
return the existing object when the name is already registered with the same labels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Final, TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from kit.errors import InvariantError

REGISTRY: Final = CollectorRegistry(auto_describe=True)
# The seed's latency buckets (Task 3.5), in seconds.
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_made: dict[str, MetricWrapperBase] = {}
_collectors: dict[str, Collector] = {}
_M = TypeVar("_M", bound=MetricWrapperBase)
_C = TypeVar("_C", bound=Collector)


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    """The counter `name`, created on first use."""
    with _lock:
        existing = _made.get(name)
        if existing is None:
            existing = Counter(name, documentation, labelnames, registry=REGISTRY)
            _made[name] = existing
    return _checked(existing, Counter, name, labelnames)


def gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
    """The gauge `name`, created on first use."""
    with _lock:
        existing = _made.get(name)
        if existing is None:
            existing = Gauge(name, documentation, labelnames, registry=REGISTRY)
            _made[name] = existing
    return _checked(existing, Gauge, name, labelnames)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS_S,
) -> Histogram:
    """The histogram `name`, created on first use."""
    with _lock:
        existing = _made.get(name)
        if existing is None:
            existing = Histogram(
                name, documentation, labelnames, buckets=buckets, registry=REGISTRY
            )
            _made[name] = existing
    return _checked(existing, Histogram, name, labelnames)


def collector(name: str, kind: type[_C], make: Callable[[], _C]) -> _C:
    """The custom collector registered as `name`, made by `make` and registered on first use
    (for metrics recorded without prometheus_client's per-call machinery)."""
    with _lock:
        existing = _collectors.get(name)
        if existing is None:
            existing = make()
            REGISTRY.register(existing)
            _collectors[name] = existing
    if isinstance(existing, kind):
        return existing
    # The same class from a module imported again (a reload) is the same kind: the registered
    # instance keeps the series counted so far.
    made = type(existing)
    if (made.__module__, made.__qualname__) != (kind.__module__, kind.__qualname__):
        raise InvariantError(
            "a collector name is registered twice with different kinds", metric=name
        )
    return cast(_C, existing)


def _checked(metric: MetricWrapperBase, kind: type[_M], name: str, labelnames: Sequence[str]) -> _M:
    if not isinstance(metric, kind) or tuple(metric._labelnames) != tuple(labelnames):
        raise InvariantError("a metric name is registered twice with different shapes", metric=name)
    return metric


def render_latest() -> tuple[bytes, str]:
    """The exposition text of every metric of this process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
