"""Wiring of the ledger application: its dependencies from a replica's resources.

The ledger port is the sharded engine: named `LedgerShard` actors (created on first use,
detached, restarted by Ray) behind a `ShardedLedger` that coalesces this replica's calls per
shard. The shards' reachability joins the readiness checks.
"""

from __future__ import annotations

from typing import Any, Final

import httpx
from fastapi import APIRouter

from actors.ledger_shard import ShardConfig, ShardedLedger, start_shards
from deployments.resources import Resources
from gateway.health import DependencyCheck
from kit.clock import SystemClock
from kit.errors import ConfigurationError
from ledger.endpoints import LedgerDeps, build_routers

HTTP_CONNECTIONS_MAX: Final = 50  # outbound calls (hooks, webhooks, rate providers) per replica


async def ledger_dependencies(resources: Resources) -> LedgerDeps:
    """The sharded ledger port and everything the ledger routes use."""
    settings = resources.settings
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL must be set for the ledger")
    handles = start_shards(
        settings.ledger_shard_count,
        ShardConfig(
            database_url=settings.database_url.get_secret_value(),
            pool_max_size=settings.ledger_shard_pool_size,
            batch_items_max=settings.ledger_batch_items_max,
        ),
    )
    port = ShardedLedger(handles)

    async def shards_probe() -> dict[str, Any]:
        stats = await port.stats()
        return {"shards": len(stats), "queue_depth": sum(s["queue_depth"] for s in stats)}

    resources.extra_checks.append(DependencyCheck("ledger_shards", shards_probe))
    http = httpx.AsyncClient(
        timeout=settings.ledger_http_timeout_s,
        limits=httpx.Limits(max_connections=HTTP_CONNECTIONS_MAX),
    )
    resources.closers.append(http.aclose)
    return LedgerDeps(
        db=resources.db,
        port=port,
        clock=SystemClock(),
        cipher=resources.cipher,
        master_key=settings.ledger_master_key,
        http=http,
    )


async def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Blnk's API over the sharded group-commit engine."""
    return build_routers(await ledger_dependencies(resources))
