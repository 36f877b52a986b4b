"""Creating transactions: immediate, queued (a child of a QUEUED row), scheduled, split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kit.ids import IdPrefix, new_id
from ledger import wire
from ledger.distribution import distribute
from ledger.errors import (
    IdempotencyConflictError,
    InsufficientFundsError,
)
from ledger.models import (
    Leg,
    Outcome,
    PostTransaction,
    TransactionRecord,
    TransactionStatus,
)
from ledger.posting.book import QUEUED_SUFFIX, REJECTION_REASON_KEY, Book, IdempotencyRow
from ledger.posting.moves import (
    balance_of,
    leg_ends,
    make_record,
    post_one,
    rejected_child,
    split_legs,
)

# ---------------------------------------------------------------- create


def execute_immediately(book: Book, command: PostTransaction) -> TransactionRecord:
    """skip_queue: post now; a refusal raises and nothing is written."""
    split = split_legs(command)
    if split is None:
        return post_one(
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
            source, destination = leg_ends(command, side, leg)
            child = post_one(
                book,
                command,
                transaction_id=new_id(IdPrefix.TRANSACTION),
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
    return make_record(
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


def execute_as_child(
    book: Book, command: PostTransaction, parent_id: str
) -> tuple[dict[str, Any], tuple[Leg, ...] | None]:
    """Run a queued or scheduled request: children of `parent_id`; funds refusals become
    REJECTED children instead of errors. Returns the parent's outcome and its legs."""
    split = split_legs(command)
    if split is None:
        child = child_or_rejection(
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
        return outcome_of(child, reason), None
    side, legs = split
    amounts = distribute(command.precise_amount, legs, precision=command.precision)
    posted: list[Leg] = []
    statuses: set[str] = set()
    for number, (leg, amount) in enumerate(zip(legs, amounts, strict=True), start=1):
        source, destination = leg_ends(command, side, leg)
        child = child_or_rejection(
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


def child_or_rejection(
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
            lambda: post_one(
                book,
                command,
                transaction_id=new_id(IdPrefix.TRANSACTION),
                reference=reference,
                amount=amount,
                source=source,
                destination=destination,
                parent=parent,
            )
        )
    except InsufficientFundsError as refusal:
        return rejected_child(
            book,
            command,
            reference=reference,
            amount=amount,
            source=source,
            destination=destination,
            parent=parent,
            reason=refusal.message,
        )


def outcome_of(child: TransactionRecord, reason: str | None = None) -> dict[str, Any]:
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
        record = make_record(
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
        record = execute_immediately(book, command)
        return _remember_response(book, command, Outcome(201, record=record))
    return _remember_response(book, command, Outcome(201, record=_queue_and_run(book, command)))


def _queue_and_run(book: Book, command: PostTransaction) -> TransactionRecord:
    """The queued path: store the request as QUEUED, run it as a child in the same batch."""
    book.take_reference(command.reference)
    # The children's balances must exist before the parent is stored: an unknown balance is
    # refused now, with nothing written, rather than leaving a QUEUED row that can never run.
    _check_ends_exist(book, command)
    outcome, legs = execute_as_child(book, command, command.transaction_id)
    record = make_record(
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
    split = split_legs(command)
    identifiers: list[str] = []
    if split is None:
        identifiers = [command.source or "", command.destination or ""]
    else:
        side, legs = split
        identifiers = [leg.identifier for leg in legs]
        identifiers.append((command.destination if side == "sources" else command.source) or "")
    for identifier in identifiers:
        balance_of(book, identifier, command.currency)
