"""The data model as migrated: tables, columns, indexes, defaults, CHECKs, keys and cascades.

Every expectation is written out here from the specification (section 2 of the seed), not read
back from the migrations, so a migration that drifts from the specification fails a test.
Rejections are proved by writing bad rows with raw SQL, each inside a savepoint so that the
test's transaction survives the error.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from kit.db import audit_context

pytestmark = pytest.mark.db

InsertRow = Callable[..., Awaitable[asyncpg.Record]]

TRANSACTION_COLUMNS = [
    "id",
    "user_id",
    "wallet_id",
    "blnk_transaction_id",
    "external_transaction_id",
    "amount",
    "currency",
    "transaction_type",
    "category",
    "merchant_name",
    "merchant_category",
    "description",
    "status",
    "risk_score",
    "compliance_status",
    "metadata",
    "created_at",
    "updated_at",
]

COLUMNS: dict[str, list[str]] = {
    "users": [
        "id",
        "email",
        "password_hash",
        "phone_number",
        "kyc_status",
        "kyc_data",
        "risk_profile",
        "preferences",
        "is_active",
        "email_verified_at",
        "phone_verified_at",
        "created_at",
        "updated_at",
        "deleted_at",
    ],
    "user_mfa": [
        "id",
        "user_id",
        "method",
        "secret_key",
        "backup_codes",
        "phone_number",
        "email_address",
        "is_enabled",
        "is_primary",
        "last_used_at",
        "created_at",
    ],
    "user_sessions": [
        "id",
        "user_id",
        "session_token",
        "ip_address",
        "user_agent",
        "location",
        "is_active",
        "expires_at",
        "created_at",
    ],
    "connected_wallets": [
        "id",
        "user_id",
        "wallet_type",
        "external_id",
        "encrypted_credentials",
        "display_name",
        "currency",
        "metadata",
        "balance_cache",
        "balance_updated_at",
        "is_active",
        "last_sync_at",
        "sync_status",
        "created_at",
        "updated_at",
    ],
    "wallet_balances": [
        "id",
        "wallet_id",
        "balance",
        "available_balance",
        "currency",
        "balance_type",
        "updated_at",
    ],
    "payment_cards": [
        "id",
        "wallet_id",
        "card_token",
        "last_four",
        "card_brand",
        "expiry_month",
        "expiry_year",
        "cardholder_name",
        "billing_address",
        "is_primary",
        "is_active",
        "created_at",
    ],
    "transactions": TRANSACTION_COLUMNS,
    "transactions_archive": TRANSACTION_COLUMNS,
    "user_risk_profiles": [
        "id",
        "user_id",
        "risk_level",
        "risk_score",
        "risk_factors",
        "spending_limits",
        "geographic_restrictions",
        "merchant_restrictions",
        "last_assessment_at",
        "created_at",
        "updated_at",
    ],
    "compliance_records": [
        "id",
        "user_id",
        "transaction_id",
        "check_type",
        "status",
        "score",
        "details",
        "external_reference",
        "checked_at",
    ],
    "audit_log": [
        "id",
        "table_name",
        "record_id",
        "action",
        "old_values",
        "new_values",
        "changed_by",
        "actor_id",  # the acting id even when it is not a users row (documented in 0005)
        "ip_address",
        "user_agent",
        "created_at",
    ],
    "event_store": [
        "id",
        "aggregate_id",
        "aggregate_type",
        "event_type",
        "event_data",
        "event_metadata",
        "version",
        "sequence_number",
        "created_at",
    ],
    "event_snapshots": ["id", "aggregate_id", "aggregate_type", "data", "version", "created_at"],
    "daily_user_stats": [
        "date",
        "user_id",
        "total_transactions",
        "total_amount",
        "average_transaction",
        "unique_merchants",
        "risk_incidents",
    ],
}

MONEY_COLUMNS = [
    ("connected_wallets", "balance_cache"),
    ("wallet_balances", "balance"),
    ("wallet_balances", "available_balance"),
    ("transactions", "amount"),
    ("transactions_archive", "amount"),
    ("daily_user_stats", "total_amount"),
    ("daily_user_stats", "average_transaction"),
]

# The specification's indexes, with their definitions as PostgreSQL prints them.
SPECIFIED_INDEXES = {
    "idx_users_email": "CREATE INDEX idx_users_email ON public.users USING btree (email)",
    "idx_users_kyc_status": (
        "CREATE INDEX idx_users_kyc_status ON public.users USING btree (kyc_status)"
    ),
    "idx_users_active": (
        "CREATE INDEX idx_users_active ON public.users USING btree (is_active)"
        " WHERE (is_active = true)"
    ),
    "idx_transactions_user_id": (
        "CREATE INDEX idx_transactions_user_id ON public.transactions USING btree (user_id)"
    ),
    "idx_transactions_wallet_id": (
        "CREATE INDEX idx_transactions_wallet_id ON public.transactions USING btree (wallet_id)"
    ),
    "idx_transactions_status": (
        "CREATE INDEX idx_transactions_status ON public.transactions USING btree (status)"
    ),
    "idx_transactions_created_at": (
        "CREATE INDEX idx_transactions_created_at ON public.transactions USING btree (created_at)"
    ),
    "idx_transactions_amount": (
        "CREATE INDEX idx_transactions_amount ON public.transactions USING btree (amount)"
    ),
    "idx_event_store_aggregate": (
        "CREATE INDEX idx_event_store_aggregate ON public.event_store"
        " USING btree (aggregate_id, version)"
    ),
    "idx_event_store_type": (
        "CREATE INDEX idx_event_store_type ON public.event_store"
        " USING btree (aggregate_type, event_type)"
    ),
    "idx_event_store_sequence": (
        "CREATE INDEX idx_event_store_sequence ON public.event_store USING btree (sequence_number)"
    ),
}

# Indexes added for foreign keys and lookups the specification leaves unindexed.
FOREIGN_KEY_INDEXES = [
    ("user_sessions", "idx_user_sessions_user_id"),
    ("connected_wallets", "idx_connected_wallets_user_id"),
    ("wallet_balances", "idx_wallet_balances_wallet_id"),
    ("payment_cards", "idx_payment_cards_wallet_id"),
    ("user_risk_profiles", "idx_user_risk_profiles_user_id"),
    ("compliance_records", "idx_compliance_records_user_id"),
    ("compliance_records", "idx_compliance_records_transaction_id"),
    ("audit_log", "idx_audit_log_record"),
    ("audit_log", "idx_audit_log_changed_by"),
    ("audit_log", "idx_audit_log_actor_id"),
    ("audit_log", "idx_audit_log_created_at"),
    ("daily_user_stats", "idx_daily_user_stats_user_id"),
    ("transactions_archive", "idx_transactions_archive_user_created"),
    ("transactions_archive", "idx_transactions_archive_wallet_created"),
]


class TestTables:
    """Every table, column and index of the specification exists, with the right types."""

    async def test_every_table_exists(self, conn: asyncpg.Connection) -> None:
        """All fourteen tables of the data model are in schema public."""
        found = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_name = ANY($1::text[])",
            list(COLUMNS),
        )
        assert {row["table_name"] for row in found} == set(COLUMNS)

    @pytest.mark.parametrize("table", list(COLUMNS))
    async def test_columns_match_the_specification(
        self, conn: asyncpg.Connection, table: str
    ) -> None:
        """The table starts with exactly the seed's columns, in order (later areas may append)."""
        found = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
        names = [row["column_name"] for row in found]
        assert names[: len(COLUMNS[table])] == COLUMNS[table]

    async def test_no_column_is_a_naive_timestamp(self, conn: asyncpg.Connection) -> None:
        """Every timestamp column of the data model is TIMESTAMPTZ."""
        naive = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = ANY($1::text[])"
            " AND data_type = 'timestamp without time zone'",
            list(COLUMNS),
        )
        assert naive == []

    async def test_creation_times_are_required(self, conn: asyncpg.Connection) -> None:
        """Every created_at / updated_at column is NOT NULL with a NOW() default."""
        found = await conn.fetch(
            "SELECT table_name, column_name, is_nullable, column_default"
            " FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = ANY($1::text[])"
            " AND column_name IN ('created_at', 'updated_at')",
            list(COLUMNS),
        )
        assert len(found) == sum(
            ("created_at" in columns) + ("updated_at" in columns) for columns in COLUMNS.values()
        )
        for row in found:
            assert row["is_nullable"] == "NO", row
            assert row["column_default"] == "now()", row

    @pytest.mark.parametrize(("table", "column"), MONEY_COLUMNS)
    async def test_money_columns_are_decimal_18_8(
        self, conn: asyncpg.Connection, table: str, column: str
    ) -> None:
        """Money is stored as DECIMAL(18,8), never as a float."""
        row = await conn.fetchrow(
            "SELECT data_type, numeric_precision, numeric_scale FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
            table,
            column,
        )
        assert row is not None
        assert (row["data_type"], row["numeric_precision"], row["numeric_scale"]) == (
            "numeric",
            18,
            8,
        )

    async def test_specified_indexes_exist_as_specified(self, conn: asyncpg.Connection) -> None:
        """Each index the specification names exists with its specified columns."""
        found = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND indexname = ANY($1::text[])",
            list(SPECIFIED_INDEXES),
        )
        assert {row["indexname"]: row["indexdef"] for row in found} == SPECIFIED_INDEXES

    @pytest.mark.parametrize(("table", "index"), FOREIGN_KEY_INDEXES)
    async def test_foreign_keys_and_lookups_are_indexed(
        self, conn: asyncpg.Connection, table: str, index: str
    ) -> None:
        """The index added for an unindexed foreign key or lookup exists on its table."""
        found = await conn.fetchval(
            "SELECT tablename FROM pg_indexes WHERE schemaname = 'public' AND indexname = $1",
            index,
        )
        assert found == table

    async def test_ledger_schema_is_reserved_for_the_ledger(self, conn: asyncpg.Connection) -> None:
        """Schema ledger exists, is documented, and holds the ledger's own tables."""
        comment = await conn.fetchval(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'ledger'"
        )
        assert comment is not None
        assert "ledger" in comment
        ledger_tables = {
            row["relname"]
            for row in await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'ledger' AND c.relkind IN ('r', 'p')"
            )
        }
        assert {"balances", "transactions", "commit_batches", "balance_changes"} <= ledger_tables

    async def test_roles_have_the_documented_attributes(self, conn: asyncpg.Connection) -> None:
        """dwaybank_user is bound by row-level security and dwaybank_service bypasses it."""
        found = await conn.fetch(
            "SELECT rolname, rolcanlogin, rolbypassrls, rolsuper FROM pg_roles"
            " WHERE rolname IN ('dwaybank_user', 'dwaybank_service') ORDER BY rolname"
        )
        assert [tuple(row) for row in found] == [
            ("dwaybank_service", False, True, False),
            ("dwaybank_user", False, False, False),
        ]

    async def test_service_role_may_act_for_a_user(self, conn: asyncpg.Connection) -> None:
        """dwaybank_service is a member of dwaybank_user, never the other way round."""
        row = await conn.fetchrow(
            "SELECT pg_has_role('dwaybank_service', 'dwaybank_user', 'MEMBER') AS down,"
            " pg_has_role('dwaybank_user', 'dwaybank_service', 'MEMBER') AS up"
        )
        assert row is not None
        assert (row["down"], row["up"]) == (True, False)


