"""Wires the identity domain into an ingress replica.

Builds `AuthDependencies` from the replica's `Resources`: the UserShard-backed `LoginGuard`
(`actors/user_client.py`), the configured SMS/email providers over one bounded httpx client,
the argon2 pool, and the token keys, then starts a task that reloads the keys every
`auth_key_refresh_interval_s`. Everything opened is registered in `resources.closers`; the
shards' reachability joins the readiness checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import httpx
from fastapi import APIRouter

from actors.user_client import UserShardClient
from auth.assembly import assemble, build_messenger, refresh_keys
from auth.dependencies import AuthDependencies
from auth.endpoints import build_routers
from deployments.rate_limits import ShardRateLimiter
from deployments.resources import Resources
from gateway.admin import admin_router
from gateway.health import DependencyCheck
from kit.clock import SystemClock

logger = logging.getLogger(__name__)

HTTP_CONNECTIONS_MAX: Final = 20  # concurrent calls to SMS/email providers per replica


async def identity_dependencies(resources: Resources) -> AuthDependencies:
    """Open everything the identity routers need on this replica."""
    settings = resources.settings
    guard = await UserShardClient.connect(settings)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=HTTP_CONNECTIONS_MAX))
    resources.closers.append(http.aclose)
    deps = await assemble(
        settings,
        db=resources.db,
        redis=resources.redis,
        cipher=resources.cipher,
        guard=guard,
        clock=SystemClock(),
        messenger=build_messenger(settings, resources.db, http),
    )

    async def shards_probe() -> dict[str, Any]:
        return {"shards": len(await guard.ping())}

    resources.extra_checks.append(DependencyCheck("user_shards", shards_probe))
    resources.token_verifier = deps.verifier
    resources.rate_limiter = ShardRateLimiter(guard)
    task = asyncio.create_task(_refresh_forever(deps), name="auth-key-refresh")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(deps.hasher.close)

    resources.closers.append(stop)
    return deps


async def _refresh_forever(deps: AuthDependencies) -> None:
    interval_s = deps.settings.auth_key_refresh_interval_s
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh_keys(deps)
        except Exception:
            logger.exception("reloading the token keys failed")


async def identity_routers(resources: Resources) -> list[APIRouter]:
    """The identity routers of the public API application, and the admin surface."""
    deps = await identity_dependencies(resources)
    admin = admin_router(
        deps, limiter=resources.rate_limiter, rate_policy=resources.gateway_policy.rate_limits
    )
    return [*build_routers(deps), admin]
