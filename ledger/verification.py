"""`dwaybank ledger verify`: prove the books from PostgreSQL alone.

Four proofs, each a query over the stored rows (nothing trusted from memory): every currency's
balances and holds sum to zero; every balance equals the sum of the changes its commit batches
recorded; every balance equals what its transactions imply (applied moves, holds, commits,
voids); and every hold's recorded progress equals its commit and void children.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import asyncpg

from ledger import repository

FINDINGS_MAX: Final = 20  # a report lists the first offenders, not millions


@dataclass(slots=True)
class Report:
    """What verification looked at and what it found."""

    balances: int = 0
    transactions: int = 0
    batches: int = 0
    findings: list[str] = field(default_factory=list)

    @property
    def is_clean(self) -> bool:
        """True when every proof held."""
        return not self.findings


async def verify(conn: asyncpg.Connection) -> Report:
    """Run every proof in one repeatable-read snapshot (or inside the caller's transaction)."""
    if conn.is_in_transaction():
        return await _prove(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _prove(conn)


async def _prove(conn: asyncpg.Connection) -> Report:
    totals = await repository.ledger_totals(conn)
    report = Report(totals["balances"], totals["transactions"], totals["batches"])
    for row in await repository.currencies_not_summing_to_zero(conn):
        report.findings.append(
            f"currency {row['currency']} sums to {row['balance']} (holds {row['inflight']}), not zero"
        )
    for row in await repository.balances_not_matching_changes(conn, FINDINGS_MAX):
        report.findings.append(
            f"balance {row['balance_id']} differs from the sum of its recorded changes"
        )
    for row in await repository.balances_not_matching_transactions(conn, FINDINGS_MAX):
        report.findings.append(
            f"balance {row['balance_id']} differs from what its transactions imply"
        )
    for row in await repository.holds_not_matching_children(conn, FINDINGS_MAX):
        report.findings.append(
            f"hold {row['transaction_id']} records {row['committed_amount']} committed and"
            f" {row['voided_amount']} voided; its children say {row['committed']} and {row['voided']}"
        )
    return report
