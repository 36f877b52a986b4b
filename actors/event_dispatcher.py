"""`EventDispatcher` actor: hosts `ledger.dispatcher.EventDispatcher` in the cluster.

One named actor, `dispatcher-shard-000` (`actors.routing.actor_name("dispatcher", 0)`, namespace
`actors.routing.NAMESPACE`), detached and restarted without limit. It starts its loop in its
constructor, so a restarted actor resumes by itself; the loop runs rounds every
`POLL_INTERVAL_S` or at once when `wake` is called (a ledger shard may call it after a batch;
nothing depends on it). Every claim in the dispatcher uses `FOR UPDATE SKIP LOCKED`, so a second
dispatcher (an old instance draining while its replacement starts) is harmless, and more
actors (`dispatcher-shard-001`, ...) share the delivery work when one is not enough: fan-out
runs at ~15,000 transactions/s, but one dispatcher sends ~500 webhooks/s on two cores.

Options, all explicit: get-or-create by name, `max_restarts=-1` (it must always run),
`max_task_retries=0` (its methods are probes and pokes, never work to redo), a small
`max_concurrency` and CPU share (it mostly waits on PostgreSQL and receivers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import ray

from actors.routing import NAMESPACE, actor_name
from kit.crypto import EnvelopeCipher, load_keyring
from kit.db import Database
from kit.settings import Settings
from ledger.dispatcher import DispatcherConfig, EventDispatcher

logger = logging.getLogger(__name__)

DISPATCHER_KIND: Final = "dispatcher"
MAX_CONCURRENCY: Final = 16  # stats, wake and stop calls interleave with the loop
NUM_CPUS: Final = 0.1
POOL_MAX_SIZE: Final = 4  # fan-out, claims and result writes; never more than a few at once
OPEN_RETRY_S: Final = 2.0  # wait before retrying to open the pool when PostgreSQL is away


@dataclass(frozen=True, slots=True)
class DispatcherActorConfig:
    """What the actor needs (passed explicitly: it may run on any node)."""

    database_url: str
    pool_max_size: int = POOL_MAX_SIZE
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    # Open sealed signing secrets with the cluster's key-encryption key (as the ingress seals
    # them); off only where subscriptions are created without a cipher (tests).
    use_cipher: bool = True


class EventDispatcherActor:
    """The actor's body: opens its pool and runs the dispatcher loop until stopped."""

    def __init__(self, config: DispatcherActorConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._dispatcher: EventDispatcher | None = None
        self._db: Database | None = None
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _open(self) -> EventDispatcher:
        settings = Settings().model_copy(
            update={"db_pool_min_size": 1, "db_pool_max_size": self.config.pool_max_size}
        )
        cipher = EnvelopeCipher(load_keyring(settings)) if self.config.use_cipher else None
        while True:
            try:
                self._db = await Database.open(settings, self.config.database_url)
                break
            except Exception:  # the pool is retried until PostgreSQL answers
                logger.exception("the event dispatcher cannot open its database pool")
                await asyncio.sleep(OPEN_RETRY_S)
        return EventDispatcher(self._db, cipher=cipher, config=self.config.dispatcher)

    async def _main(self) -> None:
        self._dispatcher = await self._open()
        try:
            await self._dispatcher.run(self._stop)
        finally:
            await self._dispatcher.aclose()
            if self._db is not None:
                await self._db.close()

    async def wake(self) -> None:
        """Start the next round now."""
        if self._dispatcher is not None:
            self._dispatcher.wake()

    async def stats(self) -> dict[str, Any]:
        """Totals since the actor started, and whether the loop runs."""
        totals = asdict(self._dispatcher.totals) if self._dispatcher is not None else {}
        return {"running": not self._task.done(), **totals}

    async def stop(self) -> None:
        """Finish the current round and stop the loop (tests; Ray kills it otherwise)."""
        self._stop.set()
        if self._dispatcher is not None:
            self._dispatcher.wake()
        await asyncio.wait_for(asyncio.shield(self._task), timeout=30)


EventDispatcherRemote: Any = ray.remote(EventDispatcherActor)


def get_or_create_dispatcher(config: DispatcherActorConfig, index: int = 0) -> Any:
    """The handle of `dispatcher-shard-{index:03d}`, created (detached) if it does not exist.

    One is enough for fan-out; more share delivery (every claim skips rows another holds).
    Blocking (it asks the cluster's control store); call it from a thread in async code.
    """
    return EventDispatcherRemote.options(
        name=actor_name(DISPATCHER_KIND, index),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=NUM_CPUS,
    ).remote(config)