class TestDefaults:
    """Columns left out of an INSERT take the specification's defaults."""

    @pytest.mark.parametrize(
        ("table", "expected"),
        [
            (
                "users",
                {
                    "kyc_status": "pending",
                    "risk_profile": {"level": "medium", "score": 50},
                    "preferences": {},
                    "is_active": True,
                },
            ),
            ("user_mfa", {"is_enabled": False, "is_primary": False}),
            ("user_sessions", {"is_active": True}),
            (
                "connected_wallets",
                {"currency": "USD", "metadata": {}, "is_active": True, "sync_status": "pending"},
            ),
            ("wallet_balances", {"balance_type": "current"}),
            ("payment_cards", {"is_primary": False, "is_active": True}),
            (
                "transactions",
                {
                    "status": "pending",
                    "risk_score": 0,
                    "compliance_status": "approved",
                    "metadata": {},
                },
            ),
            (
                "user_risk_profiles",
                {
                    "risk_level": "medium",
                    "risk_score": 50,
                    "risk_factors": {},
                    "spending_limits": {"daily": 5000, "weekly": 15000, "monthly": 50000},
                    "geographic_restrictions": {},
                    "merchant_restrictions": {},
                },
            ),
            ("event_store", {"event_metadata": {}}),
            (
                "daily_user_stats",
                {
                    "total_amount": Decimal(0),
                    "average_transaction": Decimal(0),
                    "unique_merchants": 0,
                    "risk_incidents": 0,
                },
            ),
        ],
    )
    async def test_defaults_match_the_specification(
        self, rows: InsertRow, table: str, expected: dict[str, Any]
    ) -> None:
        """A row inserted without these columns holds the specified defaults."""
        row = await rows(table)
        assert {column: row[column] for column in expected} == expected

    async def test_ids_are_generated(self, rows: InsertRow) -> None:
        """A row inserted without an id gets a fresh UUID."""
        first, second = await rows("users"), await rows("users")
        assert isinstance(first["id"], uuid.UUID)
        assert first["id"] != second["id"]


