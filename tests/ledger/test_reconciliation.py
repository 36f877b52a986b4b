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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from kit.db import Database
from ledger import reconciliation_repository
from tests.ledger.conftest import create_sdk_balance, fund_through_sdk

pytestmark = pytest.mark.db

RUN_WAIT_S = 20.0


def _amount() -> Decimal:
    """A major-unit amount with cents that no other test uses (in practice)."""
    return Decimal(random.randrange(10_000_000, 99_999_999)) / 100


def _post(
    client: Any, balance_id: str, amount: Decimal, reference: str, description: str = "ledger side"
) -> str:
    posted = fund_through_sdk(
        client, balance_id, int(amount * 100), description, reference=reference
    )
    transaction_id: str = posted["transaction_id"]
    return transaction_id


def _balance(client: Any) -> str:
    """A balance in a ledger of its own, for the ledger side of a reconciliation."""
    return create_sdk_balance(client, "reconciliation")


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


_INVALID = "RECON_RULE_INVALID"
_MALFORMED = "GEN_MALFORMED_REQUEST"
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

    @pytest.mark.parametrize(
        ("criterion", "code"),
        [
            ({"field": "amount", "operator": "equals", "allowable_drift": "a little"}, _INVALID),
            ({"field": "amount"}, _INVALID),
            ({"field": "reference", "operator": "equals", "value": "x" * 256}, _INVALID),
            (
                {"field": "date", "operator": "equals", "allowable_drift": 366 * 86_400 + 1},
                _INVALID,
            ),
            ({"field": "amount", "operator": "between"}, _INVALID),
            ({"field": "balance", "operator": "equals"}, _INVALID),
            # The wrong JSON type, as everywhere: lax validation read `true` as a drift of 1.
            ({"field": "amount", "operator": "equals", "allowable_drift": True}, _MALFORMED),
        ],
    )
    def test_criteria_the_sdk_lets_through_are_400(
        self, ledger_url: str, criterion: dict[str, Any], code: str
    ) -> None:
        """A drift that is not a number or past a year of seconds, a criterion without an
        operator, an unknown operator or field, or a value past 255 characters is 400
        RECON_RULE_INVALID; a drift of the wrong JSON type is "Invalid input"."""
        response = httpx.post(
            f"{ledger_url}/reconciliation/matching-rules",
            json={"name": "bad", "criteria": [criterion]},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == code

    def test_names_are_required_and_bounded(self, blnk: Any) -> None:
        """A rule needs a name of at most 255 characters; replacing an unknown rule is 404."""
        criteria = [AMOUNT_EXACT]
        for name in ("", "n" * 256):
            response = blnk.reconciliation.create_matching_rule(
                {"name": name, "description": "", "criteria": criteria}
            )
            assert response.status == 400, (name, response.to_dict())
            assert response.error.code == "RECON_RULE_INVALID"
        missing = blnk.reconciliation.update_matching_rule(
            f"rule_{uuid.uuid4()}", {"name": "n", "description": "", "criteria": criteria}
        )
        assert missing.status == 404
        assert missing.error.code == "RECON_RULE_NOT_FOUND"


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

    @pytest.mark.parametrize(
        ("amount", "code"),
        [
            ("1E+999999999", "RECON_UPLOAD_FAILED"),
            ("1E-999999999", "RECON_UPLOAD_FAILED"),
            ("1" * 61 + ".5", "RECON_UPLOAD_FAILED"),
            (True, "GEN_MALFORMED_REQUEST"),  # no amount; lax validation read it as 1
        ],
    )
    def test_an_amount_no_ledger_holds_is_400(
        self, ledger_url: str, amount: str | bool, code: str
    ) -> None:
        """More than 60 digits on a side of the point (NUMERIC cannot even store the first two;
        they were a 500), or a boolean, is refused before anything is stored."""
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
        assert response.json()["error_detail"]["code"] == code


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


def _instant(
    ledger_url: str,
    client: Any,
    records: list[dict[str, Any]],
    rule_ids: list[str],
    strategy: str = "one_to_one",
    **options: Any,
) -> dict[str, Any]:
    """Reconcile records sent inline (amounts as exact decimal text, which the SDK cannot
    send) and wait for the run to finish."""
    defaults = {
        "reference": "",
        "currency": "USD",
        "description": "",
        "date": datetime.now(UTC).isoformat(),
        "source": "api",
    }
    started = httpx.post(
        f"{ledger_url}/reconciliation/start-instant",
        json={
            "external_transactions": [{**defaults, **record} for record in records],
            "strategy": strategy,
            "matching_rule_ids": rule_ids,
            **options,
        },
    )
    assert started.status_code == 200, started.text
    run = _wait(client, started.json()["reconciliation_id"])
    assert run["status"] == "completed", run
    return run


async def _matches(db: Database, reconciliation_id: str) -> list[tuple[str, str, Decimal]]:
    async with db.connection() as conn:
        rows = await reconciliation_repository.match_rows(conn, reconciliation_id)
    return [(r["external_id"], r["internal_transaction_id"], r["amount"]) for r in rows]


def _post_precise(
    client: Any, balance_id: str, precise_amount: int, precision: int, ref: str
) -> str:
    response = client.transactions.create(
        {
            "precise_amount": str(precise_amount),
            "precision": precision,
            "reference": ref,
            "currency": "USD",
            "description": "ledger side",
            "source": "@WorldUSD",
            "destination": balance_id,
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )
    assert response.status == 201, response.to_dict()
    transaction_id: str = response.data["transaction_id"]
    return transaction_id


def _ref(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class TestMatchingAmounts:
    async def test_amounts_match_to_the_minor_unit_past_sixteen_digits(
        self, blnk: Any, ledger_url: str, db: Database
    ) -> None:
        """A ledger amount of 21 digits at precision 100 matches its statement line to the
        cent, and the match row and note carry that exact amount."""
        balance_id, reference = _balance(blnk), _ref("big")
        precise_amount = 10**20 + random.randrange(1, 99)
        amount = Decimal(precise_amount).scaleb(-2)
        transaction_id = _post_precise(blnk, balance_id, precise_amount, 100, reference)
        run = _instant(
            ledger_url,
            blnk,
            [{"id": "big", "amount": str(amount), "reference": reference}],
            [_rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)],
        )
        assert run["matched_transactions"] == 1, run
        assert await _matches(db, run["reconciliation_id"]) == [("big", transaction_id, amount)]
        note = blnk.transactions.get(transaction_id).data["meta_data"]
        assert Decimal(note["reconciliation_amount"]) == amount

    async def test_a_group_sum_is_exact_past_sixteen_digits(
        self, blnk: Any, ledger_url: str, db: Database
    ) -> None:
        """one_to_many sums its group from the exact ledger amounts: two 19-digit legs with
        cents match their total to the cent, and each match row carries its leg's amount."""
        balance_id, marker = _balance(blnk), _ref("bigsum")
        legs = [10**20 + random.randrange(1, 99) for _ in range(2)]
        ids = [
            _post_precise(blnk, balance_id, leg, 100, f"{marker}-{i}") for i, leg in enumerate(legs)
        ]
        for transaction_id in ids:
            blnk.metadata.update(transaction_id, {"meta_data": {"batch": marker}})
        run = _instant(
            ledger_url,
            blnk,
            [{"id": "sum", "amount": str(Decimal(sum(legs)).scaleb(-2))}],
            [_rule(blnk, AMOUNT_EXACT)],
            strategy="one_to_many",
            grouping_criteria="meta_data.batch",
        )
        assert run["matched_transactions"] == 1, run
        assert sorted(await _matches(db, run["reconciliation_id"])) == sorted(
            ("sum", t, Decimal(leg).scaleb(-2)) for t, leg in zip(ids, legs, strict=True)
        )

    def test_a_ledger_amount_in_another_precision(self, blnk: Any, ledger_url: str) -> None:
        """A transaction at precision 1000 (12.345) matches the statement's 12.345 and not
        12.35 (no drift: the rule is exact to the ledger's minor unit)."""
        balance_id = _balance(blnk)
        whole = random.randrange(10_000, 99_999)
        exact, rounded = _ref("mils"), _ref("mils")
        _post_precise(blnk, balance_id, whole * 1000 + 345, 1000, exact)
        _post_precise(blnk, balance_id, whole * 1000 + 345, 1000, rounded)
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": "exact", "amount": f"{whole}.345", "reference": exact},
                {"id": "rounded", "amount": f"{whole}.35", "reference": rounded},
            ],
            [_rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)],
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (1, 1)

    async def test_amount_drift_is_a_fraction_of_the_ledger_amount(
        self, blnk: Any, ledger_url: str, db: Database
    ) -> None:
        """With 1 % drift a 100.00 transaction matches 100.99 and 99.00 but not 101.01."""
        balance_id = _balance(blnk)
        references = {name: _ref("drift") for name in ("above", "below", "outside")}
        ids = {
            name: _post(blnk, balance_id, Decimal("100.00"), reference)
            for name, reference in references.items()
        }
        statement_amounts = {"above": "100.99", "below": "99.00", "outside": "101.01"}
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": name, "amount": statement_amounts[name], "reference": references[name]}
                for name in references
            ],
            [
                _rule(
                    blnk,
                    {"field": "amount", "operator": "equals", "allowable_drift": 0.01},
                    REFERENCE_EXACT,
                )
            ],
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (2, 1)
        assert [(e, t) for e, t, _ in await _matches(db, run["reconciliation_id"])] == sorted(
            [("above", ids["above"]), ("below", ids["below"])]
        )

    def test_greater_and_less_than_compare_the_statement_with_the_ledger(
        self, blnk: Any, ledger_url: str
    ) -> None:
        """`greater_than` holds when the statement's amount is above the ledger's, and
        `less_than` when it is below; equal amounts satisfy neither."""
        balance_id = _balance(blnk)
        refs = [_ref("cmp") for _ in range(3)]
        for reference in refs:
            _post(blnk, balance_id, Decimal("50.00"), reference)
        records = [
            {"id": "more", "amount": "50.01", "reference": refs[0]},
            {"id": "less", "amount": "49.99", "reference": refs[1]},
            {"id": "same", "amount": "50.00", "reference": refs[2]},
        ]
        above = _instant(
            ledger_url,
            blnk,
            records,
            [_rule(blnk, {"field": "amount", "operator": "greater_than"}, REFERENCE_EXACT)],
        )
        below = _instant(
            ledger_url,
            blnk,
            records,
            [_rule(blnk, {"field": "amount", "operator": "less_than"}, REFERENCE_EXACT)],
        )
        assert above["matched_transactions"] == 1
        assert below["matched_transactions"] == 1

    def test_a_currency_mismatch_is_not_a_match(self, blnk: Any, ledger_url: str) -> None:
        """Same amount and reference in another currency does not satisfy `currency equals`;
        the same currency in another case does."""
        amount, reference = _amount(), _ref("ccy")
        _post(blnk, _balance(blnk), amount, reference)
        rule_id = _rule(
            blnk, AMOUNT_EXACT, REFERENCE_EXACT, {"field": "currency", "operator": "equals"}
        )
        line = {"id": "x", "amount": str(amount), "reference": reference}
        euro = _instant(ledger_url, blnk, [line | {"currency": "EUR"}], [rule_id])
        lower = _instant(ledger_url, blnk, [line | {"currency": "usd"}], [rule_id])
        assert (euro["matched_transactions"], lower["matched_transactions"]) == (0, 1)


