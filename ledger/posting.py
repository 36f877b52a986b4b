"""The posting rules: commands applied to a batch's working book. Pure; no I/O.

The engine locks every balance a batch touches (in id order) and reads its figures, then hands
this module a `Book` holding them. Commands are applied one by one in arrival order, so a
balance sees its postings in order and every funds check is made against exact, current
figures: what PostgreSQL holds plus what earlier commands of the same batch did. The book
collects what the batch must write (transactions, summed balance changes, hold progress,
outbox events, idempotency records); the engine writes it all in the same database
transaction and answers only after COMMIT.

Blnk's rules, kept: an applied posting debits the source and credits the destination; an
inflight posting moves the amount into the inflight pair instead; a commit moves (part of) a
hold from inflight to applied and a void releases what is left; the funds check counts
outstanding holds (`available = balance - inflight_debit`), skips entirely with
`allow_overdraft` and no limit, and honours a positive `overdraft_limit` either way; a queued
request is stored as QUEUED and executed as a child (`parent_transaction`, reference `R_q`);
split legs become children with references `R_1...` (queued) or `R-1...` (immediate); a refund
is the reverse posting with `allow_overdraft`, reference `<id>_refund`.

Atomic groups (an atomic bulk, the legs of an immediate split) run under a checkpoint: if any
member fails, everything the group did to the book is undone.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar

from kit.errors import AppError, DomainError
from kit.money import to_minor_units
from ledger import wire
from ledger.distribution import distribute
from ledger.errors import (
    AlreadyCommittedError,
    AlreadyRefundedError,
    AlreadyVoidedError,
    BalanceNotFoundError,
    CommitAmountExceededError,
    CurrencyMismatchError,
    DuplicateReferenceError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidAmountError,
    InvalidStatusActionError,
    NotInflightError,
    OverdraftLimitExceededError,
    TransactionNotFoundError,
    TransactionValidationError,
)
from ledger.models import (
    Command,
    CommitInflight,
    Effect,
    Figures,
    Leg,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    TransactionRecord,
    TransactionStatus,
    VoidInflight,
)

T = TypeVar("T")
QUEUED_SUFFIX: Final = "_q"
REFUND_SUFFIX: Final = "_refund"
REJECTION_REASON_KEY: Final = "blnk_rejection_reason"


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
    ) -> None:
        self.now = now
        self.balances = balances
        self.indicators = indicators
        self.transactions = transactions
        self.children = children
        self.taken_references = taken_references
        self.idempotency = idempotency
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


# ---------------------------------------------------------------- helpers


def _balance(book: Book, identifier: str, currency: str) -> BalanceState:
    if is_indicator(identifier):
        balance_id = book.indicators.get((identifier, currency))
        if balance_id is None:
            raise BalanceNotFoundError(f"balance {identifier} in {currency} not found")
    else:
        balance_id = identifier
    state = book.balances.get(balance_id)
    if state is None:
        raise BalanceNotFoundError(f"balance {identifier} not found", balance_id=identifier)
    if state.currency != currency:
        raise CurrencyMismatchError(
            f"balance {identifier} is in {state.currency}, the transaction in {currency}",
            balance_id=state.balance_id,
        )
    return state


def _check_funds(source: BalanceState, amount: int, command: PostTransaction) -> None:
    floor = command.overdraft_floor
    if floor is None:
        return
    if source.figures.available - amount >= floor:
        return
    if command.overdraft_limit > 0:
        raise OverdraftLimitExceededError(balance_id=source.balance_id, amount=amount)
    raise InsufficientFundsError(balance_id=source.balance_id, amount=amount)


def _record(
    command: PostTransaction,
    *,
    transaction_id: str,
    reference: str,
    amount: int,
    source: str,
    destination: str,
    status: TransactionStatus,
    parent: str = "",
    now: datetime,
    sources: tuple[Leg, ...] | None = None,
    destinations: tuple[Leg, ...] | None = None,
    outcome: dict[str, Any] | None = None,
    meta_data: dict[str, Any] | None = None,
    effect: Effect = Effect.NONE,
) -> TransactionRecord:
    created = command.created_at or now
    return TransactionRecord(
        transaction_id=transaction_id,
        parent_transaction=parent,
        source=source,
        destination=destination,
        reference=reference,
        precise_amount=amount,
        precision=command.precision,
        currency=command.currency,
        description=command.description,
        status=status,
        hash=wire.transaction_hash(
            amount=wire.amount_float(amount, command.precision),
            reference=reference,
            currency=command.currency,
            source=source,
            destination=destination,
        ),
        allow_overdraft=command.allow_overdraft,
        overdraft_limit=command.overdraft_limit,
        inflight=command.inflight,
        skip_queue=command.skip_queue,
        atomic=command.atomic,
        sources=sources,
        destinations=destinations,
        committed_amount=0,
        voided_amount=0,
        outcome=outcome,
        created_at=created,
        effective_date=command.effective_date,
        scheduled_for=command.scheduled_for,
        inflight_expiry_date=command.inflight_expiry_date,
        inflight_commit_date=command.inflight_commit_date,
        meta_data=dict(command.meta_data if meta_data is None else meta_data),
        effect=effect,
    )


def _post_one(
    book: Book,
    command: PostTransaction,
    *,
    transaction_id: str,
    reference: str,
    amount: int,
    source: str,
    destination: str,
    parent: str | None = None,
) -> TransactionRecord:
    """Move `amount` from source to destination (or hold it, for inflight); raise on refusal."""
    source_state = _balance(book, source, command.currency)
    destination_state = _balance(book, destination, command.currency)
    if source_state.balance_id == destination_state.balance_id:
        raise TransactionValidationError("source and destination cannot be the same balance")
    _check_funds(source_state, amount, command)
    book.take_reference(reference)
    if command.inflight:
        debit, credit = Figures(inflight_debit=amount), Figures(inflight_credit=amount)
        status, effect = TransactionStatus.INFLIGHT, Effect.INFLIGHT
    else:
        debit, credit = Figures(debit=amount), Figures(credit=amount)
        status, effect = TransactionStatus.APPLIED, Effect.APPLIED
    record = _record(
        command,
        transaction_id=transaction_id,
        reference=reference,
        amount=amount,
        source=source_state.balance_id,
        destination=destination_state.balance_id,
        status=status,
        parent=command.parent_transaction if parent is None else parent,
        now=book.now,
        effect=effect,
    )
    book.change_balance(source_state, debit)
    book.change_balance(destination_state, credit)
    book.add_transaction(record)
    return record


def _rejected_child(
    book: Book,
    command: PostTransaction,
    *,
    reference: str,
    amount: int,
    source: str,
    destination: str,
    parent: str,
    reason: str,
) -> TransactionRecord:
    book.take_reference(reference)
    record = _record(
        command,
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=reference,
        amount=amount,
        source=source,
        destination=destination,
        status=TransactionStatus.REJECTED,
        parent=parent,
        now=book.now,
        meta_data={**command.meta_data, REJECTION_REASON_KEY: reason},
    )
    book.add_transaction(record)
    return record


def _split_legs(command: PostTransaction) -> tuple[str, tuple[Leg, ...]] | None:
    """('sources' or 'destinations', legs) for a split, else None."""
    if command.sources:
        return "sources", command.sources
    if command.destinations:
        return "destinations", command.destinations
    return None


def _leg_ends(command: PostTransaction, side: str, leg: Leg) -> tuple[str, str]:
    if side == "sources":
        return leg.identifier, command.destination or ""
    return command.source or "", leg.identifier


# ---------------------------------------------------------------- create


def _execute_immediately(book: Book, command: PostTransaction) -> TransactionRecord:
    """skip_queue: post now; a refusal raises and nothing is written."""
    split = _split_legs(command)
    if split is None:
        return _post_one(
            book,
            command,
            transaction_id=command.transaction_id,
            reference=command.reference,
            amount=command.precise_amount,
            source=command.source or "",
            destination=command.destination or "",
        )
    side, legs = split
    amounts = distribute(command.precise_amount, legs, precision=command.precision)

    def post_all() -> tuple[Leg, ...]:
        posted: list[Leg] = []
        for number, (leg, amount) in enumerate(zip(legs, amounts, strict=True), start=1):
            source, destination = _leg_ends(command, side, leg)
            child = _post_one(
                book,
                command,
                transaction_id=f"txn_{uuid.uuid4()}",
                reference=f"{command.reference}-{number}",
                amount=amount,
                source=source,
                destination=destination,
                parent=command.transaction_id,
            )
            posted.append(replace(leg, transaction_id=child.transaction_id))
        return tuple(posted)

    legs_out = book.run_atomically(post_all)
    status = TransactionStatus.INFLIGHT if command.inflight else TransactionStatus.APPLIED
    # Blnk does not store the parent of an immediate split; only its legs exist as rows.
    return _record(
        command,
        transaction_id=command.transaction_id,
        reference=command.reference,
        amount=command.precise_amount,
        source=command.source or "",
        destination=command.destination or "",
        status=status,
        now=book.now,
        sources=legs_out if side == "sources" else None,
        destinations=legs_out if side == "destinations" else None,
    )


def _execute_as_child(
    book: Book, command: PostTransaction, parent_id: str
) -> tuple[dict[str, Any], tuple[Leg, ...] | None]:
    """Run a queued or scheduled request: children of `parent_id`; funds refusals become
    REJECTED children instead of errors. Returns the parent's outcome and its legs."""
    split = _split_legs(command)
    if split is None:
        child = _child_or_rejection(
            book,
            command,
            reference=command.reference + QUEUED_SUFFIX,
            amount=command.precise_amount,
            source=command.source or "",
            destination=command.destination or "",
            parent=parent_id,
        )
        reason = (
            child.meta_data.get(REJECTION_REASON_KEY)
            if child.status is TransactionStatus.REJECTED
            else None
        )
        return _outcome(child, reason), None
    side, legs = split
    amounts = distribute(command.precise_amount, legs, precision=command.precision)
    posted: list[Leg] = []
    statuses: set[str] = set()
    for number, (leg, amount) in enumerate(zip(legs, amounts, strict=True), start=1):
        source, destination = _leg_ends(command, side, leg)
        child = _child_or_rejection(
            book,
            command,
            reference=f"{command.reference}_{number}",
            amount=amount,
            source=source,
            destination=destination,
            parent=parent_id,
        )
        statuses.add(child.status.value)
        posted.append(replace(leg, transaction_id=child.transaction_id))
    status = statuses.pop() if len(statuses) == 1 else "PARTIAL"
    return {"status": status, "transaction_ids": [leg.transaction_id for leg in posted]}, tuple(
        posted
    )


