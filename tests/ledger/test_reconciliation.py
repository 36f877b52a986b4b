"""Reconciliation through Blnk's own Python SDK, over real HTTP, against the real ledger.

Each test posts its own ledger transactions with amounts and references no other test uses,
writes a statement (a CSV file, or records sent inline), starts a run with the SDK and polls
`GET /reconciliation/{id}` until the background run finishes. The assertions check the counts,
the match rows written to PostgreSQL, and the `reconciled` notes on the matched transactions.
Bypass tests write match rows with raw SQL to prove the database refuses a second use of a
transaction in a one_to_one run and any match row of a dry run.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from kit.db import Database

pytestmark = pytest.mark.db

RUN_WAIT_S = 20.0


def _amount() -> Decimal:
    """A major-unit amount with cents that no other test uses (in practice)."""
    return Decimal(random.randrange(10_000_000, 99_999_999)) / 100


def _post(
    client: Any, balance_id: str, amount: Decimal, reference: str, description: str = "ledger side"
) -> str:
    response = client.transactions.create(
        {
            "precise_amount": int(amount * 100),
            "precision": 100,
            "reference": reference,
            "currency": "USD",
            "description": description,
            "source": "@WorldUSD",
            "destination": balance_id,
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )
    assert response.status == 201, response.to_dict()
    transaction_id: str = response.data["transaction_id"]
    return transaction_id


def _balance(client: Any) -> str:
    ledger_id = client.ledgers.create({"name": "reconciliation"}).data["ledger_id"]
    balance_id: str = client.ledger_balances.create(
        {"ledger_id": ledger_id, "currency": "USD"}
    ).data["balance_id"]
    return balance_id


def _rule(client: Any, *criteria: dict[str, Any]) -> str:
    response = client.reconciliation.create_matching_rule(
        {"name": f"rule-{uuid.uuid4().hex[:6]}", "description": "test", "criteria": list(criteria)}
    )
    assert response.status == 201, response.to_dict()
    rule_id: str = response.data["rule_id"]
    return rule_id


def _upload(client: Any, path: str, source: str) -> Any:
    # A stream, not the path: given a path the SDK opens the file and never closes it.
    with Path(path).open("rb") as stream:
        return client.reconciliation.upload(stream, source)


def _wait(client: Any, reconciliation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_WAIT_S
    while True:
        response = client.reconciliation.get(reconciliation_id)
        assert response.status == 200, response.to_dict()
        if response.data["status"] in {"completed", "failed"} or time.monotonic() > deadline:
            data: dict[str, Any] = response.data
            return data
        time.sleep(0.05)


@pytest.fixture
def statement(tmp_path: Path) -> Any:
    """Write a CSV statement; returns its path."""

    def write(
        rows: list[tuple[Any, ...]], header: str = "id,amount,reference,currency,description,date"
    ) -> str:
        path = tmp_path / f"statement-{uuid.uuid4().hex[:6]}.csv"
        lines = [header, *(",".join(str(cell) for cell in row) for row in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    return write


AMOUNT_EXACT = {"field": "amount", "operator": "equals", "allowable_drift": 0}
REFERENCE_EXACT = {"field": "reference", "operator": "equals"}


class TestUploads:
    def test_upload_counts_records(self, blnk: Any, statement: Any) -> None:
        """A CSV upload answers 200 with an upload_ id, the record count and the source."""
        path = statement(
            [
                ("e1", "10.00", "r1", "USD", "one", "2026-01-02"),
                ("e2", "20.50", "r2", "USD", "two", "2026-01-03T10:00:00Z"),
            ]
        )
        response = _upload(blnk, path, "bank-statement")
        assert response.status == 200, response.to_dict()
        assert response.data["upload_id"].startswith("upload_")
        assert response.data["record_count"] == 2
        assert response.data["source"] == "bank-statement"

    def test_bad_files_are_refused_whole(self, blnk: Any, statement: Any) -> None:
        """A missing column, a duplicate id or a bad amount refuses the file with 400 RECON_UPLOAD_FAILED."""
        for path in (
            statement([("e1", "10.00")], header="id,amount"),
            statement(
                [
                    ("e1", "1", "r", "USD", "d", "2026-01-01"),
                    ("e1", "2", "r", "USD", "d", "2026-01-01"),
                ]
            ),
            statement([("e1", "ten", "r", "USD", "d", "2026-01-01")]),
            statement([("e1", "1", "r", "USD", "d", "yesterday")]),
        ):
            response = _upload(blnk, path, "bank")
            assert response.status == 400, response.to_dict()
            assert response.error.code == "RECON_UPLOAD_FAILED"

    def test_upload_by_url_is_refused(self, ledger_url: str) -> None:
        """An upload by URL is refused: no host is allowed (the server fetches nothing)."""
        response = httpx.post(
            f"{ledger_url}/reconciliation/upload", json={"url": "http://169.254.169.254/x"}
        )
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "RECON_UPLOAD_HOST_NOT_ALLOWED"

    def test_multipart_without_a_boundary_is_400(self, ledger_url: str) -> None:
        """A form that cannot be parsed (no boundary) is 400 RECON_UPLOAD_FAILED, not a 500."""
        response = httpx.post(
            f"{ledger_url}/reconciliation/upload",
            content=b"file=x",
            headers={"Content-Type": "multipart/form-data"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "RECON_UPLOAD_FAILED"
        assert "boundary" in response.json()["error"].lower()


class TestMatchingRules:
    def test_create_update_delete(self, blnk: Any) -> None:
        """A rule gets a rule_ id, is replaced with PUT, deleted, and then unknown (404)."""
        created = blnk.reconciliation.create_matching_rule(
            {
                "name": "amount and ref",
                "description": "d",
                "criteria": [AMOUNT_EXACT, REFERENCE_EXACT],
            }
        )
        assert created.status == 201, created.to_dict()
        rule = created.data
        assert rule["rule_id"].startswith("rule_")
        assert [c["field"] for c in rule["criteria"]] == ["amount", "reference"]
        updated = blnk.reconciliation.update_matching_rule(
            rule["rule_id"],
            {
                "name": "fuzzy",
                "description": "d",
                "criteria": [
                    {"field": "description", "operator": "contains", "allowable_drift": 20}
                ],
            },
        )
        assert updated.status == 200, updated.to_dict()
        assert updated.data["name"] == "fuzzy"
        assert updated.data["created_at"] == rule["created_at"]
        deleted = blnk.reconciliation.delete_matching_rule(rule["rule_id"])
        assert deleted.status == 200
        assert deleted.data == {"message": "Matching rule deleted successfully"}
        again = blnk.reconciliation.delete_matching_rule(rule["rule_id"])
        assert again.status == 404
        assert again.error.code == "RECON_RULE_NOT_FOUND"

    def test_invalid_rules_are_400(self, blnk: Any) -> None:
        """No criteria, `contains` on an amount, or an amount drift past 1 is 400 RECON_RULE_INVALID."""
        for criteria in (
            [],
            [{"field": "amount", "operator": "contains"}],
            [{"field": "amount", "operator": "equals", "allowable_drift": 2}],
        ):
            response = blnk.reconciliation.create_matching_rule(
                {"name": "bad", "description": "", "criteria": criteria}
            )
            assert response.status == 400, (criteria, response.to_dict())
            assert response.error.code == "RECON_RULE_INVALID"


class TestRuns:
    async def test_one_to_one_matches_exactly(
        self, blnk: Any, statement: Any, db: Database
    ) -> None:
        """Each record matches its own transaction once; the unmatched record is counted; the
        matched transactions carry Blnk's reconciled notes."""
        balance_id = _balance(blnk)
        amounts = [_amount() for _ in range(3)]
        references = [f"stmt-{uuid.uuid4().hex[:10]}" for _ in range(3)]
        transaction_ids = [
            _post(blnk, balance_id, a, r) for a, r in zip(amounts, references, strict=True)
        ]
        today = datetime.now(UTC).date().isoformat()
        rows = [(f"e{i}", amounts[i], references[i], "USD", "bank side", today) for i in range(3)]
        rows.append(("e-none", _amount(), f"stmt-{uuid.uuid4().hex[:10]}", "USD", "no such", today))
        upload = _upload(blnk, statement(rows), "bank").data
        rule_id = _rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)
        started = blnk.reconciliation.run(
            {
                "upload_id": upload["upload_id"],
                "strategy": "one_to_one",
                "matching_rule_ids": [rule_id],
                "dry_run": False,
            }
        )
        assert started.status == 200, started.to_dict()
        reconciliation_id = started.data["reconciliation_id"]
        assert reconciliation_id.startswith("recon_")
        run = _wait(blnk, reconciliation_id)
        assert run["status"] == "completed", run
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (3, 1)
        assert run["upload_id"] == upload["upload_id"]
        assert run["is_dry_run"] is False
        assert run["completed_at"] is not None
        async with db.connection() as conn:
            matches = await conn.fetch(
                "SELECT external_id, internal_transaction_id FROM ledger.reconciliation_matches"
                " WHERE reconciliation_id = $1 ORDER BY external_id",
                reconciliation_id,
            )
        assert [(m["external_id"], m["internal_transaction_id"]) for m in matches] == [
            (f"e{i}", transaction_ids[i]) for i in range(3)
        ]
        note = blnk.transactions.get(transaction_ids[1]).data["meta_data"]
        assert note["reconciled"] is True
        assert note["reconciliation_id"] == reconciliation_id
        assert note["external_txn_id"] == "e1"

    def test_one_to_one_uses_a_transaction_once(self, blnk: Any, statement: Any) -> None:
        """Two identical statement lines cannot both claim the one transaction that fits them."""
        amount, reference = _amount(), f"dup-{uuid.uuid4().hex[:10]}"
        _post(blnk, _balance(blnk), amount, reference)
        rows = [
            ("a", amount, reference, "USD", "x", "2026-01-01"),
            ("b", amount, reference, "USD", "x", "2026-01-01"),
        ]
        upload_id = _upload(blnk, statement(rows), "bank").data["upload_id"]
        rule_id = _rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)
        started = blnk.reconciliation.run(
            {"upload_id": upload_id, "strategy": "one_to_one", "matching_rule_ids": [rule_id]}
        )
        run = _wait(blnk, started.data["reconciliation_id"])
        assert (run["status"], run["matched_transactions"], run["unmatched_transactions"]) == (
            "completed",
            1,
            1,
        )

    def test_dry_run_writes_only_counts(self, blnk: Any) -> None:
        """A dry instant run counts its matches but leaves the transactions untouched."""
        amount, reference = _amount(), f"dry-{uuid.uuid4().hex[:10]}"
        transaction_id = _post(blnk, _balance(blnk), amount, reference)
        rule_id = _rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)
        started = blnk.reconciliation.run_instant(
            {
                "external_transactions": [
                    {
                        "id": "x1",
                        "amount": float(amount),
                        "reference": reference,
                        "currency": "USD",
                        "description": "inline",
                        "date": datetime.now(UTC).isoformat(),
                        "source": "api",
                    }
                ],
                "strategy": "one_to_one",
                "matching_rule_ids": [rule_id],
                "dry_run": True,
            }
        )
        assert started.status == 200, started.to_dict()
        run = _wait(blnk, started.data["reconciliation_id"])
        assert (run["status"], run["matched_transactions"], run["is_dry_run"]) == (
            "completed",
            1,
            True,
        )
        assert run["upload_id"].startswith("instant_")
        assert "reconciled" not in blnk.transactions.get(transaction_id).data["meta_data"]

    def test_one_to_many_matches_a_group(self, blnk: Any) -> None:
        """One statement line matches the group of transactions sharing its description and summing to it."""
        balance_id = _balance(blnk)
        marker = f"payroll-{uuid.uuid4().hex[:10]}"
        parts = [_amount(), _amount(), _amount()]
        ids = [
            _post(blnk, balance_id, part, f"{marker}-{i}", description=marker)
            for i, part in enumerate(parts)
        ]
        _post(blnk, balance_id, _amount(), f"{marker}-other", description=f"{marker}-other")
        rule_id = _rule(
            blnk,
            AMOUNT_EXACT,
            {"field": "description", "operator": "equals"},
            {"field": "date", "operator": "equals", "allowable_drift": 3600},
        )
        started = blnk.reconciliation.run_instant(
            {
                "external_transactions": [
                    {
                        "id": "batch",
                        "amount": float(sum(parts)),
                        "reference": "",
                        "currency": "USD",
                        "description": marker,
                        "date": datetime.now(UTC).isoformat(),
                        "source": "bank",
                    }
                ],
                "strategy": "one_to_many",
                "grouping_criteria": "description",
                "matching_rule_ids": [rule_id],
            }
        )
        assert started.status == 200, started.to_dict()
        run = _wait(blnk, started.data["reconciliation_id"])
        assert (run["status"], run["matched_transactions"], run["unmatched_transactions"]) == (
            "completed",
            1,
            0,
        )
        for transaction_id in ids:
            assert (
                blnk.transactions.get(transaction_id).data["meta_data"]["external_txn_id"]
                == "batch"
            )

    def test_many_to_one_matches_grouped_lines(self, blnk: Any, statement: Any) -> None:
        """Statement lines sharing a reference match the one transaction for their total."""
        reference = f"inv-{uuid.uuid4().hex[:10]}"
        parts = [_amount(), _amount()]
        transaction_id = _post(blnk, _balance(blnk), sum(parts, Decimal(0)), reference)
        rows = [
            ("p1", parts[0], reference, "USD", "part", "2026-01-01"),
            ("p2", parts[1], reference, "USD", "part", "2026-01-02"),
            ("lonely", _amount(), f"inv-{uuid.uuid4().hex[:10]}", "USD", "x", "2026-01-01"),
        ]
        upload_id = _upload(blnk, statement(rows), "bank").data["upload_id"]
        rule_id = _rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)
        started = blnk.reconciliation.run(
            {
                "upload_id": upload_id,
                "strategy": "many_to_one",
                "grouping_criteria": "reference",
                "matching_rule_ids": [rule_id],
            }
        )
        run = _wait(blnk, started.data["reconciliation_id"])
        assert (run["status"], run["matched_transactions"], run["unmatched_transactions"]) == (
            "completed",
            2,
            1,
        )
        note = blnk.transactions.get(transaction_id).data["meta_data"]
        assert note["external_txn_ids"] == ["p1", "p2"]
        assert Decimal(note["reconciliation_amount"]) == sum(parts, Decimal(0))

    def test_refusals(self, blnk: Any, ledger_url: str) -> None:
        """Unknown run, upload or rule ids are 404; no rules, no records, or a bad strategy are 400."""
        missing = blnk.reconciliation.get(f"recon_{uuid.uuid4()}")
        assert missing.status == 404
        assert missing.error.code == "RECON_NOT_FOUND"
        rule_id = _rule(blnk, AMOUNT_EXACT)
        no_upload = blnk.reconciliation.run(
            {
                "upload_id": f"upload_{uuid.uuid4()}",
                "strategy": "one_to_one",
                "matching_rule_ids": [rule_id],
            }
        )
        assert no_upload.status == 404
        assert no_upload.error.code == "RECON_NOT_FOUND"
        no_rules = blnk.reconciliation.run(
            {"upload_id": "upload_x", "strategy": "one_to_one", "matching_rule_ids": []}
        )
        assert no_rules.status == 400
        assert no_rules.error.code == "RECON_MATCHING_RULES_REQUIRED"
        unknown_rule = blnk.reconciliation.run(
            {
                "upload_id": "upload_x",
                "strategy": "one_to_one",
                "matching_rule_ids": [f"rule_{uuid.uuid4()}"],
            }
        )
        assert unknown_rule.status == 404
        assert unknown_rule.error.code == "RECON_RULE_NOT_FOUND"
        bad_strategy = blnk.reconciliation.run(
            {"upload_id": "upload_x", "strategy": "best_effort", "matching_rule_ids": [rule_id]}
        )
        assert bad_strategy.status == 400
        no_records = httpx.post(
            f"{ledger_url}/reconciliation/start-instant",
            json={
                "external_transactions": [],
                "strategy": "one_to_one",
                "matching_rule_ids": [rule_id],
            },
        )
        assert no_records.status_code == 400
        assert no_records.json()["error_detail"]["code"] == "RECON_EXTERNAL_TXNS_REQUIRED"

    @pytest.mark.parametrize("amount", ["1E+999999999", "1E-999999999", "1" * 61 + ".5"])
    def test_an_amount_no_ledger_holds_is_400(self, ledger_url: str, amount: str) -> None:
        """More than 60 digits on a side of the point (NUMERIC cannot even store the first two;
        they were a 500) is refused before anything is stored."""
        response = httpx.post(
            f"{ledger_url}/reconciliation/start-instant",
            json={
                "external_transactions": [
                    {
                        "id": f"ext-{uuid.uuid4()}",
                        "amount": amount,
                        "reference": "r",
                        "currency": "USD",
                        "description": "d",
                        "date": "2026-01-01T00:00:00Z",
                    }
                ],
                "strategy": "one_to_one",
                "matching_rule_ids": [],
            },
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "RECON_UPLOAD_FAILED"


class TestMatchIntegrity:
    async def _run(self, conn: asyncpg.Connection, *, strategy: str, dry_run: bool) -> str:
        upload_id, reconciliation_id = f"upload_{uuid.uuid4()}", f"recon_{uuid.uuid4()}"
        await conn.execute(
            "INSERT INTO ledger.reconciliation_uploads (upload_id, record_count) VALUES ($1, 0)",
            upload_id,
        )
        await conn.execute(
            "INSERT INTO ledger.reconciliations (reconciliation_id, upload_id, strategy, matching_rule_ids,"
            " rules, is_dry_run, status, started_at, updated_at)"
            " VALUES ($1, $2, $3, '{rule_x}', '[]', $4, 'in_progress', now(), now())",
            reconciliation_id,
            upload_id,
            strategy,
            dry_run,
        )
        return reconciliation_id

    async def test_one_to_one_refuses_a_second_use(self, conn: asyncpg.Connection) -> None:
        """Two match rows of one one_to_one run naming the same transaction violate a unique index."""
        run = await self._run(conn, strategy="one_to_one", dry_run=False)
        transaction_id = f"txn_{uuid.uuid4()}"
        insert = (
            "INSERT INTO ledger.reconciliation_matches (reconciliation_id, strategy, external_id,"
            " internal_transaction_id, amount, matched_at) VALUES ($1, 'one_to_one', $2, $3, 1, now())"
        )
        await conn.execute(insert, run, "e1", transaction_id)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, run, "e2", transaction_id)

    async def test_dry_run_refuses_match_rows(self, conn: asyncpg.Connection) -> None:
        """A dry run records no matches: PostgreSQL refuses the row."""
        run = await self._run(conn, strategy="one_to_one", dry_run=True)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO ledger.reconciliation_matches (reconciliation_id, strategy, external_id,"
                " internal_transaction_id, amount, matched_at) VALUES ($1, 'one_to_one', 'e', $2, 1, now())",
                run,
                f"txn_{uuid.uuid4()}",
            )

    async def test_counts_must_add_up(self, conn: asyncpg.Connection) -> None:
        """matched + unmatched must equal the records processed."""
        run = await self._run(conn, strategy="one_to_one", dry_run=False)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE ledger.reconciliations SET processed_count = 2, matched_transactions = 1"
                " WHERE reconciliation_id = $1",
                run,
            )
