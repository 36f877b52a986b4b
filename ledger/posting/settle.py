"""Settling holds: commit all or part of an inflight hold, or void what it has left."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kit.money import to_minor_units
from ledger import wire
from ledger.errors import (
    AlreadyCommittedError,
    AlreadyVoidedError,
    CommitAmountExceededError,
    InvalidAmountError,
    NotInflightError,
    TransactionNotFoundError,
)
from ledger.models import (
    CommitInflight,
    Effect,
    Figures,
    Outcome,
    TransactionRecord,
    TransactionStatus,
    VoidInflight,
)
from ledger.posting.book import Book
from ledger.posting.create import outcome_of

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
    return Outcome(200, record=parent, extra={"queued": True, "outcome": outcome_of(child)})


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
