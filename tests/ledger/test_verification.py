"""`dwaybank ledger verify`: clean books pass; a balance edited behind the ledger's back fails."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from kit.db import Database
from ledger.engine import LedgerEngine
from ledger.models import CommitInflight, PostTransaction
from ledger.verification import verify

pytestmark = pytest.mark.db


def _post(source: str, destination: str, amount: int, **flags: object) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=f"v-{uuid.uuid4()}",
        precise_amount=amount,
        precision=100,
        currency="USD",
        description="",
        source=source,
        destination=destination,
        skip_queue=True,
        **flags,  # type: ignore[arg-type]
    )


async def _two_balances(db: Database) -> tuple[str, str]:
    ids = (f"bln_{uuid.uuid4()}", f"bln_{uuid.uuid4()}")
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
            " SELECT id, 'general_ledger_id', 'USD' FROM unnest($1::text[]) id",
            list(ids),
        )
    return ids


class TestVerify:
    async def test_real_history_verifies(self, db: Database, engine: LedgerEngine) -> None:
        """Transfers, holds and commits written by the engine pass every proof."""
        a, b = await _two_balances(db)
        outcomes = await engine.execute(
            [_post("@WorldUSD", a, 1_000, allow_overdraft=True), _post(a, b, 300)]
        )
        hold = (await engine.execute([_post(a, b, 200, inflight=True)]))[0]
        assert hold.record is not None
        await engine.execute(
            [
                CommitInflight(
                    target_id=hold.record.transaction_id,
                    child_id=f"txn_{uuid.uuid4()}",
                    child_reference=f"ref_{uuid.uuid4()}",
                    precise_amount=50,
                )
            ]
        )
        assert all(o.error is None for o in outcomes)
        async with db.connection() as conn:
            report = await verify(conn)
        assert report.is_clean, report.findings
        assert report.transactions > 0

    async def test_tampered_balance_is_found(self, conn: asyncpg.Connection) -> None:
        """A balance changed with raw SQL (figures kept self-consistent) fails verification."""
        balance_id = f"bln_{uuid.uuid4()}"
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency, credit_balance, balance)"
            " VALUES ($1, 'general_ledger_id', 'TAMPER', 500, 500)",
            balance_id,
        )
        report = await verify(conn)
        assert not report.is_clean
        text = " ".join(report.findings)
        assert "currency TAMPER sums to 500" in text
        assert f"balance {balance_id} differs from the sum of its recorded changes" in text
        assert f"balance {balance_id} differs from what its transactions imply" in text


class TestVerifyCommand:
    def test_command_reports_clean_books(self, database_dsn: str, tmp_path: object) -> None:
        """`dwaybank ledger verify` exits 0 and says what it checked."""
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(DATABASE_URL=database_dsn, DWAYBANK_DATA_DIR=str(tmp_path))
        result = subprocess.run(
            [sys.executable, "-m", "deployments.cli", "ledger", "verify"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ledger verified" in result.stdout
