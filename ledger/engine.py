"""The group-commit engine: many commands, one PostgreSQL transaction, answers after COMMIT.

`LedgerEngine.execute(commands)` queues the commands and waits for their outcomes. One flusher
task drains the queue in batches (bounded by `batch_items_max`, counting each bulk item); the
next batch forms while the current one commits, so under load batches grow by themselves and
under light load a command waits for nobody. A batch is one database transaction:

1. lock the holds, refund originals and scheduled rows the batch names (id order);
2. get or create `@indicator` balances, then lock every touched balance (id order, so two
   writers never deadlock) and read its exact figures;
3. read which Idempotency-Keys are already taken, and which references (only when the batch
   is retried, or just after a reference raced in: see below);
4. apply the commands in order to the in-memory book (`ledger.posting`): every funds check
   sees PostgreSQL's figures plus what earlier commands of the batch did;
5. write it all: the batch row (whose deferred trigger proves the batch balanced at COMMIT),
   transactions, the batch's summed change of each touched balance and one UPDATE applying
   them, hold progress, outbox events, idempotency records; COMMIT; then answer every caller.

Nothing is answered before it is durable. A refused command (insufficient funds, duplicate
reference) is answered with its error and changes nothing. If the batch itself fails
(a reference raced in by another writer, a deadlock, a serialization failure) it is retried a
bounded number of times; if a command makes PostgreSQL refuse the batch, the batch is split in
halves until the offending command is alone and only it fails.

References are checked optimistically. A batch's first attempt does not read which of its
references are taken: `transactions_reference_unique` refuses the batch if one is, and the retry
reads them, so the command that reused a reference is answered 409 TXN_DUPLICATE_REFERENCE and
the rest commit (duplicates within the batch are caught in Python either way). Reuse is rare and
the lookup costs a round trip and an index probe per reference on every batch; after a refusal
the engine looks references up first for a while, so a client replaying references costs one
failed attempt per `REFERENCE_LOOKUP_BATCHES` batches, not one per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import asyncpg

from kit.clock import Clock, SystemClock
from kit.db import Database, is_unavailable
from kit.errors import AppError, InvariantError
from kit.ids import IdPrefix, new_id
from kit.metrics import gauge, histogram
from ledger import repository
from ledger.errors import LedgerUnavailableError
from ledger.models import Command, Figures, Outcome, PostBulk
from ledger.posting import BalanceState, Book, apply, batch_needs, transaction_needs

logger = logging.getLogger(__name__)

BATCH_ITEMS_MAX_DEFAULT: Final = 512  # postings per database transaction; ~2-10 ms of work
QUEUE_ITEMS_MAX_DEFAULT: Final = 50_000  # beyond this, callers are refused with 503
BATCH_RETRIES_MAX: Final = 3  # raced references, deadlocks, serialization failures
SPLIT_DEPTH_MAX: Final = 12  # 2**12 > any batch: halving always isolates one command
REFERENCE_LOOKUP_BATCHES: Final = 64  # after a taken reference refused a batch, look them up first
REFERENCE_CONSTRAINT: Final = "transactions_reference_unique"
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

BATCH_SIZE = histogram(
    "ledger_batch_commands",
    "Commands per committed ledger batch",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_SECONDS = histogram(
    "ledger_batch_seconds", "Time to apply and commit one ledger batch", ["writer"]
)
QUEUE_DEPTH = gauge(
    "ledger_queue_commands", "Commands waiting for the next ledger batch", ["writer"]
)


def command_weight(command: Command) -> int:
    """The postings a command counts for in batch and queue bounds (a bulk counts its items)."""
    return len(command.items) if isinstance(command, PostBulk) else 1


def _is_taken_reference(exc: Exception) -> bool:
    """True when PostgreSQL refused a batch for reusing a reference."""
    return (
        isinstance(exc, asyncpg.UniqueViolationError)
        and exc.constraint_name == REFERENCE_CONSTRAINT
    )


class BatchHook(Protocol):
    """Work that must happen inside a batch's database transaction, after its rows are written
    and before COMMIT (balance monitors, for instance): it sees the book and the batch id."""

    async def __call__(self, conn: asyncpg.Connection, book: Book, batch_id: int) -> None:
        """Run inside the batch transaction; raising fails (and retries) the batch."""
        ...


@dataclass(slots=True)
class _Pending:
    command: Command
    future: asyncio.Future[Outcome]


class LedgerEngine:
    """Group-commits ledger commands to PostgreSQL."""

    def __init__(
        self,
        db: Database,
        *,
        writer: str = "engine",
        clock: Clock | None = None,
        batch_items_max: int = BATCH_ITEMS_MAX_DEFAULT,
        queue_items_max: int = QUEUE_ITEMS_MAX_DEFAULT,
        batch_hooks: Sequence[BatchHook] = (),
    ) -> None:
        self.db = db
        self.batch_hooks = tuple(batch_hooks)
        self.writer = writer
        self.clock = clock or SystemClock()
        self.batch_items_max = batch_items_max
        self.queue_items_max = queue_items_max
        self._queue: deque[_Pending] = deque()
        self._queued_items = 0
        self._flusher: asyncio.Task[None] | None = None
        self._reference_lookups_left = 0
        self._queue_depth = QUEUE_DEPTH.labels(writer)
        self._batch_size = BATCH_SIZE.labels(writer)
        self._batch_seconds = BATCH_SECONDS.labels(writer)
        self.batches_committed = 0
        self.commands_committed = 0
        self.batches_retried = 0

    @property
    def queue_depth(self) -> int:
        """Commands waiting for the next batch."""
        return len(self._queue)

    async def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Run the commands (in order, in one or more batches) and return their outcomes."""
        weight = sum(command_weight(c) for c in commands)
        if self._queued_items + weight > self.queue_items_max:
            error = LedgerUnavailableError("the ledger is saturated; retry shortly")
            return [Outcome(error.status, error=error) for _ in commands]
        loop = asyncio.get_running_loop()
        pending = [_Pending(command, loop.create_future()) for command in commands]
        self._queue.extend(pending)
        self._queued_items += weight
        self._queue_depth.set(len(self._queue))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever())
        if len(pending) == 1:  # the common call (one request); skips gather's bookkeeping
            return [await pending[0].future]
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _flush_forever(self) -> None:
        while self._queue:
            batch: list[_Pending] = []
            items = 0
            while self._queue and (
                not batch or items + command_weight(self._queue[0].command) <= self.batch_items_max
            ):
                entry = self._queue.popleft()
                items += command_weight(entry.command)
                batch.append(entry)
            self._queued_items -= items
            self._queue_depth.set(len(self._queue))
            outcomes = await self._run_isolating([p.command for p in batch], depth=0)
            for entry, outcome in zip(batch, outcomes, strict=True):
                if not entry.future.done():
                    entry.future.set_result(outcome)

    async def _run_isolating(self, commands: list[Command], *, depth: int) -> list[Outcome]:
        """Run a batch; if PostgreSQL refuses it, or a command breaks the posting code itself
        (a bug: anything else is an outcome), halve it until the culprit is alone. Every
        caller gets an answer: an exception escaping here would leave the batch's callers
        waiting for ever."""
        try:
            return await self._run_with_retries(commands)
        except Exception as exc:  # isolated, logged with its stack, answered 500
            if len(commands) == 1 or depth >= SPLIT_DEPTH_MAX:
                logger.exception("the ledger refused a command", extra={"writer": self.writer})
                sqlstate = getattr(exc, "sqlstate", None)
                error = InvariantError("the ledger refused the transaction", sqlstate=sqlstate)
                return [Outcome(error.status, error=error) for _ in commands]
            middle = len(commands) // 2
            first = await self._run_isolating(commands[:middle], depth=depth + 1)
            return first + await self._run_isolating(commands[middle:], depth=depth + 1)

    async def _run_with_retries(self, commands: list[Command]) -> list[Outcome]:
        for attempt in range(1, BATCH_RETRIES_MAX + 1):
            try:
                return await self._run_batch(
                    commands, look_up_references=attempt > 1 or self._reference_lookups_left > 0
                )
            except _RETRYABLE as exc:
                if _is_taken_reference(exc):
                    self._reference_lookups_left = REFERENCE_LOOKUP_BATCHES
                if attempt == BATCH_RETRIES_MAX:
                    raise
                self.batches_retried += 1
                logger.info(
                    "ledger batch retried", extra={"writer": self.writer, "attempt": attempt}
                )
            except AppError as exc:
                return [Outcome(exc.status, error=exc) for _ in commands]
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                error = LedgerUnavailableError("the ledger database is unavailable; retry shortly")
                return [Outcome(error.status, error=error) for _ in commands]
        raise InvariantError("unreachable: the retry loop always returns or raises")

    async def _run_batch(
        self, commands: list[Command], *, look_up_references: bool
    ) -> list[Outcome]:
        started = self.clock.monotonic()
        async with self.db.transaction() as conn:
            book = await load_book(
                conn,
                commands,
                now=self.clock.now(),
                for_update=True,
                look_up_references=look_up_references,
            )
            outcomes = [apply(book, command) for command in commands]
            await self._write(conn, book, item_count=sum(command_weight(c) for c in commands))
        if self._reference_lookups_left > 0:
            self._reference_lookups_left -= 1
        self._batch_size.observe(len(commands))
        self._batch_seconds.observe(self.clock.monotonic() - started)
        self.batches_committed += 1
        self.commands_committed += len(commands)
        return outcomes

    async def _write(self, conn: asyncpg.Connection, book: Book, *, item_count: int) -> None:
        if not (
            book.new_transactions
            or book.outcome_updates
            or book.idempotency_rows
            or book.events
            or book.finished_async_bulks
        ):
            return
        batch_id = await repository.open_batch(
            conn,
            writer=self.writer,
            item_count=item_count,
            changes={balance_id: state.delta for balance_id, state in book.balances.items()},
            records=book.new_transactions,
        )
        await repository.update_hold_progress(conn, book.hold_progress)
        await repository.update_outcomes(conn, book.outcome_updates)
        await repository.insert_outbox(
            conn,
            batch_id,
            [
                (new_id(IdPrefix.EVENT), event_type, entity, payload)
                for event_type, entity, payload in book.events
            ],
        )
        await repository.insert_idempotency(conn, book.idempotency_rows)
        await repository.finish_async_bulks(conn, book.finished_async_bulks, now=book.now)
        for hook in self.batch_hooks:
            await hook(conn, book, batch_id)


