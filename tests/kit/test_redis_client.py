"""The Redis client: a connection the server closed is replaced once, a timeout never retried.

Method: real Redis. The server closes one of our pooled connections (`CLIENT KILL ID`), or
holds every client for a while (`CLIENT PAUSE`), and the next command's fate is read back
from Redis itself.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from kit.errors import CacheUnavailableError
from kit.redis_client import create_redis, ping, translated
from kit.settings import Settings
from tests.ports import free_port

pytestmark = pytest.mark.db

PAUSE_MS = 500  # how long the server holds every client
SHORT_TIMEOUT_S = 0.3  # gives up within the pause; a retry would land after it, within its own


def _key(key_prefix: str) -> str:
    return f"{key_prefix}redis-client:{uuid.uuid4().hex}"


async def test_a_connection_the_server_closed_is_replaced(
    settings: Settings, redis_url: str, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """The pooled connection is killed between two commands (a server restart, or idle
    clients dropped): the second command still answers, on a new connection (it used to
    fail, and the request with it, as 503)."""
    client = create_redis(settings.model_copy(update={"redis_max_connections": 1}), redis_url)
    key = _key(key_prefix)
    try:
        await client.set(key, "kept")
        own_id = await client.client_id()
        assert await redis_client.client_kill_filter(_id=str(own_id)) == 1
        assert await client.get(key) == b"kept"
        assert await client.client_id() != own_id
    finally:
        await redis_client.delete(key)
        await client.aclose()


async def test_a_timed_out_command_is_not_sent_again(
    settings: Settings, redis_url: str, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A command whose answer did not come in time may have run: it is not sent again. The
    server holds every client for longer than the timeout, and drops the command of the
    client that gave up; a retry on a new connection would land after the pause and count."""
    impatient = create_redis(
        settings.model_copy(update={"redis_socket_timeout_s": SHORT_TIMEOUT_S}), redis_url
    )
    key = _key(key_prefix)
    try:
        await impatient.ping()  # connected before the pause
        await redis_client.client_pause(PAUSE_MS, all=True)
        with pytest.raises(RedisTimeoutError):
            await impatient.incr(key)
        await asyncio.sleep(PAUSE_MS / 1000 + 0.2)
        assert await redis_client.get(key) is None
    finally:
        await redis_client.client_unpause()
        await redis_client.delete(key)
        await impatient.aclose()


async def test_a_server_that_is_gone_is_reported_unavailable(settings: Settings) -> None:
    """Nobody listening: the retry does not hide it; callers get CacheUnavailableError."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = create_redis(settings, url)
    try:
        with pytest.raises(CacheUnavailableError, match="cannot reach Redis"):
            await ping(client, url=url)
        with pytest.raises(CacheUnavailableError):
            async with translated():
                await client.get("anything")
    finally:
        await client.aclose()