def _child_or_rejection(
    book: Book,
    command: PostTransaction,
    *,
    reference: str,
    amount: int,
    source: str,
    destination: str,
    parent: str,
) -> TransactionRecord:
    """Post a child; a refusal for funds becomes a REJECTED child carrying the reason."""
    try:
        return book.run_atomically(
            lambda: _post_one(
                book,
                command,
                transaction_id=f"txn_{uuid.uuid4()}",
                reference=reference,
                amount=amount,
                source=source,
                destination=destination,
                parent=parent,
            )
        )
    except InsufficientFundsError as refusal:
        return _rejected_child(
            book,
            command,
            reference=reference,
            amount=amount,
            source=source,
            destination=destination,
            parent=parent,
            reason=refusal.message,
        )


def _outcome(child: TransactionRecord, reason: str | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"status": child.status.value, "transaction_id": child.transaction_id}
    if reason is not None:
        outcome["reason"] = reason
    return outcome


def _replay_or_claim(book: Book, command: PostTransaction) -> Outcome | None:
    claim = command.idempotency
    if claim is None:
        return None
    stored = book.idempotency.get(claim.key)
    if stored is None:
        return None
    request_hash, status_code, body = stored
    if request_hash != claim.request_hash:
        raise IdempotencyConflictError(idempotency_key=claim.key)
    return Outcome(status_code=status_code, body=body, extra={"idempotent_replay": True})