# (table, column, a value its CHECK refuses). The specification's CHECKs first, then ours.
BAD_VALUES: list[tuple[str, str, object]] = [
    ("users", "kyc_status", "verified"),
    ("user_mfa", "method", "fax"),
    ("connected_wallets", "wallet_type", "paypal"),
    ("wallet_balances", "balance_type", "reserved"),
    ("transactions", "transaction_type", "gift"),
    ("transactions", "status", "settled"),
    ("transactions", "risk_score", -1),
    ("transactions", "risk_score", 101),
    ("transactions", "compliance_status", "cleared"),
    ("transactions_archive", "status", "settled"),
    ("transactions_archive", "risk_score", 101),
    ("user_risk_profiles", "risk_level", "extreme"),
    ("user_risk_profiles", "risk_score", -1),
    ("user_risk_profiles", "risk_score", 101),
    ("compliance_records", "check_type", "credit"),
    ("compliance_records", "status", "pending"),
    ("audit_log", "action", "TRUNCATE"),
    ("users", "email", "no-at-sign.example.com"),
    ("users", "email", "@example.com"),
    ("connected_wallets", "currency", "usd"),
    ("wallet_balances", "currency", "US"),
    ("payment_cards", "last_four", "42a2"),
    ("payment_cards", "expiry_month", 0),
    ("payment_cards", "expiry_month", 13),
    ("payment_cards", "expiry_year", 1999),
    ("transactions", "amount", Decimal(0)),
    ("transactions", "amount", Decimal("-0.00000001")),
    ("transactions", "currency", "U$D"),
    ("transactions_archive", "amount", Decimal(0)),
    ("event_store", "version", -1),
    ("event_snapshots", "version", -1),
    ("daily_user_stats", "total_transactions", -1),
    ("daily_user_stats", "unique_merchants", -1),
    ("daily_user_stats", "risk_incidents", -1),
    ("daily_user_stats", "total_amount", Decimal(-1)),
    ("daily_user_stats", "average_transaction", Decimal(-1)),
]


