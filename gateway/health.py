"""Liveness and readiness.

`/health/live` answers 200 while the process serves requests; it checks nothing else, so a
database outage never makes the orchestrator kill healthy replicas. `/health/ready` runs every
dependency check concurrently, each under its own timeout, and answers 200 only when all
critical ones pass (503 otherwise), with one JSON entry per dependency: status, latency and, on
failure, a short reason that never includes credentials.

Besides the dependencies the wiring passes (PostgreSQL, Redis, Ray, shard actors, and the
external providers' checks) every ingress reports the node's memory and CPU (psutil), each
critical or report-only as the policy says.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psutil

from gateway.errors import SystemPressureError
from gateway.policy import HealthPolicy
from kit.errors import AppError

CHECK_TIMEOUT_S: Final = 2.0  # a dependency slower than this is not ready
REASON_LENGTH_MAX: Final = 200


@dataclass(frozen=True, slots=True)
class DependencyCheck:
    """A named probe; raising (or timing out) means the dependency is down."""

    name: str
    probe: Callable[[], Awaitable[dict[str, Any] | None]]
    is_critical: bool = True
    timeout_s: float = CHECK_TIMEOUT_S


async def _run(check: DependencyCheck) -> dict[str, Any]:
    started = time.perf_counter()
    extra: dict[str, Any] | None = None
    reason: str | None = None
    try:
        async with asyncio.timeout(check.timeout_s):
            extra = await check.probe()
    except TimeoutError:
        reason = f"no answer within {check.timeout_s:g}s"
    except SystemPressureError as exc:
        reason, extra = exc.code, exc.details  # the figures, to see how far over the limit
    except AppError as exc:
        reason = exc.code
    except Exception as exc:  # noqa: BLE001 - a probe failing in any way means "down"
        reason = type(exc).__name__
    status = "up" if reason is None else "down"
    entry: dict[str, Any] = {
        "status": status,
        "critical": check.is_critical,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if reason is not None:
        entry["reason"] = reason[:REASON_LENGTH_MAX]
    if extra:
        entry.update(extra)
    return entry


async def readiness(checks: Sequence[DependencyCheck]) -> tuple[int, dict[str, Any]]:
    """Run every check; (200 or 503, the report)."""
    results = await asyncio.gather(*(_run(check) for check in checks))
    report = {check.name: result for check, result in zip(checks, results, strict=True)}
    is_ready = all(r["status"] == "up" for r in report.values() if r["critical"])
    return (200 if is_ready else 503), {
        "status": "ready" if is_ready else "unavailable",
        "checks": report,
    }


def _memory_probe(percent_max: float) -> Callable[[], Awaitable[dict[str, Any]]]:
    def measure() -> dict[str, Any]:
        memory = psutil.virtual_memory()
        return {
            "percent": memory.percent,
            "available_bytes": memory.available,
            "process_rss_bytes": psutil.Process().memory_info().rss,
        }

    async def probe() -> dict[str, Any]:
        figures = await asyncio.to_thread(measure)
        if figures["percent"] > percent_max:
            raise SystemPressureError("memory above its readiness limit", **figures)
        return figures

    return probe


def _cpu_probe(percent_max: float) -> Callable[[], Awaitable[dict[str, Any]]]:
    def measure() -> dict[str, Any]:
        # Utilisation since the previous call (non-blocking); the first call reads 0.
        return {"percent": psutil.cpu_percent(interval=None), "load_1m": os.getloadavg()[0]}

    async def probe() -> dict[str, Any]:
        figures = await asyncio.to_thread(measure)
        if figures["percent"] > percent_max:
            raise SystemPressureError("CPU above its readiness limit", **figures)
        return figures

    return probe


def system_checks(policy: HealthPolicy) -> list[DependencyCheck]:
    """The node's memory and CPU as readiness checks."""
    return [
        DependencyCheck(
            "memory",
            _memory_probe(policy.memory_percent_max),
            is_critical=policy.is_memory_critical,
        ),
        DependencyCheck(
            "cpu", _cpu_probe(policy.cpu_percent_max), is_critical=policy.is_cpu_critical
        ),
    ]