def _remember_response(book: Book, command: PostTransaction, outcome: Outcome) -> Outcome:
    claim = command.idempotency
    if claim is not None:
        body = wire.outcome_body(outcome)
        book.idempotency[claim.key] = (claim.request_hash, outcome.status_code, body)
        book.idempotency_rows.append(
            IdempotencyRow(claim.key, claim.request_hash, outcome.status_code, body)
        )
    return outcome


def post_transaction(book: Book, command: PostTransaction) -> Outcome:
    """POST /transactions."""
    replay = _replay_or_claim(book, command)
    if replay is not None:
        return replay
    if command.scheduled_for is not None and command.scheduled_for > book.now:
        book.take_reference(command.reference)
        record = _record(
            command,
            transaction_id=command.transaction_id,
            reference=command.reference,
            amount=command.precise_amount,
            source=command.source or "",
            destination=command.destination or "",
            status=TransactionStatus.SCHEDULED,
            now=book.now,
            sources=command.sources,
            destinations=command.destinations,
        )
        book.add_transaction(record)
        return _remember_response(book, command, Outcome(201, record=record))
    if command.skip_queue:
        record = _execute_immediately(book, command)
        return _remember_response(book, command, Outcome(201, record=record))
    return _remember_response(book, command, Outcome(201, record=_queue_and_run(book, command)))