class TestChecks:
    """Every CHECK refuses a bad row, and a valid row of every table is accepted."""

    @pytest.mark.parametrize(("table", "column", "value"), BAD_VALUES)
    async def test_check_rejects_bad_value(
        self, conn: asyncpg.Connection, rows: InsertRow, table: str, column: str, value: object
    ) -> None:
        """PostgreSQL refuses the row whose column breaks its CHECK."""
        with pytest.raises(asyncpg.CheckViolationError):
            async with conn.transaction():
                await rows(table, **{column: value})

    @pytest.mark.parametrize("table", list(COLUMNS))
    async def test_valid_row_is_accepted(
        self, conn: asyncpg.Connection, rows: InsertRow, table: str
    ) -> None:
        """A row that satisfies every constraint is stored."""
        await rows(table)
        assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') >= 1

    @pytest.mark.parametrize(
        ("table", "column", "value"),
        [
            ("users", "kyc_status", "under_review"),
            ("payment_cards", "last_four", "0000"),
            ("payment_cards", "expiry_month", 1),
            ("transactions", "amount", Decimal("0.00000001")),
            ("transactions", "amount", Decimal("9999999999.99999999")),
            ("transactions", "currency", "USDC"),
            ("transactions", "risk_score", 100),
            ("user_risk_profiles", "risk_score", 0),
        ],
    )
    async def test_boundary_value_is_accepted(
        self, rows: InsertRow, table: str, column: str, value: object
    ) -> None:
        """A value at the edge of what a CHECK allows is stored unchanged."""
        row = await rows(table, **{column: value})
        assert row[column] == value


