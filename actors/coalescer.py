"""Adaptive call coalescing: one call in flight per destination, a second only for a full call.

An actor hop costs about a millisecond of CPU on each side, paid per call, not per item. A
`Coalescer` sits in the caller (an ingress replica) in front of one shard: the first item goes
out at once; whatever arrives while that call is in flight waits and goes, all together, in the
next call (up to `batch_size_max`). Under light load this adds no delay; under heavy load batches
grow by themselves. Measured on two cores (reference/prototype-shards.md): ~530 postings/s with
one call per request, ~2,150/s coalesced.

When a whole call's worth is already waiting (`batch_size_max` items, or `batch_weight_max` of
weight) while a call is in flight, the destination is the bottleneck and waiting for the answer
only leaves it idle: a second call leaves at once (never more than `CALLS_IN_FLIGHT_MAX`), and a
drainer that is not alone stops as soon as less than a full call waits, so calls never shrink to
split a backlog. A second call of small batches cost more per item than it gained (measured over
HTTP with 32 connections); one of full calls keeps the shard's engine fed: 9,840-10,483 ->
12,246-13,742 postings/s through one shard in benchmarks/ledger.py, with the engine alone at
12,873-14,390 in the same runs. Calls leave in the order their items arrived, but Ray does not
promise that an async actor starts two calls in that order: the items of two calls in flight
were all waiting at once, none of their callers has an answer yet, so they are concurrent
requests and the destination must treat them as such (the ledger shard does: every check is
made on rows locked in PostgreSQL, as for calls from two ingress replicas).

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
CALLS_IN_FLIGHT_MAX: Final = 2  # the second only while a full call waits

Item = TypeVar("Item")
Result = TypeVar("Result")


class CoalescerOverloadedError(DependencyError):
    """Too many items are already waiting for this destination."""

    code = "GEN_OVERLOADED"
    retry_after_s = 1


class Coalescer(Generic[Item, Result]):
    """Batches concurrent submissions to one destination: one call in flight, two while a full
    call waits."""

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
        self._waiting_weight = 0  # summed weight of the waiting items (0 without `weight`)
        self._drainers: set[asyncio.Task[None]] = set()  # each sends one call at a time
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
        if self._weight is not None:
            self._waiting_weight += self._weight(item)
        drainers = len(self._drainers)
        if not drainers or (drainers < CALLS_IN_FLIGHT_MAX and self._is_full_call_waiting()):
            drainer = asyncio.create_task(self._drain())
            self._drainers.add(drainer)
            # `_drain` leaves the set itself, at once; this covers a task cancelled unstarted.
            drainer.add_done_callback(self._drainers.discard)
        return await future

    def _is_full_call_waiting(self) -> bool:
        return len(self._waiting) >= self._batch_size_max or (
            self._weight is not None and self._waiting_weight >= self._batch_weight_max
        )

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        waiting, weight = self._waiting, self._weight
        if weight is None:
            return [waiting.popleft() for _ in range(min(len(waiting), self._batch_size_max))]
        batch = [waiting.popleft()]
        total = weight(batch[0][0])
        while waiting and len(batch) < self._batch_size_max:
            following = weight(waiting[0][0])
            if total + following > self._batch_weight_max:
                break
            total += following
            batch.append(waiting.popleft())
        self._waiting_weight -= total
        return batch

    async def _drain(self) -> None:
        """Send calls while items wait; a drainer that is not alone stops (before it takes a
        batch, with no await between the check and leaving the set) once less than a full
        call waits, so the other one carries the rest."""
        drainer = asyncio.current_task()
        try:
            while self._waiting:
                if len(self._drainers) > 1 and not self._is_full_call_waiting():
                    return
                await self._send_one(self._next_batch())
        finally:
            self._drainers.discard(drainer)

    async def _send_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """One call: every item of `batch` learns its result (or the call's failure)."""
        self.calls += 1
        self.items += len(batch)
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole call failed: every item learns why
            _fail_all(batch, exc)
            return
        if len(results) != len(batch):
            error = InvariantError(
                "a batch call answered the wrong number of results",
                sent=len(batch),
                answered=len(results),
            )
            _fail_all(batch, error)
            return
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
