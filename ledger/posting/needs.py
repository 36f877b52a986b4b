"""What a batch must read (and lock) before its commands can be applied."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledger.models import (
    Command,
    CommitInflight,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    TransactionRecord,
    TransactionStatus,
    VoidInflight,
)
from ledger.posting.book import QUEUED_SUFFIX, is_indicator
from ledger.posting.bulk import refund_command, scheduled_command

# ---------------------------------------------------------------- what a batch must load


@dataclass(slots=True)
class Needs:
    """What the engine must read (and lock) before a batch can be applied."""

    transactions: set[str] = field(default_factory=set)
    balance_ids: set[str] = field(default_factory=set)
    indicators: set[tuple[str, str]] = field(default_factory=set)
    references: set[str] = field(default_factory=set)
    idempotency_keys: set[str] = field(default_factory=set)
    async_bulks: set[str] = field(default_factory=set)  # durable bulk requests to lock


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
    if not command.skip_queue:  # only the queued path posts a child under `R_q`
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


def _bulk_needs(needs: Needs, command: PostBulk) -> None:
    if command.is_durable:
        needs.async_bulks.add(command.batch_id)
    if command.abandon_reason is None:  # an abandoned bulk runs nothing
        for item in command.items:
            _post_needs(needs, item)


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
            _bulk_needs(needs, command)
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
