"""Ledger shards: named Ray actors hosting the group-commit engine, and the ingress-side port.

`LedgerShard` (one per shard, named `ledger-shard-NNN`) owns a `LedgerEngine` and its own
connection pool; every call carries a list of commands and answers one outcome per command,
after COMMIT (both packed into one bytes value by `pack`). Calls from several ingress replicas
merge into the engine's batches.

`ShardedLedger` is the `LedgerPort` the ingress uses: it routes each command to a shard by a
stable key (the debited balance for a transfer, the hold for a commit or void, the original
for a refund) and coalesces per shard with one call in flight (a second only while a full call
waits: `actors.coalescer`), so the actor hop is paid per call, not per transaction
(reference/prototype-shards.md: ~530 vs ~2,150 postings/s).
Routing is for performance and per-balance ordering only: every funds check is made on rows
locked in PostgreSQL, so any shard may run any command correctly.

A shard that dies fails the calls in flight (their callers get a 503 and retry with the same
reference or Idempotency-Key; the database either committed a batch or rolled it back, so no
retry applies anything twice) and Ray restarts it (`max_restarts=-1`); the next call finds it.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import ray
from ray.exceptions import RayActorError, RaySystemError

from actors.coalescer import Coalescer
from actors.routing import NAMESPACE, actor_name, shard_for
from kit.db import Database
from kit.heap import freeze_startup_heap
from kit.metrics import gauge
from kit.settings import Settings
from ledger.engine import LedgerEngine, command_weight
from ledger.errors import LedgerUnavailableError
from ledger.models import (
    Command,
    CommitInflight,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    VoidInflight,
)
from ledger.monitors import MonitorHook
from ledger.posting import is_indicator

logger = logging.getLogger(__name__)

SHARD_KIND: Final = "ledger"
SHARD_MAX_CONCURRENCY: Final = 256  # concurrent calls one shard accepts (they merge into batches)
SHARD_NUM_CPUS: Final = 0.25  # scheduling weight; the engine mostly waits on PostgreSQL
# Commands per actor call from one ingress: one call can fill one engine batch (ShardConfig's
# batch_items_max), which is also the backlog that sends a second call at once. At 256 a shard
# posted ~5.3k transfers/s in benchmarks/ledger.py, at 512 ~6.3k.
CALL_ITEMS_MAX: Final = 512
# Postings per actor call (a bulk counts its items): a call of 512 large bulks would overflow
# the engine's queue (QUEUE_ITEMS_MAX_DEFAULT, 50,000) and be refused whole. One bulk of the
# largest size (`ledger.schemas.BULK_TRANSACTIONS_MAX`) still fits.
CALL_POSTINGS_MAX: Final = 10_000
CALL_QUEUE_MAX: Final = 20_000  # commands waiting per shard in one ingress before 503
HANDLE_LOOKUP_TIMEOUT_S: Final = 10.0
COALESCER_DEPTH = gauge(
    "ledger_shard_queue_commands", "Commands waiting in the ingress per shard", ["shard"]
)


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """What a shard needs to open its pool (passed explicitly: actors may run on any node)."""

    database_url: str
    pool_max_size: int = 4
    batch_items_max: int = 512


class LedgerShardImpl:
    """The actor's body: an engine on its own pool, opened on first use."""

    def __init__(self, index: int, config: ShardConfig) -> None:
        self.index = index
        self.config = config
        self._engine: LedgerEngine | None = None
        self._opening = asyncio.Lock()
        freeze_startup_heap()  # the actor's process holds Ray and the ledger: never rescan them

    async def _get_engine(self) -> LedgerEngine:
        if self._engine is None:
            async with self._opening:
                if self._engine is None:
                    settings = Settings().model_copy(
                        update={
                            "db_pool_min_size": 1,
                            "db_pool_max_size": self.config.pool_max_size,
                        }
                    )
                    # The engine and its batch hooks work in transactions only.
                    db = await Database.open(settings, self.config.database_url, keeps_session=True)
                    self._engine = LedgerEngine(
                        db,
                        writer=actor_name(SHARD_KIND, self.index),
                        batch_items_max=self.config.batch_items_max,
                        batch_hooks=[MonitorHook()],
                    )
        return self._engine

    async def execute_packed(self, payload: bytes) -> bytes:
        """Run the commands `pack`ed in `payload` through this shard's engine; their outcomes,
        `pack`ed the same way."""
        engine = await self._get_engine()
        return pack(await engine.execute(unpack(payload)))

    async def stats(self) -> dict[str, Any]:
        """Queue depth and totals, for health checks and the dashboard."""
        engine = await self._get_engine()
        return {
            "index": self.index,
            "queue_depth": engine.queue_depth,
            "batches_committed": engine.batches_committed,
            "commands_committed": engine.commands_committed,
        }


