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

from kit.errors import DomainError
from ledger.models import (
    Command,
    CommitInflight,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    VoidInflight,
)
from ledger.posting.book import (
    QUEUED_SUFFIX,
    REFUND_SUFFIX,
    REJECTION_REASON_KEY,
    BalanceState,
    Book,
    IdempotencyRow,
    is_indicator,
)
from ledger.posting.bulk import (
    bulk_error_body,
    post_bulk,
    refund_command,
    refund_transaction,
    run_scheduled,
    scheduled_command,
)
from ledger.posting.create import post_transaction
from ledger.posting.needs import Needs, batch_needs, transaction_needs
from ledger.posting.settle import commit_inflight, void_inflight

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


__all__ = [
    "QUEUED_SUFFIX",
    "REFUND_SUFFIX",
    "REJECTION_REASON_KEY",
    "BalanceState",
    "Book",
    "IdempotencyRow",
    "Needs",
    "apply",
    "batch_needs",
    "bulk_error_body",
    "commit_inflight",
    "is_indicator",
    "post_bulk",
    "post_transaction",
    "refund_command",
    "refund_transaction",
    "run_scheduled",
    "scheduled_command",
    "transaction_needs",
    "void_inflight",
]
