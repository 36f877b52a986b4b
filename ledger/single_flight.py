"""At most one load per key in flight: concurrent callers of a key share one load.

The in-memory caches of the API (verified API keys, active hooks) expire every few seconds; under
load, many requests notice the expiry at once. Without this each would query PostgreSQL; with
it the first one loads and the others await its result. A caller that is cancelled (its client
went away) does not cancel the load the others are waiting for.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Shares one in-flight load per key."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The result of the load in flight for `key`, starting `load()` if there is none."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(task)

    def forget(self) -> None:
        """Let the next caller start a fresh load (what is in flight may be out of date)."""
        self._inflight.clear()

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