def _queue_and_run(book: Book, command: PostTransaction) -> TransactionRecord:
    """The queued path: store the request as QUEUED, run it as a child in the same batch."""
    book.take_reference(command.reference)
    # The children's balances must exist before the parent is stored: an unknown balance is
    # refused now, with nothing written, rather than leaving a QUEUED row that can never run.
    _check_ends_exist(book, command)
    outcome, legs = _execute_as_child(book, command, command.transaction_id)
    record = _record(
        command,
        transaction_id=command.transaction_id,
        reference=command.reference,
        amount=command.precise_amount,
        source=command.source or "",
        destination=command.destination or "",
        status=TransactionStatus.QUEUED,
        now=book.now,
        sources=legs if command.sources else None,
        destinations=legs if command.destinations else None,
        outcome=outcome,
        meta_data={**command.meta_data, "QUEUED_PARENT_TRANSACTION": command.transaction_id},
    )
    book.add_transaction(record)
    return record


def _check_ends_exist(book: Book, command: PostTransaction) -> None:
    split = _split_legs(command)
    identifiers: list[str] = []
    if split is None:
        identifiers = [command.source or "", command.destination or ""]
    else:
        side, legs = split
        identifiers = [leg.identifier for leg in legs]
        identifiers.append((command.destination if side == "sources" else command.source) or "")
    for identifier in identifiers:
        _balance(book, identifier, command.currency)


# ---------------------------------------------------------------- inflight


def _resolve_hold(book: Book, target_id: str) -> TransactionRecord:
    record = book.transactions.get(target_id)
    if record is None:
        raise TransactionNotFoundError(
            f"transaction {target_id} not found", transaction_id=target_id
        )
    if record.status in (TransactionStatus.QUEUED, TransactionStatus.SCHEDULED):
        holds = [
            c for c in book.children.get(target_id, []) if c.status is TransactionStatus.INFLIGHT
        ]
        if not holds:
            raise NotInflightError(transaction_id=target_id)
        record = holds[0]
    if record.status is not TransactionStatus.INFLIGHT:
        raise NotInflightError(transaction_id=record.transaction_id)
    return record


def _hold_progress(book: Book, hold: TransactionRecord) -> tuple[int, int]:
    return book.hold_progress.get(hold.transaction_id, (hold.committed_amount, hold.voided_amount))


def _settle(
    book: Book,
    hold: TransactionRecord,
    *,
    amount: int,
    child_id: str,
    child_reference: str,
    is_commit: bool,
    now: datetime,
) -> TransactionRecord:
    source = book.balances[hold.source]
    destination = book.balances[hold.destination]
    if is_commit:
        source_change = Figures(debit=amount, inflight_debit=-amount)
        destination_change = Figures(credit=amount, inflight_credit=-amount)
        status, effect = TransactionStatus.APPLIED, Effect.COMMIT
    else:
        source_change = Figures(inflight_debit=-amount)
        destination_change = Figures(inflight_credit=-amount)
        status, effect = TransactionStatus.VOID, Effect.VOID
    book.take_reference(child_reference)
    child = replace(
        hold,
        transaction_id=child_id,
        parent_transaction=hold.transaction_id,
        reference=child_reference,
        precise_amount=amount,
        status=status,
        effect=effect,
        inflight=False,
        committed_amount=0,
        voided_amount=0,
        outcome=None,
        created_at=now,
        effective_date=now,
        hash=wire.transaction_hash(
            amount=wire.amount_float(amount, hold.precision),
            reference=child_reference,
            currency=hold.currency,
            source=hold.source,
            destination=hold.destination,
        ),
    )
    book.change_balance(source, source_change)
    book.change_balance(destination, destination_change)
    book.add_transaction(child)
    committed, voided = _hold_progress(book, hold)
    if is_commit:
        committed += amount
    else:
        voided += amount
    book.set_hold_progress(hold.transaction_id, committed, voided)
    return child


