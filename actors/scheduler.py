"""`Scheduler` actor: ticks `ledger.scheduler.Scheduler` every 250 ms in the cluster.

One named actor, `scheduler-shard-000` (`actors.routing.actor_name("scheduler", 0)`, namespace
`actors.routing.NAMESPACE`), detached and restarted without limit; it starts ticking in its
constructor, so a restarted actor resumes by itself. Each tick reads what is due (scheduled
transactions, expired holds, holds due for commit) and submits it through the `LedgerPort` its
config names: the ledger shards (`ShardedLedger` over `ledger-shard-NNN`, the default), a
remote Blnk server (`BlnkHttpLedger`), or an engine inside the actor (a one-process run).
Ticks are idempotent (the engine refuses a second void or commit and the scheduler counts that
as done), so a restart mid-tick or a second scheduler does no harm. When the config names an
exchange-rate provider, the actor also refreshes the rates table from it (`RateRefresher`).
Every minute it also fails the reconciliations whose replica stopped while running them
(`ledger.reconciliation_runner.fail_interrupted_runs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

import httpx
import ray

from actors.ledger_shard import ShardedLedger, lookup_shards
from actors.routing import NAMESPACE, actor_name
from kit.clock import SystemClock
from kit.db import Database
from kit.settings import Settings
from ledger.engine import LedgerEngine
from ledger.fx import FrankfurterProvider, RateRefresher
from ledger.monitors import MonitorHook
from ledger.port import LedgerPort
from ledger.reconciliation_runner import fail_interrupted_runs
from ledger.remote import BlnkHttpLedger, PgCompensationJournal, RemoteConfig
from ledger.scheduler import ROWS_PER_KIND_MAX, TICK_INTERVAL_S, Scheduler

logger = logging.getLogger(__name__)

SCHEDULER_KIND: Final = "scheduler"
MAX_CONCURRENCY: Final = 8  # stats and stop calls interleave with the ticks
NUM_CPUS: Final = 0.1
POOL_MAX_SIZE: Final = 2  # one tick reads at a time
OPEN_RETRY_S: Final = 2.0  # wait before retrying to open the pool or reach the port
FX_CONNECTIONS_MAX: Final = 4  # connections to the rates provider
FX_STOP_TIMEOUT_S: Final = 10.0  # a refresh in progress at stop gets this long to finish
RECONCILIATION_SWEEP_INTERVAL_S: Final = 60.0  # how often interrupted reconciliations are failed
SWEEP_STOP_TIMEOUT_S: Final = 10.0  # a sweep in progress at stop gets this long to finish


class PortKind(StrEnum):
    """Which `LedgerPort` the scheduler submits through."""

    SHARDS = "shards"  # the named ledger shard actors
    REMOTE = "remote"  # a remote Blnk server (BLNK_URL)
    ENGINE = "engine"  # an engine on the actor's own pool


@dataclass(frozen=True, slots=True)
class SchedulerActorConfig:
    """What the actor needs (passed explicitly: it may run on any node)."""

    database_url: str
    port: PortKind = PortKind.SHARDS
    shard_count: int = 1
    pool_max_size: int = POOL_MAX_SIZE
    tick_interval_s: float = TICK_INTERVAL_S
    rows_per_kind_max: int = ROWS_PER_KIND_MAX
    # Exchange rates refreshed from a Frankfurter-compatible provider (None: no refresh).
    fx_provider_url: str | None = None
    fx_bases: tuple[str, ...] = ()
    fx_refresh_interval_s: float = 3600.0


class SchedulerActor:
    """The actor's body: ticks until stopped."""

    def __init__(self, config: SchedulerActorConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._scheduler: Scheduler | None = None
        self._db: Database | None = None
        self.ticks = 0
        self.tick_errors = 0
        self.rates: RateRefresher | None = None
        self.reconciliations_interrupted = 0
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _port(self, db: Database, settings: Settings) -> LedgerPort:
        if self.config.port is PortKind.ENGINE:
            return LedgerEngine(
                db, writer=actor_name(SCHEDULER_KIND, 0), batch_hooks=[MonitorHook()]
            )
        if self.config.port is PortKind.REMOTE:
            return BlnkHttpLedger(
                RemoteConfig.from_settings(settings), journal=PgCompensationJournal(db)
            )
        return ShardedLedger(await asyncio.to_thread(lookup_shards, self.config.shard_count))

    async def _open(self) -> Scheduler:
        settings = Settings().model_copy(
            update={"db_pool_min_size": 1, "db_pool_max_size": self.config.pool_max_size}
        )
        while True:
            try:
                db = self._db or await Database.open(settings, self.config.database_url)
                self._db = db
                port = await self._port(db, settings)
                return Scheduler(db, port, rows_per_kind_max=self.config.rows_per_kind_max)
            except Exception:  # retried until PostgreSQL and the port answer
                logger.exception("the scheduler cannot start yet")
                await asyncio.sleep(OPEN_RETRY_S)

    def _start_rate_refresh(
        self, db: Database, http: httpx.AsyncClient, url: str
    ) -> asyncio.Task[None]:
        self.rates = RateRefresher(
            db,
            FrankfurterProvider(http, base_url=url),
            bases=self.config.fx_bases,
            interval_s=self.config.fx_refresh_interval_s,
            clock=SystemClock(),
        )
        return asyncio.get_running_loop().create_task(self.rates.run(self._stop))

    async def _main(self) -> None:
        self._scheduler = await self._open()
        try:
            async with contextlib.AsyncExitStack() as stack:
                url = self.config.fx_provider_url
                if url is not None and self._db is not None:
                    http = await stack.enter_async_context(
                        httpx.AsyncClient(limits=httpx.Limits(max_connections=FX_CONNECTIONS_MAX))
                    )
                    refresh = self._start_rate_refresh(self._db, http, url)
                    stack.push_async_callback(asyncio.wait_for, refresh, FX_STOP_TIMEOUT_S)
                if self._db is not None:
                    sweep = asyncio.get_running_loop().create_task(
                        self._sweep_reconciliations(self._db)
                    )
                    stack.push_async_callback(asyncio.wait_for, sweep, SWEEP_STOP_TIMEOUT_S)
                await self._tick_until_stopped(self._scheduler)
        finally:
            if self._db is not None:
                await self._db.close()

    async def _sweep_reconciliations(self, db: Database) -> None:
        """Fail the reconciliations whose replica stopped, every sweep interval until stopped."""
        clock = SystemClock()
        while not self._stop.is_set():
            try:
                self.reconciliations_interrupted += len(
                    await fail_interrupted_runs(db, now=clock.now())
                )
            except Exception:  # the loop's last resort: log it and sweep again later
                logger.exception("the reconciliation sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RECONCILIATION_SWEEP_INTERVAL_S)

    async def _tick_until_stopped(self, scheduler: Scheduler) -> None:
        while not self._stop.is_set():
            started = asyncio.get_running_loop().time()
            try:
                await scheduler.tick()
                self.ticks += 1
            except Exception:  # the loop's last resort: log it and tick again
                self.tick_errors += 1
                logger.exception("a scheduler tick failed")
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self.config.tick_interval_s - elapsed))

    async def stats(self) -> dict[str, Any]:
        """Ticks and totals since the actor started."""
        totals = asdict(self._scheduler.totals) if self._scheduler is not None else {}
        rates = self.rates
        return {
            "running": not self._task.done(),
            "ticks": self.ticks,
            "tick_errors": self.tick_errors,
            "rate_refreshes": 0 if rates is None else rates.refreshes,
            "rate_refresh_failures": 0 if rates is None else rates.failures,
            "reconciliations_interrupted": self.reconciliations_interrupted,
            **totals,
        }

    async def stop(self) -> None:
        """Finish the current tick and stop (tests; Ray kills it otherwise)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), timeout=30)


SchedulerRemote: Any = ray.remote(SchedulerActor)


def get_or_create_scheduler(config: SchedulerActorConfig) -> Any:
    """The handle of `scheduler-shard-000`, created (detached) if it does not exist.

    Blocking (it asks the cluster's control store); call it from a thread in async code.
    """
    return SchedulerRemote.options(
        name=actor_name(SCHEDULER_KIND, 0),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=NUM_CPUS,
    ).remote(config)