LedgerShard = ray.remote(LedgerShardImpl)


def pack(values: Sequence[Command] | Sequence[Outcome]) -> bytes:
    """Commands or outcomes as one bytes value for a shard call. Ray pickles arguments and
    results with cloudpickle, which consults a Python hook for every object it writes; the
    standard pickler writes our plain records (module-level classes, `ledger.models`) in half
    the time, and Ray then carries a single bytes object."""
    return pickle.dumps(list(values), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> list[Any]:
    """What `pack` wrote (only ever bytes from our own shard calls)."""
    values: list[Any] = pickle.loads(payload)  # noqa: S301 - written by `pack` in our processes
    return values


def start_shards(shard_count: int, config: ShardConfig) -> list[Any]:
    """Get or create the named shard actors (detached, restarted by Ray when they die)."""
    return [
        LedgerShard.options(
            name=actor_name(SHARD_KIND, index),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=SHARD_MAX_CONCURRENCY,
            num_cpus=SHARD_NUM_CPUS,
        ).remote(index, config)
        for index in range(shard_count)
    ]


def route_key(command: Command) -> str:
    """The key that picks a command's shard."""
    if isinstance(command, PostTransaction):
        source = command.source or (command.sources[0].identifier if command.sources else "")
        if is_indicator(source) and command.overdraft_floor is None and command.destination:
            # Nobody checks an unlimited indicator's funds: spread its traffic by destination.
            return command.destination
        return source
    keys = {
        CommitInflight: lambda c: c.target_id,
        VoidInflight: lambda c: c.target_id,
        RefundTransaction: lambda c: c.original_id,
        PostBulk: lambda c: c.batch_id,
        RunScheduled: lambda c: c.transaction_id,
    }
    key: str = keys[type(command)](command)
    return key


class ShardedLedger:
    """The ingress's `LedgerPort`: routes commands to shards, one coalesced call per shard."""

    def __init__(self, handles: Sequence[Any]) -> None:
        if not handles:
            raise ValueError("at least one shard")
        self._handles = list(handles)
        self._coalescers = [
            Coalescer(
                self._sender(index),
                batch_size_max=CALL_ITEMS_MAX,
                queue_size_max=CALL_QUEUE_MAX,
                weight=command_weight,
                batch_weight_max=CALL_POSTINGS_MAX,
            )
            for index in range(len(handles))
        ]

    @property
    def shard_count(self) -> int:
        """How many shards commands are spread over."""
        return len(self._handles)

    def _sender(self, index: int) -> Any:
        async def send(batch: list[Command]) -> list[Outcome]:
            COALESCER_DEPTH.labels(str(index)).set(self._coalescers[index].queue_depth)
            try:
                packed = await self._handles[index].execute_packed.remote(pack(batch))
            except (RayActorError, RaySystemError) as exc:
                logger.warning("ledger shard %d unavailable: %s", index, type(exc).__name__)
                error = LedgerUnavailableError("the ledger shard is restarting; retry shortly")
                return [Outcome(error.status, error=error) for _ in batch]
            outcomes: list[Outcome] = unpack(packed)
            return outcomes

        return send

    async def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Run each command on its shard; outcomes come back in the commands' order."""
        if len(commands) == 1:
            command = commands[0]
            return [
                await self._coalescers[shard_for(route_key(command), self.shard_count)].submit(
                    command
                )
            ]
        return list(
            await asyncio.gather(
                *(
                    self._coalescers[shard_for(route_key(c), self.shard_count)].submit(c)
                    for c in commands
                )
            )
        )

    async def stats(self) -> list[dict[str, Any]]:
        """Every shard's stats (raises when a shard cannot answer within the timeout)."""
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(handle.stats.remote() for handle in self._handles)),
                timeout=HANDLE_LOOKUP_TIMEOUT_S,
            )
        )


def lookup_shards(shard_count: int) -> list[Any]:
    """Handles of running shards by name (for processes that did not create them)."""
    return [
        ray.get_actor(actor_name(SHARD_KIND, index), namespace=NAMESPACE)
        for index in range(shard_count)
    ]
