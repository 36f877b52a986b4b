"""Adaptive coalescing: one call in flight, the rest batched into the next call; a second call
only while a full call waits.

A fake destination records the batches it receives; the tests drive concurrency with real
asyncio tasks and check batching, per-item errors, whole-call failures, bounds and cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from actors.coalescer import Coalescer, CoalescerOverloadedError
from kit.errors import ConflictError, InvariantError


class Destination:
    """Doubles each item after a short delay; records each batch."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.in_flight = 0
        self.in_flight_max = 0
        self.overlapping: list[list[int]] = []  # batches sent while another call was out

    async def send(self, items: list[int]) -> Sequence[int | BaseException]:
        if self.in_flight:
            self.overlapping.append(items)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        self.batches.append(items)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        return [ConflictError("odd", item=i) if i == 13 else i * 2 for i in items]


class TestCoalescing:
    async def test_results_reach_their_callers(self) -> None:
        """Each caller gets its own item's result."""
        destination = Destination()
        coalescer: Coalescer[int, int] = Coalescer(destination.send)
        results = await asyncio.gather(*(coalescer.submit(i) for i in range(100) if i != 13))
        assert results == [i * 2 for i in range(100) if i != 13]

    async def test_one_call_in_flight_below_a_full_call(self) -> None:
        """Fewer waiting items than a call carries never make a second call: they ride together
        in the next one."""
        destination = Destination()
        coalescer: Coalescer[int, int] = Coalescer(destination.send, batch_size_max=64)
        for start in (100, 200, 300):  # while a call is out, a burst just under a full call
            first = asyncio.create_task(coalescer.submit(start))
            await asyncio.sleep(0.001)
            await asyncio.gather(first, *(coalescer.submit(start + i) for i in range(1, 64)))
        assert destination.in_flight_max == 1
        assert [len(b) for b in destination.batches] == [1, 63] * 3
        assert coalescer.items == 192

    async def test_a_full_call_waiting_goes_out_at_once(self) -> None:
        """A backlog of a full call or more sends a second call while the first is out, never a
        third; every overlapping call is full, and items leave in the order they came."""
        destination = Destination()
        coalescer: Coalescer[int, int] = Coalescer(destination.send, batch_size_max=64)
        items = [i for i in range(500) if i != 13]
        assert await asyncio.gather(*(coalescer.submit(i) for i in items)) == [i * 2 for i in items]
        assert destination.in_flight_max == 2
        assert destination.overlapping
        assert all(len(b) == 64 for b in destination.overlapping)
        assert [i for batch in destination.batches for i in batch] == items

    async def test_the_second_call_ends_with_the_backlog(self) -> None:
        """Once the backlog is gone, one call in flight again: the next burst below a full call
        rides in single calls."""
        destination = Destination()
        coalescer: Coalescer[int, int] = Coalescer(destination.send, batch_size_max=64)
        await asyncio.gather(*(coalescer.submit(i) for i in range(20, 320)))
        assert destination.in_flight_max == 2
        destination.in_flight_max = 0
        for start in (1000, 2000):
            await asyncio.gather(*(coalescer.submit(i) for i in range(start, start + 50)))
        assert destination.in_flight_max == 1

    async def test_a_full_call_by_weight_goes_out_at_once(self) -> None:
        """With a weight, a waiting weight of a full call sends the second call too."""
        gate = asyncio.Event()
        sent: list[list[int]] = []

        async def held(items: list[int]) -> list[int]:
            sent.append(items)
            await gate.wait()
            return items

        coalescer: Coalescer[int, int] = Coalescer(
            held, batch_size_max=64, weight=lambda item: item, batch_weight_max=100
        )
        first = asyncio.create_task(coalescer.submit(1))
        await asyncio.sleep(0.01)
        light = [asyncio.create_task(coalescer.submit(i)) for i in (10, 20, 30)]
        await asyncio.sleep(0.01)
        assert sent == [[1]]  # 60 waiting: under a full call
        heavy = [asyncio.create_task(coalescer.submit(i)) for i in (40, 50)]
        await asyncio.sleep(0.01)
        assert sent == [[1], [10, 20, 30, 40]]  # 150 waited: the second call went at once
        gate.set()
        assert await asyncio.gather(first, *light, *heavy) == [1, 10, 20, 30, 40, 50]
        assert sent[2:] == [[50]]

    async def test_calls_are_bounded_by_weight(self) -> None:
        """With a weight, a call stops before its items' summed weight passes the bound; an item
        heavier than the bound alone still goes, alone; order is kept."""
        destination = Destination()
        coalescer: Coalescer[int, int] = Coalescer(
            destination.send, batch_size_max=64, weight=lambda item: item, batch_weight_max=100
        )
        items = [1, 60, 30, 20, 150, 5, 5, 90, 10]
        results = await asyncio.gather(*(coalescer.submit(i) for i in items))
        assert results == [i * 2 for i in items]
        assert [i for batch in destination.batches for i in batch] == items
        assert all(sum(b) <= 100 or len(b) == 1 for b in destination.batches)
        assert [150] in destination.batches
        assert len(destination.batches) >= 4

    def test_weight_needs_its_bound(self) -> None:
        with pytest.raises(ValueError, match="weight"):
            Coalescer(Destination().send, weight=lambda item: item)
        with pytest.raises(ValueError, match="weight"):
            Coalescer(Destination().send, weight=lambda item: item, batch_weight_max=0)

    async def test_an_item_error_fails_only_that_item(self) -> None:
        """A per-item exception is raised to that caller alone."""
        coalescer: Coalescer[int, int] = Coalescer(Destination().send)
        results = await asyncio.gather(
            *(coalescer.submit(i) for i in (12, 13, 14)), return_exceptions=True
        )
        assert results[0] == 24
        assert results[2] == 28
        assert isinstance(results[1], ConflictError)

    async def test_a_failed_call_fails_its_items_and_the_next_call_goes_on(self) -> None:
        """When the whole call fails, its items fail; later items still go out."""
        calls = 0

        async def flaky(items: list[int]) -> list[int]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 1:
                raise ConnectionError("shard restarting")
            return items

        coalescer: Coalescer[int, int] = Coalescer(flaky)
        first = asyncio.create_task(coalescer.submit(1))
        await asyncio.sleep(0)
        second = asyncio.create_task(coalescer.submit(2))
        with pytest.raises(ConnectionError):
            await first
        assert await second == 2

    async def test_wrong_result_count_is_an_invariant_error(self) -> None:
        """A destination that answers the wrong number of results is a bug, reported as such."""

        async def short(items: list[int]) -> list[int]:
            return items[:-1]

        coalescer: Coalescer[int, int] = Coalescer(short)
        with pytest.raises(InvariantError):
            await coalescer.submit(1)

    async def test_queue_is_bounded(self) -> None:
        """Beyond the queue bound, submit refuses at once with a 503-class error."""
        gate = asyncio.Event()

        async def blocked(items: list[int]) -> list[int]:
            await gate.wait()
            return items

        coalescer: Coalescer[int, int] = Coalescer(blocked, batch_size_max=2, queue_size_max=4)
        in_flight = asyncio.create_task(coalescer.submit(0))
        await asyncio.sleep(0.01)  # the first call is now out, holding item 0
        waiting = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 5)]
        await asyncio.sleep(0.01)  # a full call waited: the second call is out with 1 and 2
        assert coalescer.queue_depth == 2
        waiting += [asyncio.create_task(coalescer.submit(i)) for i in (5, 6)]
        await asyncio.sleep(0.01)  # two calls out: no third, whatever waits
        assert coalescer.queue_depth == 4
        with pytest.raises(CoalescerOverloadedError):
            await coalescer.submit(99)
        gate.set()
        assert await asyncio.gather(in_flight, *waiting) == [0, 1, 2, 3, 4, 5, 6]

    async def test_cancelled_caller_does_not_break_the_batch(self) -> None:
        """A caller that gives up leaves the other items of its batch unaffected."""
        destination = Destination(delay_s=0.02)
        coalescer: Coalescer[int, int] = Coalescer(destination.send)
        first = asyncio.create_task(coalescer.submit(1))
        await asyncio.sleep(0)
        doomed = asyncio.create_task(coalescer.submit(2))
        survivor = asyncio.create_task(coalescer.submit(3))
        await asyncio.sleep(0)
        doomed.cancel()
        assert await first == 2
        assert await survivor == 6