def _created_at(client: Any, transaction_id: str) -> datetime:
    return datetime.fromisoformat(client.transactions.get(transaction_id).data["created_at"])


class TestMatchingDates:
    def test_date_drift_is_in_seconds_either_way(self, blnk: Any, ledger_url: str) -> None:
        """With 600 s of drift a line dated 5 minutes after (or before) its transaction
        matches; one dated 20 minutes after does not."""
        balance_id = _balance(blnk)
        refs = [_ref("when") for _ in range(3)]
        moments = [_created_at(blnk, _post(blnk, balance_id, Decimal(7), r)) for r in refs]
        offsets = [timedelta(minutes=5), timedelta(minutes=-5), timedelta(minutes=20)]
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": f"e{i}", "amount": "7", "reference": r, "date": (m + o).isoformat()}
                for i, (r, m, o) in enumerate(zip(refs, moments, offsets, strict=True))
            ],
            [
                _rule(
                    blnk,
                    REFERENCE_EXACT,
                    {"field": "date", "operator": "equals", "allowable_drift": 600},
                )
            ],
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (2, 1)

    def test_greater_and_less_than_compare_dates(self, blnk: Any, ledger_url: str) -> None:
        """`greater_than` holds for a line dated after its transaction, `less_than` for one
        dated before."""
        balance_id = _balance(blnk)
        later, earlier = _ref("after"), _ref("before")
        moment = _created_at(blnk, _post(blnk, balance_id, Decimal(3), later))
        _post(blnk, balance_id, Decimal(3), earlier)
        records = [
            {
                "id": "later",
                "amount": "3",
                "reference": later,
                "date": (moment + timedelta(hours=1)).isoformat(),
            },
            {"id": "earlier", "amount": "3", "reference": earlier, "date": "2020-01-01"},
        ]
        after = _instant(
            ledger_url,
            blnk,
            records,
            [_rule(blnk, REFERENCE_EXACT, {"field": "date", "operator": "greater_than"})],
        )
        before = _instant(
            ledger_url,
            blnk,
            records,
            [_rule(blnk, REFERENCE_EXACT, {"field": "date", "operator": "less_than"})],
        )
        assert (after["matched_transactions"], before["matched_transactions"]) == (1, 1)

    @pytest.mark.parametrize("strategy", ["one_to_one", "one_to_many"])
    def test_a_line_without_a_date_never_matches_on_dates(
        self, blnk: Any, ledger_url: str, strategy: str
    ) -> None:
        """A rule on dates cannot hold for an undated line (Go's zero time is no date)."""
        reference = _ref("nodate")
        _post(blnk, _balance(blnk), Decimal(4), reference)
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": "a", "amount": "4", "reference": reference, "date": ""},
                {"id": "b", "amount": "4", "reference": reference, "date": "0001-01-01T00:00:00Z"},
            ],
            [
                _rule(
                    blnk,
                    REFERENCE_EXACT,
                    {"field": "date", "operator": "equals", "allowable_drift": 31_536_000},
                )
            ],
            strategy=strategy,
            **({"grouping_criteria": "reference"} if strategy == "one_to_many" else {}),
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (0, 2)

    def test_a_line_at_the_edge_of_the_calendar_does_not_fail_the_run(
        self, blnk: Any, ledger_url: str
    ) -> None:
        """Lines dated in year 1 or 9999 simply match nothing within a day's drift; the other
        lines of the run are still matched."""
        reference = _ref("edge")
        _post(blnk, _balance(blnk), Decimal(9), reference)
        run = _instant(
            ledger_url,
            blnk,
            [
                {
                    "id": "first",
                    "amount": "9",
                    "reference": reference,
                    "date": "0001-01-01T00:00:01Z",
                },
                {
                    "id": "last",
                    "amount": "9",
                    "reference": reference,
                    "date": "9999-12-31T23:59:59Z",
                },
                {"id": "today", "amount": "9", "reference": reference},
            ],
            [
                _rule(
                    blnk,
                    REFERENCE_EXACT,
                    {"field": "date", "operator": "equals", "allowable_drift": 86_400},
                )
            ],
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (1, 2)


class TestMatchingText:
    def test_contains_takes_a_substring_or_a_near_spelling(
        self, blnk: Any, ledger_url: str
    ) -> None:
        """`contains` with 10 % drift matches a shorter line, a one-letter typo in any case,
        but neither another payee nor an empty description."""
        balance_id, marker = _balance(blnk), uuid.uuid4().hex[:8]
        lines = {
            "part": f"payroll {marker}",
            "typo": f"acme payrol {marker}",
            "other": f"GLOBEX RENT {marker}",
            "blank": "",
        }
        amounts = {name: _amount() for name in lines}
        for name in lines:
            _post(
                blnk, balance_id, amounts[name], _ref("txt"), description=f"ACME PAYROLL {marker}"
            )
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": name, "amount": str(amounts[name]), "description": text}
                for name, text in lines.items()
            ],
            [
                _rule(
                    blnk,
                    AMOUNT_EXACT,
                    {"field": "description", "operator": "contains", "allowable_drift": 10},
                )
            ],
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (2, 2)

    async def test_a_queued_transaction_matches_under_its_own_reference(
        self, blnk: Any, ledger_url: str, db: Database
    ) -> None:
        """A queued transaction moved money through its applied copy (reference + `_q`); the
        statement line carrying the reference the client sent matches that copy."""
        reference, amount = _ref("queued"), _amount()
        response = blnk.transactions.create(
            {
                "precise_amount": int(amount * 100),
                "precision": 100,
                "reference": reference,
                "currency": "USD",
                "description": "queued",
                "source": "@WorldUSD",
                "destination": _balance(blnk),
                "allow_overdraft": True,
                "skip_queue": False,
            }
        )
        assert response.status == 201, response.to_dict()
        applied_copy = response.data["outcome"]["transaction_id"]
        run = _instant(
            ledger_url,
            blnk,
            [{"id": "q", "amount": str(amount), "reference": reference}],
            [_rule(blnk, AMOUNT_EXACT, REFERENCE_EXACT)],
        )
        assert [(e, t) for e, t, _ in await _matches(db, run["reconciliation_id"])] == [
            ("q", applied_copy)
        ]

    def test_rules_are_alternatives(self, blnk: Any, ledger_url: str) -> None:
        """A line matches when any one of the run's rules holds in full."""
        balance_id = _balance(blnk)
        by_reference, by_amount = _ref("alt"), _amount()
        _post(blnk, balance_id, Decimal(1), by_reference)
        _post(blnk, balance_id, by_amount, _ref("alt"))
        run = _instant(
            ledger_url,
            blnk,
            [
                {"id": "r", "amount": "2", "reference": by_reference},
                {"id": "a", "amount": str(by_amount), "reference": "unknown"},
            ],
            [
                _rule(blnk, REFERENCE_EXACT),
                _rule(blnk, AMOUNT_EXACT, {"field": "currency", "operator": "equals"}),
            ],
        )
        assert run["matched_transactions"] == 2