VIRTUAL_PREFIX: Final = "virtual:"  # an indicator balance a dry run would create


async def load_book(
    conn: asyncpg.Connection,
    commands: Sequence[Command],
    *,
    now: datetime,
    for_update: bool,
    look_up_references: bool = True,
) -> Book:
    """Read everything the commands touch into a book: locked, with missing indicator balances
    created (`for_update`), or read-only, with missing indicators as virtual empty balances.

    Without `look_up_references` the book starts with no reference taken: the caller relies on
    `transactions_reference_unique` to refuse a batch that reuses one, and retries it with the
    lookup."""
    transactions, children = await repository.lock_transactions(
        conn, transaction_needs(commands), lock=for_update
    )
    needs = batch_needs(commands, transactions, children)
    if for_update:
        indicators = await repository.ensure_indicator_balances(
            conn, needs.indicators, [new_id(IdPrefix.BALANCE) for _ in needs.indicators]
        )
    else:
        indicators = await repository.find_indicator_balances(conn, needs.indicators)
    found = await repository.lock_balances(
        conn, needs.balance_ids | set(indicators.values()), lock=for_update
    )
    balances = {
        balance_id: BalanceState(balance_id, currency, figures)
        for balance_id, (currency, figures) in found.items()
    }
    for pair in needs.indicators - indicators.keys():
        virtual_id = VIRTUAL_PREFIX + pair[0]
        indicators[pair] = virtual_id
        balances[virtual_id] = BalanceState(virtual_id, pair[1], Figures())
    return Book(
        now=now,
        balances=balances,
        indicators=indicators,
        transactions=transactions,
        children=children,
        taken_references=(
            await repository.taken_references(conn, needs.references)
            if look_up_references
            else set()
        ),
        idempotency=await repository.idempotency_records(conn, needs.idempotency_keys),
        async_bulks=await repository.lock_async_bulks(conn, needs.async_bulks, lock=for_update),
    )
