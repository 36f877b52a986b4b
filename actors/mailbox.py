"""Per-key serialisation inside a shard: the "virtual actors".

A shard hosts many users or balances. Operations on one key run one at a time, in arrival order
(asyncio locks are FIFO); operations on different keys run concurrently. A key's lock exists
only while someone holds or waits for it, so memory is bounded by the keys in flight, not by
every key ever seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from kit.errors import DependencyError

T = TypeVar("T")
KEYS_IN_FLIGHT_MAX_DEFAULT: Final = 100_000


class MailboxOverloadedError(DependencyError):
    """More keys are busy in this shard than it accepts."""

    code = "GEN_SHARD_OVERLOADED"
    retry_after_s = 1


class KeyedMailbox:
    """Runs callables for the same key strictly one after another."""

    def __init__(self, *, keys_in_flight_max: int = KEYS_IN_FLIGHT_MAX_DEFAULT) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._keys_in_flight_max = keys_in_flight_max

    @property
    def keys_in_flight(self) -> int:
        """Keys with an operation running or waiting."""
        return len(self._locks)

    async def run(self, key: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Await `operation()` once every earlier operation on `key` has finished."""
        entry = self._locks.get(key)
        if entry is None:
            if len(self._locks) >= self._keys_in_flight_max:
                raise MailboxOverloadedError("the shard is busy with too many keys")
            entry = (asyncio.Lock(), 0)
        lock, users = entry
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await operation()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