def _settled_response(
    book: Book, hold: TransactionRecord, child: TransactionRecord, *, skip_queue: bool
) -> Outcome:
    if skip_queue:
        return Outcome(200, record=child)
    committed, voided = book.hold_progress[hold.transaction_id]
    parent = replace(hold, committed_amount=committed, voided_amount=voided)
    return Outcome(200, record=parent, extra={"queued": True, "outcome": _outcome(child)})


def commit_inflight(book: Book, command: CommitInflight) -> Outcome:
    """Commit all or part of what a hold has left."""
    hold = _resolve_hold(book, command.target_id)
    committed, voided = _hold_progress(book, hold)
    if voided:
        raise AlreadyVoidedError(transaction_id=hold.transaction_id)
    remaining = hold.precise_amount - committed
    if remaining <= 0:
        raise AlreadyCommittedError(transaction_id=hold.transaction_id)
    if command.precise_amount is not None:
        if command.precise_amount <= 0:
            raise InvalidAmountError("precise_amount must be greater than zero")
        amount = command.precise_amount
    elif command.amount is not None and command.amount != 0:
        if command.amount < 0:
            raise InvalidAmountError("amount must not be negative")
        amount = to_minor_units(command.amount, hold.precision)
    else:
        amount = remaining
    if amount > remaining:
        raise CommitAmountExceededError(
            f"cannot commit more than {remaining}", remaining=remaining, requested=amount
        )
    child = _settle(
        book,
        hold,
        amount=amount,
        child_id=command.child_id,
        child_reference=command.child_reference,
        is_commit=True,
        now=command.created_at or book.now,
    )
    return _settled_response(book, hold, child, skip_queue=command.skip_queue)


def void_inflight(book: Book, command: VoidInflight) -> Outcome:
    """Release what a hold has left."""
    hold = _resolve_hold(book, command.target_id)
    committed, voided = _hold_progress(book, hold)
    if voided:
        raise AlreadyVoidedError(transaction_id=hold.transaction_id)
    remaining = hold.precise_amount - committed
    if remaining <= 0:
        raise AlreadyCommittedError(
            "cannot void. Transaction already committed", transaction_id=hold.transaction_id
        )
    child = _settle(
        book,
        hold,
        amount=remaining,
        child_id=command.child_id,
        child_reference=command.child_reference,
        is_commit=False,
        now=command.created_at or book.now,
    )
    return _settled_response(book, hold, child, skip_queue=command.skip_queue)


# ---------------------------------------------------------------- refund, bulk, scheduled


def refund_command(original: TransactionRecord, command: RefundTransaction) -> PostTransaction:
    """The posting that reverses `original` (always allowed to overdraw, like Blnk)."""
    return PostTransaction(
        transaction_id=command.refund_id,
        reference=original.transaction_id + REFUND_SUFFIX,
        precise_amount=original.precise_amount,
        precision=original.precision,
        currency=original.currency,
        description=command.description or original.description,
        source=original.destination,
        destination=original.source,
        allow_overdraft=True,
        skip_queue=command.skip_queue,
        created_at=command.created_at,
        meta_data={**original.meta_data, **command.meta_data, "refund_of": original.transaction_id},
    )


def refund_transaction(book: Book, command: RefundTransaction) -> Outcome:
    """POST /refund-transaction/{id}."""
    original = book.transactions.get(command.original_id)
    if original is None:
        raise TransactionNotFoundError(f"transaction {command.original_id} not found")
    if original.status is not TransactionStatus.APPLIED:
        raise InvalidStatusActionError(
            f"only APPLIED transactions can be refunded; this one is {original.status.value}"
        )
    if original.transaction_id + REFUND_SUFFIX in book.taken_references:
        raise AlreadyRefundedError(transaction_id=original.transaction_id)
    return post_transaction(book, refund_command(original, command))


