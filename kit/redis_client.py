"""Redis: a bounded client and a key space.

Every key this project writes starts with `settings.redis_key_prefix` (`dwaybank:` by default),
built by `KeySpace.key`, so one Redis can host several environments (and the test suite can
run against a shared server without touching anything else). Connection failures become
`CacheUnavailableError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kit.errors import CacheUnavailableError
from kit.settings import Settings, redact_url

KEY_PART_LENGTH_MAX: Final = 256  # keys are built from ids and hashes, never from bodies
HEALTH_CHECK_INTERVAL_S: Final = 30
# A command that finds its pooled connection closed (the server restarted, or dropped idle
# clients) is sent again once on a new connection, at once; a timeout is never retried (the
# command may have run) and a server that stays down still fails fast.
RECONNECT_RETRIES: Final = 1

UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


def create_redis(settings: Settings, url: str) -> aioredis.Redis:
    """A client with a bounded pool and timeouts; connects lazily."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), RECONNECT_RETRIES, supported_errors=(RedisConnectionError,)),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it on aclose()


async def ping(client: aioredis.Redis, *, url: str | None = None, timeout_s: float = 2.0) -> None:
    """PING; raises `CacheUnavailableError` naming the server when given its URL."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except UNAVAILABLE as exc:
        where = f" at {redact_url(url)}" if url else ""
        raise CacheUnavailableError(
            f"cannot reach Redis{where}: {type(exc).__name__}: {exc}"
        ) from exc


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Turn Redis connection failures inside the block into `CacheUnavailableError`."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise CacheUnavailableError() from exc


class KeySpace:
    """Builds prefixed keys: `KeySpace("dwaybank:").key("session", sid)`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        """The key made of `parts` under this prefix."""
        for part in parts:
            if not part or len(part) > KEY_PART_LENGTH_MAX or ":" in part:
                raise ValueError("a key part must be 1-256 characters without ':'")
        return self.prefix + ":".join(parts)
