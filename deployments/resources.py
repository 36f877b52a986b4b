"""Per-replica resources: settings, the PostgreSQL pool, the Redis client, the key ring.

An ingress replica opens these once in its constructor and closes them when Serve stops it.
The readiness checks are built here, where Ray may be imported, and handed to the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import redis.asyncio as aioredis

from gateway.health import DependencyCheck
from gateway.limiter import RateLimiter
from gateway.policy import GatewayPolicy
from gateway.principal import TokenVerifier
from kit.crypto import EnvelopeCipher, load_keyring
from kit.db import Database
from kit.errors import ClusterUnavailableError, ConfigurationError
from kit.redis_client import create_redis
from kit.redis_client import ping as redis_ping
from kit.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Resources:
    """What every ingress replica holds open."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    cipher: EnvelopeCipher
    # Domain wiring (deployments/*_wiring.py) registers what it opens, to be closed with the
    # replica, and the readiness checks of what it depends on.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extra_checks: list[DependencyCheck] = field(default_factory=list)
    # The edge's authentication and rate-limit slots, filled by the identity wiring (the ledger
    # application leaves them empty: Blnk clients authenticate with X-Blnk-Key).
    token_verifier: TokenVerifier | None = None
    rate_limiter: RateLimiter | None = None
    # The application's edge policy, for routers that report on it (the admin surface).
    gateway_policy: GatewayPolicy = field(default_factory=GatewayPolicy)

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        """Open the pool and the client; the URLs must be set (the CLI sets them)."""
        if settings.database_url is None or settings.redis_url is None:
            raise ConfigurationError("DATABASE_URL and REDIS_URL must be set for a replica")
        cipher = EnvelopeCipher(load_keyring(settings))
        db = await Database.open(settings, settings.database_url.get_secret_value())
        client = create_redis(settings, settings.redis_url.get_secret_value())
        return cls(settings=settings, db=db, redis=client, cipher=cipher)

    async def close(self) -> None:
        """Close what domain wiring opened (newest first), then the pool and the client."""
        while self.closers:
            closer = self.closers.pop()
            try:
                await closer()
            except Exception:
                logger.exception("a replica resource did not close cleanly")
        await self.db.close()
        await self.redis.aclose()

    def checks(self) -> list[DependencyCheck]:
        """Readiness checks for PostgreSQL, Redis and Ray."""
        return [
            DependencyCheck("database", self._probe_database),
            DependencyCheck("redis", self._probe_redis),
            DependencyCheck("ray", probe_ray),
            *self.extra_checks,
        ]

    async def _probe_database(self) -> dict[str, Any]:
        await self.db.ping()
        return {"pool_size": self.db.pool.get_size(), "pool_idle": self.db.pool.get_idle_size()}

    async def _probe_redis(self) -> None:
        await redis_ping(self.redis)


async def probe_ray() -> dict[str, Any]:
    """The cluster answers and has at least one live node."""
    if not ray.is_initialized():
        raise ClusterUnavailableError("Ray is not initialised in this process")
    nodes = await asyncio.to_thread(ray.nodes)
    alive = sum(1 for node in nodes if node.get("Alive"))
    if alive == 0:
        raise ClusterUnavailableError("no live Ray node")
    return {"nodes_alive": alive}