def post_bulk(book: Book, command: PostBulk) -> Outcome:
    """POST /transactions/bulk (synchronous part)."""
    items = [replace(item, parent_transaction=command.batch_id) for item in command.items]
    status = "inflight" if command.inflight else "applied"
    if command.atomic:

        def post_all() -> None:
            for item in items:
                _execute_immediately(book, item)

        try:
            book.run_atomically(post_all)
        except DomainError as error:
            return Outcome(error.status, body=bulk_error_body(error, command.batch_id))
        _emit_bulk(book, command.batch_id, status, len(items))
        return Outcome(
            201,
            body={"batch_id": command.batch_id, "status": status, "transaction_count": len(items)},
        )
    results: list[dict[str, Any]] = []
    succeeded = 0
    for item in items:
        try:
            record = book.run_atomically(functools.partial(_execute_immediately, book, item))
        except DomainError as error:
            results.append(
                {
                    "reference": item.reference,
                    "status": "failed",
                    "code": error.code,
                    "message": error.public_message,
                }
            )
            continue
        succeeded += 1
        results.append(
            {"reference": item.reference, "status": status, "transaction_id": record.transaction_id}
        )
    if succeeded == 0:
        first = next(r for r in results if r["status"] == "failed")
        body = {
            "error": first["message"],
            "batch_id": command.batch_id,
            "error_detail": {"code": first["code"], "message": first["message"]},
            "results": results,
        }
        return Outcome(400, body=body)
    _emit_bulk(book, command.batch_id, status, succeeded)
    return Outcome(
        201,
        body={
            "batch_id": command.batch_id,
            "status": status,
            "transaction_count": succeeded,
            "failed_count": len(items) - succeeded,
            "results": results,
        },
    )


def bulk_error_body(error: AppError, batch_id: str) -> dict[str, Any]:
    """Blnk's bulk failure body: the error plus the batch id."""
    detail: dict[str, Any] = {"code": error.code, "message": error.public_message}
    if error.public_details:
        detail["details"] = error.public_details
    return {"error": error.public_message, "batch_id": batch_id, "error_detail": detail}


def _emit_bulk(book: Book, batch_id: str, status: str, count: int) -> None:
    payload = {
        "batch_id": batch_id,
        "status": status,
        "timestamp": wire.timestamp(book.now),
        "transaction_count": count,
    }
    book.emit(f"bulk_transaction.{status}", batch_id, payload)


def scheduled_command(record: TransactionRecord) -> PostTransaction:
    """The request a SCHEDULED row stands for."""
    return PostTransaction(
        transaction_id=record.transaction_id,
        reference=record.reference,
        precise_amount=record.precise_amount,
        precision=record.precision,
        currency=record.currency,
        description=record.description,
        source=record.source or None,
        destination=record.destination or None,
        sources=record.sources,
        destinations=record.destinations,
        allow_overdraft=record.allow_overdraft,
        overdraft_limit=record.overdraft_limit,
        inflight=record.inflight,
        skip_queue=False,
        atomic=record.atomic,
        created_at=record.created_at,
        effective_date=record.effective_date,
        inflight_expiry_date=record.inflight_expiry_date,
        inflight_commit_date=record.inflight_commit_date,
        meta_data=record.meta_data,
    )


def run_scheduled(book: Book, command: RunScheduled) -> Outcome:
    """Execute a SCHEDULED row as a child, and record the outcome on the row."""
    record = book.transactions.get(command.transaction_id)
    if record is None:
        raise TransactionNotFoundError(f"transaction {command.transaction_id} not found")
    if record.status is not TransactionStatus.SCHEDULED or record.outcome is not None:
        raise InvalidStatusActionError("the transaction is not waiting for its schedule")
    request = scheduled_command(record)
    try:
        outcome, _ = _execute_as_child(book, request, record.transaction_id)
    except DomainError as error:
        outcome = {"status": TransactionStatus.REJECTED.value, "reason": error.public_message}
    book.outcome_updates[record.transaction_id] = outcome
    return Outcome(200, record=replace(record, outcome=outcome))


