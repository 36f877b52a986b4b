"""Refunds, bulk requests and scheduled rows whose time has come."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from kit.errors import AppError, DomainError
from ledger import wire
from ledger.errors import (
    AlreadyRefundedError,
    BulkAbandonedError,
    InvalidStatusActionError,
    TransactionNotFoundError,
)
from ledger.models import (
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    TransactionRecord,
    TransactionStatus,
)
from ledger.posting.book import ASYNC_BULK_PENDING, REFUND_SUFFIX, Book
from ledger.posting.create import execute_as_child, execute_immediately, post_transaction

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
    """POST /transactions/bulk (synchronous part). A durable request (`run_async`) runs only
    while it is pending, and is marked done by the batch that runs it, whatever its outcome."""
    if command.is_durable:
        if book.async_bulks.get(command.batch_id) != ASYNC_BULK_PENDING:
            return Outcome(200, body={"batch_id": command.batch_id, "status": "already_processed"})
        book.finish_async_bulk(command.batch_id)
    if command.abandon_reason is not None:
        error = BulkAbandonedError(command.abandon_reason)
        failure = bulk_error_body(error, command.batch_id)
        _emit_bulk_failed(book, command.batch_id, failure)
        return Outcome(error.status, body=failure)
    items = [replace(item, parent_transaction=command.batch_id) for item in command.items]
    status = "inflight" if command.inflight else "applied"
    if command.atomic:

        def post_all() -> None:
            for item in items:
                execute_immediately(book, item)

        try:
            book.run_atomically(post_all)
        except DomainError as error:
            failure = bulk_error_body(error, command.batch_id)
            _emit_bulk_failed(book, command.batch_id, failure)
            return Outcome(error.status, body=failure)
        _emit_bulk(book, command.batch_id, status, len(items))
        return Outcome(
            201,
            body={"batch_id": command.batch_id, "status": status, "transaction_count": len(items)},
        )
    results: list[dict[str, Any]] = []
    succeeded = 0
    for item in items:
        try:
            record = book.run_atomically(functools.partial(execute_immediately, book, item))
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
        _emit_bulk_failed(book, command.batch_id, body)
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


def _emit_bulk_failed(book: Book, batch_id: str, failure: dict[str, Any]) -> None:
    """Stage `bulk_transaction.failed` (Blnk's `{batch_id, status, timestamp, error}`, plus the
    error's code and, for a non-atomic bulk, every item's result). For `run_async` it is the
    only way the caller learns the outcome; the batch then writes this event and nothing else."""
    payload = {**failure, "status": "failed", "timestamp": wire.timestamp(book.now)}
    book.emit("bulk_transaction.failed", batch_id, payload)


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
        outcome, _ = execute_as_child(book, request, record.transaction_id)
    except DomainError as error:
        outcome = {"status": TransactionStatus.REJECTED.value, "reason": error.public_message}
    book.outcome_updates[record.transaction_id] = outcome
    return Outcome(200, record=replace(record, outcome=outcome))
