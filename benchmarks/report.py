"""Timing helpers and the printed table shared by every benchmark."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server to start on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Result:
    """One measured line: a rate and, when calls were timed one by one, latency percentiles."""

    name: str
    unit: str
    rate_per_s: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""


def percentiles(samples_s: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds."""
    if len(samples_s) < 2:
        only = samples_s[0] * 1000 if samples_s else 0.0
        return only, only, only
    cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def time_sync(
    name: str,
    unit: str,
    call: Callable[[], object],
    *,
    duration_s: float = 0.0,
    calls: int = 0,
    per_call: int = 1,
) -> Result:
    """Call `call` repeatedly for `duration_s`, or `calls` times, timing each call."""
    samples: list[float] = []
    deadline = time.perf_counter() + duration_s
    while (len(samples) < calls) if calls else (time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    total = sum(samples)
    p50, p95, p99 = percentiles(samples)
    return Result(name, unit, len(samples) * per_call / total, p50, p95, p99)


async def time_async(
    name: str,
    unit: str,
    call: Callable[[], Awaitable[object]],
    *,
    duration_s: float,
    per_call: int = 1,
    note: str = "",
) -> Result:
    """Await `call` repeatedly (one at a time) for `duration_s`, timing each call."""
    samples: list[float] = []
    deadline = time.perf_counter() + duration_s
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    total = sum(samples)
    p50, p95, p99 = percentiles(samples)
    return Result(name, unit, len(samples) * per_call / total, p50, p95, p99, note)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:8.3f}"


def print_table(title: str, results: list[Result]) -> None:
    """Print results as an aligned table."""
    print(f"\n{title}")
    header = f"  {'measurement':<60} {'rate':>14}  {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        rate = f"{r.rate_per_s:,.0f} {r.unit}/s"
        line = f"  {r.name:<60} {rate:>14}  {_ms(r.p50_ms)} {_ms(r.p95_ms)} {_ms(r.p99_ms)}"
        print(line + (f"  ({r.note})" if r.note else ""))
