"""Adaptive call coalescing: at most one call in flight per destination.

An actor hop costs about a millisecond of CPU on each side, paid per call, not per item. A
`Coalescer` sits in the caller (an ingress replica) in front of one shard: the first item goes
out at once; whatever arrives while that call is in flight waits and goes, all together, in the
next call (up to `batch_size_max`). Under light load this adds no delay; under heavy load batches
grow by themselves. Measured on two cores (reference/prototype-shards.md): ~530 postings/s with
one call per request, ~2,150/s coalesced.

The send function answers one result per item, in order; an item's result may be an exception,
which is raised to that item's caller only. A failure of the whole call fails every item of
that call. The queue is bounded: beyond `queue_size_max` waiting items, `submit` refuses at once
with `CoalescerOverloadedError` (503) instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from kit.errors import DependencyError, InvariantError

logger = logging.getLogger(__name__)

BATCH_SIZE_MAX_DEFAULT: Final = 256
QUEUE_SIZE_MAX_DEFAULT: Final = 10_000

Item = TypeVar("Item")
Result = TypeVar("Result")


class CoalescerOverloadedError(DependencyError):
    """Too many items are already waiting for this destination."""

    code = "GEN_OVERLOADED"
    retry_after_s = 1


class Coalescer(Generic[Item, Result]):
    """Batches concurrent submissions to one destination, one call in flight at a time."""

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        batch_size_max: int = BATCH_SIZE_MAX_DEFAULT,
        queue_size_max: int = QUEUE_SIZE_MAX_DEFAULT,
        weight: Callable[[Item], int] | None = None,
        batch_weight_max: int | None = None,
    ) -> None:
        """`weight` and `batch_weight_max`, when given, bound a call by the summed weight of its
        items too (a call always takes at least one item, whatever its weight)."""
        if batch_size_max < 1 or queue_size_max < batch_size_max:
            raise ValueError("need 1 <= batch_size_max <= queue_size_max")
        if (weight is None) != (batch_weight_max is None) or (
            batch_weight_max is not None and batch_weight_max < 1
        ):
            raise ValueError("weight and a positive batch_weight_max go together")
        self._send = send
        self._batch_size_max = batch_size_max
        self._queue_size_max = queue_size_max
        self._weight = weight
        self._batch_weight_max = batch_weight_max or 0
        self._waiting: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self.calls = 0
        self.items = 0

    @property
    def queue_depth(self) -> int:
        """Items waiting for the next call."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        """Send `item` in the next call and return its result."""
        if len(self._waiting) >= self._queue_size_max:
            raise CoalescerOverloadedError(
                "too many requests are waiting for this shard", queue_size_max=self._queue_size_max
            )
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        waiting, weight = self._waiting, self._weight
        if weight is None:
            return [waiting.popleft() for _ in range(min(len(waiting), self._batch_size_max))]
        batch = [waiting.popleft()]
        total = weight(batch[0][0])
        while waiting and len(batch) < self._batch_size_max:
            total += weight(waiting[0][0])
            if total > self._batch_weight_max:
                break
            batch.append(waiting.popleft())
        return batch

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            self.calls += 1
            self.items += len(batch)
            try:
                results = await self._send([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the whole call failed: every item learns why
                _fail_all(batch, exc)
                continue
            if len(results) != len(batch):
                _fail_all(
                    batch,
                    InvariantError(
                        "a batch call answered the wrong number of results",
                        sent=len(batch),
                        answered=len(results),
                    ),
                )
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller gave up (cancelled); the item was still sent
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _fail_all(batch: list[tuple[Item, asyncio.Future[Result]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