class TestStrategies:
    async def test_one_to_many_uses_a_group_once(
        self, blnk: Any, ledger_url: str, db: Database
    ) -> None:
        """Two identical lines for one group: the first takes the group, the second finds it
        claimed; a dry run counts the same match and writes nothing."""
        balance_id, marker = _balance(blnk), _ref("grp")
        parts = [_amount(), _amount()]
        for part in parts:
            _post(blnk, balance_id, part, _ref("grp"), description=marker)
        total = str(sum(parts, Decimal(0)))
        records = [{"id": i, "amount": total, "description": marker} for i in ("a", "b")]
        rules = [_rule(blnk, AMOUNT_EXACT, {"field": "description", "operator": "equals"})]
        options = {"strategy": "one_to_many", "grouping_criteria": "description"}
        dry = _instant(ledger_url, blnk, records, rules, dry_run=True, **options)
        real = _instant(ledger_url, blnk, records, rules, **options)
        for run in (dry, real):
            assert (run["matched_transactions"], run["unmatched_transactions"]) == (1, 1), run
        assert await _matches(db, dry["reconciliation_id"]) == []
        assert {e for e, _, _ in await _matches(db, real["reconciliation_id"])} == {"a"}

    def test_many_to_one_groups_by_date_across_chunks(self, blnk: Any, ledger_url: str) -> None:
        """Lines grouped by their UTC date: 120 lone lines (each its own day, or undated) are
        decided in chunks and counted, and the two lines of one day match its transaction."""
        balance_id = _balance(blnk)
        parts = [_amount(), _amount()]
        _post(blnk, balance_id, sum(parts, Decimal(0)), _ref("day"))
        today = datetime.now(UTC)
        records = [
            {"id": "p1", "amount": str(parts[0]), "date": today.isoformat()},
            {
                "id": "p2",
                "amount": str(parts[1]),
                "date": today.isoformat(),
            },
        ]
        records += [
            {
                "id": f"lone{i}",
                "amount": "0.01",
                "date": "" if i % 2 else f"1990-01-{i % 28 + 1:02d}",
            }
            for i in range(120)
        ]
        run = _instant(
            ledger_url,
            blnk,
            records,
            [
                _rule(
                    blnk,
                    AMOUNT_EXACT,
                    {"field": "date", "operator": "equals", "allowable_drift": 3600},
                )
            ],
            strategy="many_to_one",
            grouping_criteria="date",
        )
        assert (run["matched_transactions"], run["unmatched_transactions"]) == (2, 120)


