"""The working state of one batch: locked balances, staged rows, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

from ledger.errors import (
    DuplicateReferenceError,
)
from ledger.models import (
    Figures,
    TransactionRecord,
)

T = TypeVar("T")
QUEUED_SUFFIX: Final = "_q"
REFUND_SUFFIX: Final = "_refund"
REJECTION_REASON_KEY: Final = "blnk_rejection_reason"
ASYNC_BULK_PENDING: Final = "pending"
ASYNC_BULK_DONE: Final = "done"


def is_indicator(identifier: str) -> bool:
    """True for `@name` identifiers (General Ledger balances keyed by name and currency)."""
    return identifier.startswith("@")


@dataclass(slots=True)
class BalanceState:
    """A locked balance during a batch: its working figures and the batch's net change."""

    balance_id: str
    currency: str
    figures: Figures
    delta: Figures = field(default_factory=Figures)


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    """A response to remember under an Idempotency-Key."""

    key: str
    request_hash: str
    status_code: int
    body: dict[str, Any]


class Book:
    """The working state of one batch."""

    def __init__(
        self,
        *,
        now: datetime,
        balances: dict[str, BalanceState],
        indicators: dict[tuple[str, str], str],
        transactions: dict[str, TransactionRecord],
        children: dict[str, list[TransactionRecord]],
        taken_references: set[str],
        idempotency: dict[str, tuple[str, int, dict[str, Any]]],
        async_bulks: dict[str, str] | None = None,
    ) -> None:
        self.now = now
        self.balances = balances
        self.indicators = indicators
        self.transactions = transactions
        self.children = children
        self.taken_references = taken_references
        self.idempotency = idempotency
        self.async_bulks = async_bulks or {}  # durable bulk request -> its status, locked
        self.finished_async_bulks: list[str] = []
        self.new_transactions: list[TransactionRecord] = []
        self.hold_progress: dict[str, tuple[int, int]] = {}
        self.outcome_updates: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, dict[str, Any] | None]] = []
        self.idempotency_rows: list[IdempotencyRow] = []
        self._journal: list[Callable[[], None]] | None = None

    # ------------------------------------------------------------ checkpoints

    def run_atomically(self, work: Callable[[], T]) -> T:
        """Run `work`; if it raises, undo everything it did to the book and re-raise."""
        outer, self._journal = self._journal, []
        marks = (len(self.new_transactions), len(self.events), len(self.idempotency_rows))
        try:
            return work()
        except BaseException:
            for undo in reversed(self._journal):
                undo()
            del self.new_transactions[marks[0] :]
            del self.events[marks[1] :]
            del self.idempotency_rows[marks[2] :]
            raise
        finally:
            journal, self._journal = self._journal, outer
            if outer is not None:
                outer.extend(journal)

    def _remember(self, undo: Callable[[], None]) -> None:
        if self._journal is not None:
            self._journal.append(undo)

    # ------------------------------------------------------------ mutations

    def finish_async_bulk(self, batch_id: str) -> None:
        """Mark a durable bulk request done with this batch."""
        self.async_bulks[batch_id] = ASYNC_BULK_DONE
        self.finished_async_bulks.append(batch_id)

        def undo() -> None:
            self.async_bulks[batch_id] = ASYNC_BULK_PENDING
            self.finished_async_bulks.remove(batch_id)

        self._remember(undo)

    def take_reference(self, reference: str) -> None:
        """Claim a reference, or raise if it is used."""
        if reference in self.taken_references:
            raise DuplicateReferenceError(
                f"reference {reference} has already been used", reference=reference
            )
        self.taken_references.add(reference)
        self._remember(lambda: self.taken_references.discard(reference))

    def change_balance(self, state: BalanceState, change: Figures) -> None:
        """Apply `change` to a balance's working figures and to the batch's net change."""
        if self._journal is not None:
            before_figures, before_delta = state.figures.copy(), state.delta.copy()

            def undo() -> None:
                state.figures, state.delta = before_figures, before_delta

            self._journal.append(undo)
        state.figures.add(change)
        state.delta.add(change)

    def set_hold_progress(self, transaction_id: str, committed: int, voided: int) -> None:
        """Record how much of a hold is committed and voided."""
        previous = self.hold_progress.get(transaction_id)
        self.hold_progress[transaction_id] = (committed, voided)

        def undo() -> None:
            if previous is None:
                self.hold_progress.pop(transaction_id, None)
            else:
                self.hold_progress[transaction_id] = previous

        self._remember(undo)

    def add_transaction(self, record: TransactionRecord) -> None:
        """Stage a new transaction row."""
        self.new_transactions.append(record)
        self.transactions[record.transaction_id] = record

        def undo() -> None:
            self.transactions.pop(record.transaction_id, None)

        self._remember(undo)

    def emit(self, event_type: str, entity_id: str, payload: dict[str, Any] | None = None) -> None:
        """Stage an outbox event that is not a transaction's own (bulk results, monitor alerts).

        A transaction's events need no row: the commit batch that wrote it is the outbox entry,
        and the dispatcher reads the transactions of each committed batch."""
        self.events.append((event_type, entity_id, payload))
