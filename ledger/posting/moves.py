"""Posting primitives: find a balance, check funds, build a row, move an amount."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kit.ids import IdPrefix, new_id
from ledger import wire
from ledger.errors import (
    BalanceNotFoundError,
    CurrencyMismatchError,
    InsufficientFundsError,
    OverdraftLimitExceededError,
    TransactionValidationError,
)
from ledger.models import (
    Effect,
    Figures,
    Leg,
    PostTransaction,
    TransactionRecord,
    TransactionStatus,
)
from ledger.posting.book import REJECTION_REASON_KEY, BalanceState, Book, is_indicator

# ---------------------------------------------------------------- helpers


def balance_of(book: Book, identifier: str, currency: str) -> BalanceState:
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


def check_funds(source: BalanceState, amount: int, command: PostTransaction) -> None:
    floor = command.overdraft_floor
    if floor is None:
        return
    if source.figures.available - amount >= floor:
        return
    if command.overdraft_limit > 0:
        raise OverdraftLimitExceededError(balance_id=source.balance_id, amount=amount)
    raise InsufficientFundsError(balance_id=source.balance_id, amount=amount)


def make_record(
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


def post_one(
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
    source_state = balance_of(book, source, command.currency)
    destination_state = balance_of(book, destination, command.currency)
    if source_state.balance_id == destination_state.balance_id:
        raise TransactionValidationError("source and destination cannot be the same balance")
    check_funds(source_state, amount, command)
    book.take_reference(reference)
    if command.inflight:
        debit, credit = Figures(inflight_debit=amount), Figures(inflight_credit=amount)
        status, effect = TransactionStatus.INFLIGHT, Effect.INFLIGHT
    else:
        debit, credit = Figures(debit=amount), Figures(credit=amount)
        status, effect = TransactionStatus.APPLIED, Effect.APPLIED
    record = make_record(
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


def rejected_child(
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
    record = make_record(
        command,
        transaction_id=new_id(IdPrefix.TRANSACTION),
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


def split_legs(command: PostTransaction) -> tuple[str, tuple[Leg, ...]] | None:
    """('sources' or 'destinations', legs) for a split, else None."""
    if command.sources:
        return "sources", command.sources
    if command.destinations:
        return "destinations", command.destinations
    return None


def leg_ends(command: PostTransaction, side: str, leg: Leg) -> tuple[str, str]:
    if side == "sources":
        return leg.identifier, command.destination or ""
    return command.source or "", leg.identifier