class TestUniqueConstraints:
    """UNIQUE constraints refuse duplicates."""

    async def test_email_is_unique(self, conn: asyncpg.Connection, rows: InsertRow) -> None:
        """Two users cannot share an email address."""
        await rows("users", email="twin@example.com")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("users", email="twin@example.com")

    async def test_one_mfa_row_per_user_and_method(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A user has at most one MFA row per method, but may have several methods."""
        first = await rows("user_mfa", method="totp")
        await rows("user_mfa", user_id=first["user_id"], method="sms")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("user_mfa", user_id=first["user_id"], method="totp")

    async def test_session_token_is_unique(self, conn: asyncpg.Connection, rows: InsertRow) -> None:
        """Two sessions cannot share a token."""
        await rows("user_sessions", session_token="same-token")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("user_sessions", session_token="same-token")

    async def test_event_version_is_unique_per_aggregate(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """An aggregate cannot have two events with one version; another aggregate can."""
        aggregate_id = uuid.uuid4()
        await rows("event_store", aggregate_id=aggregate_id, version=1)
        await rows("event_store", aggregate_id=uuid.uuid4(), version=1)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("event_store", aggregate_id=aggregate_id, version=1)

    async def test_one_snapshot_per_aggregate(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """An aggregate has at most one snapshot."""
        aggregate_id = uuid.uuid4()
        await rows("event_snapshots", aggregate_id=aggregate_id)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("event_snapshots", aggregate_id=aggregate_id, version=2)

    async def test_one_stats_row_per_user_and_day(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """daily_user_stats keeps one row per (date, user_id)."""
        first = await rows("daily_user_stats", date=date(2025, 3, 1))
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("daily_user_stats", date=date(2025, 3, 1), user_id=first["user_id"])


class TestEventStore:
    """The event store orders events globally."""

    async def test_sequence_number_increases(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """Each appended event gets a larger sequence_number than the one before."""
        aggregate_id = uuid.uuid4()
        numbers = [
            (await rows("event_store", aggregate_id=aggregate_id, version=version))[
                "sequence_number"
            ]
            for version in (1, 2, 3)
        ]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == 3


class TestForeignKeys:
    """Foreign keys refuse dangling references and cascade as specified."""

    async def test_deleting_a_user_removes_everything_they_own(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """MFA, sessions, wallets (with balances and cards), risk profiles and stats go too."""
        user_id = (await rows("users"))["id"]
        wallet_id = (await rows("connected_wallets", user_id=user_id))["id"]
        owned = {
            "user_mfa": (await rows("user_mfa", user_id=user_id))["id"],
            "user_sessions": (await rows("user_sessions", user_id=user_id))["id"],
            "connected_wallets": wallet_id,
            "wallet_balances": (await rows("wallet_balances", wallet_id=wallet_id))["id"],
            "payment_cards": (await rows("payment_cards", wallet_id=wallet_id))["id"],
            "user_risk_profiles": (await rows("user_risk_profiles", user_id=user_id))["id"],
        }
        await rows("daily_user_stats", user_id=user_id)
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        for table, row_id in owned.items():
            left = await conn.fetchval(f'SELECT count(*) FROM "{table}" WHERE id = $1', row_id)
            assert left == 0, table
        assert (
            await conn.fetchval("SELECT count(*) FROM daily_user_stats WHERE user_id = $1", user_id)
            == 0
        )

    async def test_deleting_a_wallet_removes_its_balances_and_cards(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A wallet's balances and cards are deleted with it; its user stays."""
        wallet = await rows("connected_wallets")
        balance_id = (await rows("wallet_balances", wallet_id=wallet["id"]))["id"]
        card_id = (await rows("payment_cards", wallet_id=wallet["id"]))["id"]
        await conn.execute("DELETE FROM connected_wallets WHERE id = $1", wallet["id"])
        assert (
            await conn.fetchval("SELECT count(*) FROM wallet_balances WHERE id = $1", balance_id)
            == 0
        )
        assert await conn.fetchval("SELECT count(*) FROM payment_cards WHERE id = $1", card_id) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", wallet["user_id"]) == 1
        )

    async def test_transaction_for_missing_user_is_refused(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A transaction cannot reference a user that does not exist."""
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await rows("transactions", user_id=uuid.uuid4(), wallet_id=None)

    async def test_transaction_for_missing_wallet_is_refused(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A transaction cannot reference a wallet that does not exist."""
        user_id = (await rows("users"))["id"]
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await rows("transactions", user_id=user_id, wallet_id=uuid.uuid4())

    async def test_user_with_transactions_cannot_be_deleted(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """transactions.user_id has no ON DELETE action, so money history blocks deletion."""
        transaction = await rows("transactions")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await conn.execute("DELETE FROM users WHERE id = $1", transaction["user_id"])

    async def test_user_with_compliance_records_cannot_be_deleted(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """compliance_records.user_id keeps the plain REFERENCES: AML records are retained."""
        record = await rows("compliance_records")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await conn.execute("DELETE FROM users WHERE id = $1", record["user_id"])

    async def test_compliance_record_for_missing_transaction_is_refused(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A compliance record cannot reference a transaction that does not exist."""
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await rows("compliance_records", transaction_id=uuid.uuid4())

    async def test_deleting_a_user_clears_changed_by_in_their_audit_rows(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """The audit trail survives an erasure, with changed_by set to NULL."""
        user_id = (await rows("users"))["id"]
        await audit_context(conn, actor_id=user_id)
        await conn.execute("UPDATE users SET phone_number = '+15550100' WHERE id = $1", user_id)
        await audit_context(conn, actor_id=None)
        audit_id = await conn.fetchval(
            "SELECT id FROM audit_log WHERE changed_by = $1 AND action = 'UPDATE'", user_id
        )
        assert audit_id is not None
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        row = await conn.fetchrow(
            "SELECT changed_by, actor_id FROM audit_log WHERE id = $1", audit_id
        )
        assert row is not None
        assert row["changed_by"] is None
        assert row["actor_id"] == user_id
