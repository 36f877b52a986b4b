"""Wiring of the ledger application: its dependencies from a replica's resources.

Embedded ledger (the default): the port is the sharded engine, named `LedgerShard` actors
(created on first use, detached, restarted by Ray) behind a `ShardedLedger` that coalesces this
replica's calls per shard; the event dispatcher actor delivers webhooks from the committed
batches and the outbox; the scheduler actor runs scheduled transactions and inflight expiry
and commit dates. Every actor is get-or-create, so whichever replica starts first creates it.

Remote Blnk (`BLNK_URL` set): the port is `BlnkHttpLedger` (bulk calls, retries, a circuit
breaker, compensations); the remote server schedules and notifies for itself.

At shutdown the transaction-hook runner is closed first (its closer is registered last, and
`Resources.close` runs closers newest first, then closes the pool): the post-hook calls still
pending get `HOOK_DRAIN_TIMEOUT_S` while the HTTP client and the pool they use are still open.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import httpx
from fastapi import APIRouter

from actors.event_dispatcher import DispatcherActorConfig, get_or_create_dispatcher
from actors.ledger_shard import ShardConfig, ShardedLedger, start_shards
from actors.scheduler import PortKind, SchedulerActorConfig, get_or_create_scheduler
from deployments.resources import Resources
from gateway.health import DependencyCheck
from kit.clock import SystemClock
from kit.errors import ConfigurationError
from kit.settings import Settings
from ledger.endpoints import LedgerDeps, build_routers, new_hook_runner
from ledger.hooks import HOOK_CANCEL_WAIT_S
from ledger.port import LedgerPort
from ledger.remote import BlnkHttpLedger, PgCompensationJournal, RemoteConfig

HTTP_CONNECTIONS_MAX: Final = 50  # outbound calls (hooks, rate providers) per replica
# Post-transaction hook calls pending at shutdown get this long to finish before they are
# cancelled. With HOOK_CANCEL_WAIT_S after it, it must end well inside the ledger replica's
# `graceful_shutdown_timeout_s` in serve_config.yaml (20 s), which also covers draining requests.
HOOK_DRAIN_TIMEOUT_S: Final = 5.0


async def _embedded_port(resources: Resources, database_url: str) -> LedgerPort:
    settings = resources.settings
    handles = start_shards(
        settings.ledger_shard_count,
        ShardConfig(
            database_url=database_url,
            pool_max_size=settings.ledger_shard_pool_size,
            batch_items_max=settings.ledger_batch_items_max,
        ),
    )
    port = ShardedLedger(handles)
    await asyncio.to_thread(
        get_or_create_dispatcher, DispatcherActorConfig(database_url=database_url)
    )
    await asyncio.to_thread(
        get_or_create_scheduler,
        SchedulerActorConfig(
            database_url=database_url,
            port=PortKind.SHARDS,
            shard_count=settings.ledger_shard_count,
            fx_provider_url=settings.ledger_fx_provider_url,
            fx_bases=settings.ledger_fx_bases,
            fx_refresh_interval_s=settings.ledger_fx_refresh_interval_s,
        ),
    )

    async def shards_probe() -> dict[str, Any]:
        stats = await port.stats()
        return {"shards": len(stats), "queue_depth": sum(s["queue_depth"] for s in stats)}

    resources.extra_checks.append(DependencyCheck("ledger_shards", shards_probe))
    return port


def _remote_port(resources: Resources, settings: Settings) -> LedgerPort:
    port = BlnkHttpLedger(
        RemoteConfig.from_settings(settings), journal=PgCompensationJournal(resources.db)
    )
    resources.closers.append(port.aclose)
    return port


async def ledger_dependencies(resources: Resources) -> LedgerDeps:
    """The ledger port and everything the ledger routes use."""
    settings = resources.settings
    if settings.database_url is None:
        raise ConfigurationError("DATABASE_URL must be set for the ledger")
    if settings.blnk_url:
        port = _remote_port(resources, settings)
    else:
        port = await _embedded_port(resources, settings.database_url.get_secret_value())
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
        # The embedded engine stores run_async bulks before the 202; a remote Blnk keeps its own.
        durable_async_bulks=not settings.blnk_url,
    )


async def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Blnk's API over the ledger port; its hook runner is drained first at shutdown."""
    deps = await ledger_dependencies(resources)
    hooks = new_hook_runner(deps)

    async def close_hooks() -> None:
        await hooks.aclose(timeout_s=HOOK_DRAIN_TIMEOUT_S, cancel_wait_s=HOOK_CANCEL_WAIT_S)

    # Registered after the HTTP client's closer, so it runs before it (and before the pool).
    resources.closers.append(close_hooks)
    return build_routers(deps, hooks=hooks)
