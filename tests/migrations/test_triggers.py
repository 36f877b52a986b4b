"""Triggers: the audit trail of sensitive tables and the maintenance of updated_at.

The audit trigger is exercised the way the application drives it: `kit.db.audit_context` sets
the transaction-local actor, address and user agent, a plain SQL statement changes a row, and
the test reads the audit_log row the trigger wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from kit.db import audit_context

pytestmark = pytest.mark.db

InsertRow = Callable[..., Awaitable[asyncpg.Record]]

REDACTED = "[REDACTED]"
AUDITED_TABLES = {
    "users",
    "user_mfa",
    "connected_wallets",
    "payment_cards",
    "user_risk_profiles",
    "compliance_records",
    "transactions",
}
UPDATED_AT_TABLES = {
    "users",
    "connected_wallets",
    "wallet_balances",
    "transactions",
    "user_risk_profiles",
}


async def _audit_rows(
    conn: asyncpg.Connection, table: str, record_id: uuid.UUID
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT action, old_values, new_values, changed_by, actor_id,"
        " host(ip_address) AS ip, user_agent"
        " FROM audit_log WHERE table_name = $1 AND record_id = $2"
        " ORDER BY created_at, array_position(ARRAY['INSERT', 'UPDATE', 'DELETE'], action::text)",
        table,
        record_id,
    )


class TestAuditTrail:
    """Changes to sensitive tables are written to audit_log, secrets masked."""

    async def test_update_is_recorded_with_old_new_and_context(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """An UPDATE records both row images and who, from where and with what client."""
        user = await rows("users", phone_number="+15550001")
        await audit_context(
            conn, actor_id=user["id"], ip="203.0.113.7", user_agent="DwayBank-iOS/3.1"
        )
        await conn.execute("UPDATE users SET phone_number = '+15550002' WHERE id = $1", user["id"])
        updates = [
            row for row in await _audit_rows(conn, "users", user["id"]) if row["action"] == "UPDATE"
        ]
        assert len(updates) == 1
        audit = updates[0]
        assert audit["old_values"]["phone_number"] == "+15550001"
        assert audit["new_values"]["phone_number"] == "+15550002"
        assert audit["new_values"]["email"] == user["email"]
        assert (audit["changed_by"], audit["actor_id"]) == (user["id"], user["id"])
        assert (audit["ip"], audit["user_agent"]) == ("203.0.113.7", "DwayBank-iOS/3.1")

    async def test_password_hash_is_masked(self, conn: asyncpg.Connection, rows: InsertRow) -> None:
        """Neither the old nor the new password hash reaches the audit trail."""
        user = await rows("users")
        await conn.execute("UPDATE users SET password_hash = 'new-hash' WHERE id = $1", user["id"])
        audits = await _audit_rows(conn, "users", user["id"])
        assert [row["action"] for row in audits] == ["INSERT", "UPDATE"]
        assert audits[0]["new_values"]["password_hash"] == REDACTED
        assert audits[1]["old_values"]["password_hash"] == REDACTED
        assert audits[1]["new_values"]["password_hash"] == REDACTED
        stored = str([dict(row) for row in audits])
        assert user["password_hash"] not in stored
        assert "new-hash" not in stored

    @pytest.mark.parametrize(
        ("table", "column"),
        [
            ("user_mfa", "secret_key"),
            ("user_mfa", "backup_codes"),
            ("connected_wallets", "encrypted_credentials"),
            ("payment_cards", "card_token"),
        ],
    )
    async def test_secret_column_is_masked(
        self, conn: asyncpg.Connection, rows: InsertRow, table: str, column: str
    ) -> None:
        """A secret column is stored as '[REDACTED]' in the audit row of an INSERT."""
        row = await rows(table)
        audits = await _audit_rows(conn, table, row["id"])
        assert [audit["action"] for audit in audits] == ["INSERT"]
        assert audits[0]["new_values"][column] == REDACTED
        assert audits[0]["old_values"] is None

    async def test_absent_secret_stays_null(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A NULL secret is recorded as NULL, not as '[REDACTED]'."""
        mfa = await rows("user_mfa", method="sms", secret_key=None, backup_codes=None)
        audit = (await _audit_rows(conn, "user_mfa", mfa["id"]))[0]
        assert audit["new_values"]["secret_key"] is None
        assert audit["new_values"]["backup_codes"] is None

    async def test_changing_only_a_secret_is_recorded(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """Rotating a secret is an audited change even though both images are masked."""
        mfa = await rows("user_mfa")
        await conn.execute("UPDATE user_mfa SET secret_key = 'ROTATED' WHERE id = $1", mfa["id"])
        audits = await _audit_rows(conn, "user_mfa", mfa["id"])
        assert [row["action"] for row in audits] == ["INSERT", "UPDATE"]

    async def test_delete_is_recorded_with_old_values(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A DELETE records the deleted row as old_values and no new_values."""
        card = await rows("payment_cards", cardholder_name="A CUSTOMER")
        await conn.execute("DELETE FROM payment_cards WHERE id = $1", card["id"])
        audit = (await _audit_rows(conn, "payment_cards", card["id"]))[-1]
        assert audit["action"] == "DELETE"
        assert audit["old_values"]["cardholder_name"] == "A CUSTOMER"
        assert audit["old_values"]["card_token"] == REDACTED
        assert audit["new_values"] is None

    async def test_unchanged_update_is_not_recorded(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """An UPDATE that changes nothing but updated_at writes no audit row."""
        user = await rows("users")
        await conn.execute("UPDATE users SET email = email WHERE id = $1", user["id"])
        audits = await _audit_rows(conn, "users", user["id"])
        assert [row["action"] for row in audits] == ["INSERT"]

    async def test_actor_that_is_not_a_user_is_kept_in_actor_id(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A service actor leaves changed_by NULL, keeps its id in actor_id, and breaks nothing."""
        operator_id = uuid.uuid4()
        user = await rows("users")
        await audit_context(conn, actor_id=operator_id)
        await conn.execute("UPDATE users SET kyc_status = 'approved' WHERE id = $1", user["id"])
        audit = (await _audit_rows(conn, "users", user["id"]))[-1]
        assert (audit["action"], audit["changed_by"], audit["actor_id"]) == (
            "UPDATE",
            None,
            operator_id,
        )

    async def test_without_context_the_actor_is_unknown(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """With no audit context set, actor, address and user agent are NULL."""
        user = await rows("users")
        audit = (await _audit_rows(conn, "users", user["id"]))[0]
        assert (audit["changed_by"], audit["actor_id"], audit["ip"], audit["user_agent"]) == (
            None,
            None,
            None,
            None,
        )

    async def test_malformed_address_is_recorded_as_null(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A client address that is not an IP does not fail the write; it is stored as NULL."""
        user = await rows("users")
        await audit_context(conn, actor_id=user["id"], ip="testclient", user_agent="pytest")
        await conn.execute("UPDATE users SET phone_number = '+15550003' WHERE id = $1", user["id"])
        audit = (await _audit_rows(conn, "users", user["id"]))[-1]
        assert (audit["action"], audit["ip"], audit["user_agent"]) == ("UPDATE", None, "pytest")

    @pytest.mark.parametrize("table", sorted(AUDITED_TABLES))
    async def test_sensitive_table_insert_is_recorded(
        self, conn: asyncpg.Connection, rows: InsertRow, table: str
    ) -> None:
        """Inserting into a sensitive table writes an INSERT audit row for that record."""
        row = await rows(table)
        audits = await _audit_rows(conn, table, row["id"])
        assert [audit["action"] for audit in audits] == ["INSERT"]
        assert audits[0]["new_values"]["id"] == str(row["id"])

    async def test_audit_triggers_cover_exactly_the_sensitive_tables(
        self, conn: asyncpg.Connection
    ) -> None:
        """audit_row_change fires on the sensitive tables and on no other."""
        found = await conn.fetch(
            "SELECT DISTINCT event_object_table FROM information_schema.triggers"
            " WHERE trigger_schema = 'public' AND action_statement LIKE '%audit_row_change%'"
        )
        assert {row["event_object_table"] for row in found} == AUDITED_TABLES


class TestUpdatedAt:
    """updated_at follows every UPDATE."""

    @pytest.mark.parametrize(
        ("table", "assignment"),
        [
            ("users", "phone_number = '+15550004'"),
            ("connected_wallets", "display_name = 'Savings'"),
            ("wallet_balances", "balance = 7"),
            ("transactions", "status = 'completed'"),
            ("user_risk_profiles", "risk_level = 'low'"),
        ],
    )
    async def test_updated_at_moves_on_update(
        self, conn: asyncpg.Connection, rows: InsertRow, table: str, assignment: str
    ) -> None:
        """A row stamped in the past carries the transaction's time after an UPDATE."""
        past = datetime(2020, 1, 1, tzinfo=UTC)
        row = await rows(table, updated_at=past)
        assert row["updated_at"] == past
        updated = await conn.fetchrow(
            f'UPDATE "{table}" SET {assignment} WHERE id = $1 RETURNING updated_at, now() AS now',
            row["id"],
        )
        assert updated is not None
        assert updated["updated_at"] == updated["now"]

    async def test_every_live_table_with_updated_at_has_the_trigger(
        self, conn: asyncpg.Connection
    ) -> None:
        """Each table with an updated_at column, except the immutable archive, is maintained."""
        with_column = await conn.fetch(
            "SELECT c.table_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND c.column_name = 'updated_at'"
            " AND t.table_type = 'BASE TABLE' AND c.table_name NOT LIKE 'transactions_archive%'"
        )
        with_trigger = await conn.fetch(
            "SELECT DISTINCT event_object_table FROM information_schema.triggers"
            " WHERE trigger_schema = 'public' AND action_statement LIKE '%set_updated_at%'"
        )
        assert {row["table_name"] for row in with_column} == UPDATED_AT_TABLES
        assert {row["event_object_table"] for row in with_trigger} == UPDATED_AT_TABLES