# ---------------------------------------------------------------- dispatch


def _is_single_step(command: Command) -> bool:
    """True for a plain immediate transfer: every check runs before its first change, so a
    refusal leaves the book untouched without a checkpoint."""
    return (
        isinstance(command, PostTransaction)
        and command.skip_queue
        and command.idempotency is None
        and command.scheduled_for is None
        and not command.sources
        and not command.destinations
    )


def apply(book: Book, command: Command) -> Outcome:
    """Apply one command; a domain refusal becomes an error outcome and changes nothing."""
    try:
        if _is_single_step(command):
            return _dispatch(book, command)
        return book.run_atomically(lambda: _dispatch(book, command))
    except DomainError as error:
        return Outcome(error.status, error=error)


def _dispatch(book: Book, command: Command) -> Outcome:
    if isinstance(command, PostTransaction):
        return post_transaction(book, command)
    if isinstance(command, CommitInflight):
        return commit_inflight(book, command)
    if isinstance(command, VoidInflight):
        return void_inflight(book, command)
    if isinstance(command, RefundTransaction):
        return refund_transaction(book, command)
    if isinstance(command, PostBulk):
        return post_bulk(book, command)
    return run_scheduled(book, command)


# ---------------------------------------------------------------- what a batch must load


@dataclass(slots=True)
class Needs:
    """What the engine must read (and lock) before a batch can be applied."""

    transactions: set[str] = field(default_factory=set)
    balance_ids: set[str] = field(default_factory=set)
    indicators: set[tuple[str, str]] = field(default_factory=set)
    references: set[str] = field(default_factory=set)
    idempotency_keys: set[str] = field(default_factory=set)


def _post_needs(needs: Needs, command: PostTransaction) -> None:
    identifiers = [command.source, command.destination]
    identifiers += [leg.identifier for leg in command.sources or ()]
    identifiers += [leg.identifier for leg in command.destinations or ()]
    for identifier in identifiers:
        if not identifier:
            continue
        if is_indicator(identifier):
            needs.indicators.add((identifier, command.currency))
        else:
            needs.balance_ids.add(identifier)
    legs = len(command.sources or command.destinations or ())
    needs.references.add(command.reference)
    needs.references.add(command.reference + QUEUED_SUFFIX)
    for number in range(1, legs + 1):
        needs.references.update({f"{command.reference}-{number}", f"{command.reference}_{number}"})
    if command.idempotency is not None:
        needs.idempotency_keys.add(command.idempotency.key)


def transaction_needs(commands: Iterable[Command]) -> set[str]:
    """Transaction rows the batch must read first (holds, refund originals, scheduled rows)."""
    ids: set[str] = set()
    for command in commands:
        if isinstance(command, CommitInflight | VoidInflight):
            ids.add(command.target_id)
        elif isinstance(command, RefundTransaction):
            ids.add(command.original_id)
        elif isinstance(command, RunScheduled):
            ids.add(command.transaction_id)
    return ids


def batch_needs(
    commands: Iterable[Command],
    transactions: dict[str, TransactionRecord],
    children: dict[str, list[TransactionRecord]],
) -> Needs:
    """Balances, indicators, references and idempotency keys the batch touches."""
    needs = Needs()
    for command in commands:
        if isinstance(command, PostTransaction):
            _post_needs(needs, command)
        elif isinstance(command, PostBulk):
            for item in command.items:
                _post_needs(needs, item)
        elif isinstance(command, CommitInflight | VoidInflight):
            record = transactions.get(command.target_id)
            holds = [record] if record is not None else []
            holds += children.get(command.target_id, [])
            for hold in holds:
                if hold.status is TransactionStatus.INFLIGHT:
                    needs.balance_ids.update({hold.source, hold.destination})
        elif isinstance(command, RefundTransaction):
            original = transactions.get(command.original_id)
            if original is not None:
                _post_needs(needs, refund_command(original, command))
        else:
            record = transactions.get(command.transaction_id)
            if record is not None:
                _post_needs(needs, scheduled_command(record))
    return needs


def decimal_or_zero(value: Any) -> Decimal:
    """A stored NUMERIC as Decimal (None as zero)."""
    return Decimal(0) if value is None else Decimal(value)
