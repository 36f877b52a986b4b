"""Per-key serialisation: one key at a time, keys in parallel, memory bounded by keys in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from actors.mailbox import KeyedMailbox, MailboxOverloadedError


class TestMailbox:
    async def test_same_key_runs_in_order_one_at_a_time(self) -> None:
        """Operations on one key never overlap and finish in arrival order."""
        mailbox = KeyedMailbox()
        running = 0
        overlap = 0
        order: list[int] = []

        async def op(i: int) -> None:
            nonlocal running, overlap
            running += 1
            overlap = max(overlap, running)
            await asyncio.sleep(0.001)
            order.append(i)
            running -= 1

        def bound(i: int) -> Callable[[], Awaitable[None]]:
            return lambda: op(i)

        await asyncio.gather(*(mailbox.run("user-1", bound(i)) for i in range(50)))
        assert overlap == 1
        assert order == list(range(50))

    async def test_different_keys_run_concurrently(self) -> None:
        """Two keys do not wait for each other."""
        mailbox = KeyedMailbox()
        gate = asyncio.Event()

        async def wait_for_gate() -> str:
            await gate.wait()
            return "a"

        async def open_gate() -> str:
            gate.set()
            return "b"

        results = await asyncio.wait_for(
            asyncio.gather(mailbox.run("a", wait_for_gate), mailbox.run("b", open_gate)), timeout=1
        )
        assert list(results) == ["a", "b"]

    async def test_idle_keys_are_forgotten(self) -> None:
        """After the work is done no lock is kept, even when an operation failed."""
        mailbox = KeyedMailbox()

        async def fail() -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await mailbox.run("k", fail)
        await asyncio.gather(*(mailbox.run(f"k{i}", lambda: asyncio.sleep(0)) for i in range(100)))
        assert mailbox.keys_in_flight == 0

    async def test_keys_in_flight_are_bounded(self) -> None:
        """Beyond the bound a new key is refused while old keys are busy."""
        mailbox = KeyedMailbox(keys_in_flight_max=2)
        gate = asyncio.Event()
        busy = [asyncio.create_task(mailbox.run(k, gate.wait)) for k in ("a", "b")]
        await asyncio.sleep(0)
        with pytest.raises(MailboxOverloadedError):
            await mailbox.run("c", gate.wait)
        gate.set()
        await asyncio.gather(*busy)
