"""Blnk's wire format: records to JSON bodies exactly as Blnk serialises them.

Money fields are bare JSON integers of any size (Go's *big.Int); `amount` is the float Blnk
derives from `precise_amount / precision`, with the exact text in `amount_string`. Times are
RFC 3339 in UTC; an unset time is Go's zero time, `0001-01-01T00:00:00Z`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final

from kit.money import format_amount, from_minor_units
from ledger.models import BalanceRecord, Leg, Outcome, TransactionRecord

ZERO_TIME: Final = "0001-01-01T00:00:00Z"
ZERO_TIME_VALUE: Final = datetime(1, 1, 1, tzinfo=UTC)  # the same instant, as a request parses it


def check_utc_years(value: datetime) -> datetime:
    """`value`, once it is known to fall within years 1-9999 in UTC.

    An offset can carry the first or last day of the calendar past them
    (`9999-12-31T23:59:59-14:00`); PostgreSQL's driver converts every time to UTC and cannot
    encode such an instant, and one that reached a table could never be read back or rendered.

    Raises:
        ValueError: the instant is before year 1 or after year 9999 in UTC.
    """
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time is outside years 1-9999 in UTC") from exc
    return value


def timestamp(value: datetime | None) -> str:
    """RFC 3339 in UTC with microseconds, or Go's zero time."""
    if value is None:
        return ZERO_TIME
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def amount_float(units: int, precision: int) -> float:
    """The float `amount` Blnk reports (the exact value travels in `amount_string`)."""
    return float(from_minor_units(units, precision))


def transaction_hash(
    *, amount: float, reference: str, currency: str, source: str, destination: str
) -> str:
    """Blnk's per-row hash: sha256 hex of amount (shortest form) + reference + currency + ends."""
    text = f"{_shortest(amount)}{reference}{currency}{source}{destination}"
    return hashlib.sha256(text.encode()).hexdigest()


def _shortest(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def leg_json(leg: Leg) -> dict[str, Any]:
    """One split leg."""
    body: dict[str, Any] = {"identifier": leg.identifier}
    if leg.distribution is not None:
        body["distribution"] = leg.distribution
    if leg.precise_distribution is not None:
        body["precise_distribution"] = str(leg.precise_distribution)
    if leg.narration:
        body["narration"] = leg.narration
    if leg.transaction_id:
        body["transaction_id"] = leg.transaction_id
    return body


def transaction_json(record: TransactionRecord) -> dict[str, Any]:
    """A transaction as Blnk's API returns it (plus `outcome` on queued requests)."""
    body: dict[str, Any] = {
        "precise_amount": record.precise_amount,
        "amount": amount_float(record.precise_amount, record.precision),
        "amount_string": format_amount(record.precise_amount, record.precision),
        "precision": record.precision,
        "overdraft_limit": float(record.overdraft_limit),
        "transaction_id": record.transaction_id,
        "parent_transaction": record.parent_transaction,
        "source": record.source,
        "destination": record.destination,
        "reference": record.reference,
        "currency": record.currency,
        "description": record.description,
        "status": record.status.value,
        "hash": record.hash,
        "allow_overdraft": record.allow_overdraft,
        "inflight": record.inflight,
        "skip_queue": record.skip_queue,
        "atomic": record.atomic,
        "created_at": timestamp(record.created_at),
        "effective_date": timestamp(record.effective_date or record.created_at),
        "scheduled_for": timestamp(record.scheduled_for),
        "inflight_expiry_date": timestamp(record.inflight_expiry_date),
        "inflight_commit_date": timestamp(record.inflight_commit_date),
        "meta_data": record.meta_data,
    }
    if record.sources is not None:
        body["sources"] = [leg_json(leg) for leg in record.sources]
    if record.destinations is not None:
        body["destinations"] = [leg_json(leg) for leg in record.destinations]
    if record.outcome is not None:
        body["outcome"] = record.outcome
    return body


def balance_json(record: BalanceRecord, *, with_queued: bool = False) -> dict[str, Any]:
    """A balance as Blnk's API returns it."""
    figures = record.figures
    body: dict[str, Any] = {
        "balance": figures.balance,
        "version": record.version,
        "inflight_balance": figures.inflight,
        "credit_balance": figures.credit,
        "inflight_credit_balance": figures.inflight_credit,
        "debit_balance": figures.debit,
        "inflight_debit_balance": figures.inflight_debit,
        "ledger_id": record.ledger_id,
        "identity_id": record.identity_id or "",
        "balance_id": record.balance_id,
        "currency": record.currency,
        "created_at": timestamp(record.created_at),
        "inflight_expires_at": timestamp(record.inflight_expires_at),
        "meta_data": record.meta_data,
        "track_fund_lineage": record.track_fund_lineage,
        "allocation_strategy": record.allocation_strategy,
    }
    if record.indicator:
        body["indicator"] = record.indicator
    if with_queued:
        # Queued requests are applied in the same database transaction that makes them
        # durable, so no debit or credit is ever waiting in a queue.
        body["queued_debit_balance"] = 0
        body["queued_credit_balance"] = 0
    return body


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    """The JSON body of a successful outcome."""
    if outcome.body is not None:
        return outcome.body
    if outcome.record is None:
        return {}
    body = transaction_json(outcome.record)
    if outcome.extra:
        body.update(outcome.extra)
    return body
