"""Playing a race between two transactions explicitly, never leaving it to timing.

A holder transaction makes the competing change (and so holds its row or advisory lock) and
keeps it uncommitted; the request under test starts in a transaction of its own; the holder
waits until the request waits on its lock (or has finished, which, for a request that ought
to wait, is the bug), commits, and the request then goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg

from kit.db import Database

LOCK_WAIT_LOOKS_MAX: Final = 500  # looks for a waiting request before giving up
LOCK_WAIT_LOOK_S: Final = 0.01  # so at most 5 s

Work = Callable[[asyncpg.Connection], Awaitable[Any]]


async def until_blocked_or_done(db: Database, holder_pid: int, task: asyncio.Task[Any]) -> None:
    """Return once a backend waits on a lock the `holder_pid` backend holds, or `task` ended
    (a request that never waits has nothing protecting its check), within bounded looks."""
    async with db.connection() as conn:
        for _ in range(LOCK_WAIT_LOOKS_MAX):
            if task.done():
                return
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder_pid,
            )
            if waiting:
                return
            await asyncio.sleep(LOCK_WAIT_LOOK_S)
    raise AssertionError("the request neither waited on the holder's lock nor finished")


async def _in_transaction(db: Database, work: Work) -> Any:
    async with db.transaction() as conn:
        return await work(conn)


async def race(db: Database, holder_change: Work, request: Work) -> Any:
    """Play: the holder makes its change uncommitted, the request starts and reaches the
    holder's lock (or ends), the holder commits; the request's result or error."""
    async with db.transaction() as holder:
        await holder_change(holder)
        task = asyncio.create_task(_in_transaction(db, request))
        try:
            await until_blocked_or_done(db, holder.get_server_pid(), task)
        except BaseException:
            task.cancel()
            raise
    outcomes = await asyncio.gather(task, return_exceptions=True)
    return outcomes[0]
