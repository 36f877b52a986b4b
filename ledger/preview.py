"""Dry runs: what a request would do, computed by the same posting rules, written nowhere.

The book is loaded read-only (no locks; indicator balances that do not exist yet appear as
virtual empty balances), the command is applied to it, and the preview reports each touched
balance before and after, in Blnk's TransactionPreview shape (amounts as decimal strings).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ledger.engine import VIRTUAL_PREFIX, load_book
from ledger.models import Command, CommitInflight, Figures, PostBulk, PostTransaction, VoidInflight
from ledger.posting import Book, apply


def _figures_json(prefix: str, figures: Figures) -> dict[str, str]:
    return {
        f"{prefix}_balance": str(figures.balance),
        f"{prefix}_credit_balance": str(figures.credit),
        f"{prefix}_debit_balance": str(figures.debit),
        f"{prefix}_inflight_balance": str(figures.inflight),
        f"{prefix}_inflight_credit_balance": str(figures.inflight_credit),
        f"{prefix}_inflight_debit_balance": str(figures.inflight_debit),
    }


def _balances(
    book: Book, before: dict[str, Figures], roles: dict[str, str]
) -> list[dict[str, Any]]:
    rows = []
    for balance_id, state in book.balances.items():
        if state.delta.is_zero():
            continue
        row: dict[str, Any] = {
            "balance_id": balance_id.removeprefix(VIRTUAL_PREFIX)
            if balance_id.startswith(VIRTUAL_PREFIX)
            else balance_id,
            "role": roles.get(
                balance_id,
                "source" if state.delta.debit or state.delta.inflight_debit else "destination",
            ),
            "currency": state.currency,
        }
        if balance_id.startswith(VIRTUAL_PREFIX):
            row["virtual"] = True
        row.update(_figures_json("current", before[balance_id]))
        row.update(_figures_json("resulting", state.figures))
        rows.append(row)
    return rows


async def _simulate(
    conn: asyncpg.Connection, command: Command, now: datetime
) -> tuple[Book, dict[str, Figures], Any]:
    async with conn.transaction(readonly=True):
        book = await load_book(conn, [command], now=now, for_update=False)
    before = {balance_id: state.figures.copy() for balance_id, state in book.balances.items()}
    outcome = apply(book, command)
    return book, before, outcome


def _rejection(outcome: Any) -> dict[str, Any] | None:
    if outcome.error is None:
        return None
    return {
        "code": outcome.error.code,
        "reason": outcome.error.public_message,
        "message": outcome.error.public_message,
    }


async def preview_transaction(
    conn: asyncpg.Connection, command: PostTransaction, *, now: datetime
) -> dict[str, Any]:
    """POST /transactions with dry_run."""
    book, before, outcome = await _simulate(conn, command, now)
    rejection = _rejection(outcome)
    body: dict[str, Any] = {
        "dry_run": True,
        "would_apply": rejection is None,
        "operation": "transaction",
        "status": "INFLIGHT" if command.inflight else "APPLIED",
        "reference": command.reference,
        "currency": command.currency,
        "amount": float(command.precise_amount) / command.precision,
        "precise_amount": str(command.precise_amount),
        "precision": command.precision,
        "balances": _balances(book, before, {}),
    }
    if rejection is not None:
        body["rejection"] = rejection
    return body


async def preview_bulk(
    conn: asyncpg.Connection, command: PostBulk, *, now: datetime
) -> dict[str, Any]:
    """POST /transactions/bulk with dry_run: the batch applied cumulatively."""
    book, before, outcome = await _simulate(conn, command, now)
    rejection = _rejection(outcome) or (
        {
            "code": outcome.body["error_detail"]["code"],
            "reason": outcome.body["error"],
            "message": outcome.body["error"],
        }
        if outcome.body and "error" in outcome.body
        else None
    )
    return {
        "dry_run": True,
        "would_apply": rejection is None,
        "atomic": command.atomic,
        "cumulative": True,
        "transaction_count": len(command.items),
        "balances": _balances(book, before, {}),
        **({"rejection": rejection} if rejection else {}),
    }


async def preview_inflight(
    conn: asyncpg.Connection, command: CommitInflight | VoidInflight, *, now: datetime
) -> dict[str, Any]:
    """PUT /transactions/inflight/{id} with dry_run."""
    book, before, outcome = await _simulate(conn, command, now)
    rejection = _rejection(outcome)
    body: dict[str, Any] = {
        "dry_run": True,
        "would_apply": rejection is None,
        "operation": "commit" if isinstance(command, CommitInflight) else "void",
        "balances": _balances(book, before, {}),
    }
    if outcome.record is not None:
        body.update(
            {
                "status": outcome.record.status.value,
                "currency": outcome.record.currency,
                "precise_amount": str(outcome.record.precise_amount),
                "precision": outcome.record.precision,
            }
        )
    if rejection is not None:
        body["rejection"] = rejection
    return body