class TestRunRefusals:
    def test_grouping_is_checked_per_strategy(self, blnk: Any, ledger_url: str) -> None:
        """one_to_many needs a ledger key, many_to_one a statement key; neither runs without."""
        rule_id = _rule(blnk, AMOUNT_EXACT)
        for strategy, grouping in (
            ("one_to_many", ""),
            ("one_to_many", "meta_data.no spaces"),
            ("many_to_one", "destination"),
        ):
            response = httpx.post(
                f"{ledger_url}/reconciliation/start-instant",
                json={
                    "external_transactions": [{"id": "x", "amount": "1", "date": "2026-01-01"}],
                    "strategy": strategy,
                    "grouping_criteria": grouping,
                    "matching_rule_ids": [rule_id],
                },
            )
            assert response.status_code == 400, (strategy, grouping, response.text)
            assert "grouping_criteria" in response.json()["error"]

    def test_limits_on_rules_and_records(self, blnk: Any, ledger_url: str) -> None:
        """More than 20 distinct rules, or more than 10,000 inline records, is 400."""
        rule_ids = [_rule(blnk, AMOUNT_EXACT) for _ in range(21)]
        too_many_rules = blnk.reconciliation.run(
            {"upload_id": "upload_x", "strategy": "one_to_one", "matching_rule_ids": rule_ids}
        )
        assert too_many_rules.status == 400
        assert "at most 20" in too_many_rules.error.message
        too_many_records = httpx.post(
            f"{ledger_url}/reconciliation/start-instant",
            json={
                "external_transactions": [{"id": str(i), "amount": 1} for i in range(10_001)],
                "strategy": "one_to_one",
                "matching_rule_ids": rule_ids[:1],
            },
        )
        assert too_many_records.status_code == 400, too_many_records.text
        assert "max is 10000" in too_many_records.json()["error"]
