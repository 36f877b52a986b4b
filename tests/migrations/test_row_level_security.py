"""Row-level security: a transaction acting for one customer cannot reach another's rows.

Method: two customers, A and B, each with a full set of rows (profile, MFA, session, wallet,
balance, card, transaction, risk profile, compliance record, daily statistics), are written by
the test's superuser connection. The transaction then switches to the `dwaybank_user` role
with `kit.db.acting_for` (exactly as the application does) and tries to read, change, delete
and create rows on both sides. Superusers bypass row-level security, so only the switched role
proves anything. The service role and its members are checked to see both customers.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import pytest

from kit.db import acting_for

pytestmark = pytest.mark.db

InsertRow = Callable[..., Awaitable[asyncpg.Record]]


@dataclass(frozen=True)
class Customer:
    """The ids of one customer's rows, by table."""

    user_id: uuid.UUID
    ids: dict[str, uuid.UUID]


async def _make_customer(rows: InsertRow) -> Customer:
    user_id = (await rows("users"))["id"]
    wallet_id = (await rows("connected_wallets", user_id=user_id))["id"]
    transaction_id = (await rows("transactions", user_id=user_id, wallet_id=wallet_id))["id"]
    ids = {
        "users": user_id,
        "connected_wallets": wallet_id,
        "transactions": transaction_id,
        "wallet_balances": (await rows("wallet_balances", wallet_id=wallet_id))["id"],
        "payment_cards": (await rows("payment_cards", wallet_id=wallet_id))["id"],
        "user_mfa": (await rows("user_mfa", user_id=user_id))["id"],
        "user_sessions": (await rows("user_sessions", user_id=user_id))["id"],
        "user_risk_profiles": (await rows("user_risk_profiles", user_id=user_id))["id"],
        "compliance_records": (
            await rows("compliance_records", user_id=user_id, transaction_id=transaction_id)
        )["id"],
        "transactions_archive": (
            await rows("transactions_archive", user_id=user_id, wallet_id=wallet_id)
        )["id"],
    }
    await rows("daily_user_stats", user_id=user_id)
    return Customer(user_id=user_id, ids=ids)


@pytest.fixture
async def customer_a(rows: InsertRow) -> Customer:
    """Customer A and every kind of row A owns."""
    return await _make_customer(rows)


@pytest.fixture
async def customer_b(rows: InsertRow) -> Customer:
    """Customer B and every kind of row B owns."""
    return await _make_customer(rows)


OWNED_TABLES = [
    "users",
    "user_mfa",
    "user_sessions",
    "connected_wallets",
    "wallet_balances",
    "payment_cards",
    "transactions",
    "user_risk_profiles",
    "compliance_records",
]

# A no-op assignment per table, enough to make an UPDATE touch the row.
TOUCH = {
    "users": "phone_number = phone_number",
    "user_mfa": "is_enabled = is_enabled",
    "user_sessions": "is_active = is_active",
    "connected_wallets": "display_name = display_name",
    "wallet_balances": "balance = balance",
    "payment_cards": "is_active = is_active",
    "transactions": "description = description",
    "user_risk_profiles": "risk_level = risk_level",
    "compliance_records": "score = score",
}


async def _visible(conn: asyncpg.Connection, table: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    found = await conn.fetch(f'SELECT id FROM "{table}" WHERE id = ANY($1::uuid[])', ids)
    return {row["id"] for row in found}


class TestPolicies:
    """Row-level security is switched on, and forced, wherever a customer owns rows."""

    @pytest.mark.parametrize(
        "table", [*OWNED_TABLES, "daily_user_stats", "audit_log", "transactions_archive"]
    )
    async def test_row_level_security_is_enabled_and_forced(
        self, conn: asyncpg.Connection, table: str
    ) -> None:
        """The table enforces its policies, on its owner too."""
        row = await conn.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE oid = to_regclass('public.' || $1)",
            table,
        )
        assert row is not None
        assert (row["relrowsecurity"], row["relforcerowsecurity"]) == (True, True)


class TestUserIsolation:
    """Acting for A reaches A's rows and none of B's."""

    @pytest.mark.parametrize("table", OWNED_TABLES)
    async def test_user_sees_only_own_rows(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer, table: str
    ) -> None:
        """Of A's and B's rows, A sees exactly A's."""
        await acting_for(conn, user_id=customer_a.user_id)
        ids = [customer_a.ids[table], customer_b.ids[table]]
        assert await _visible(conn, table, ids) == {customer_a.ids[table]}

    async def test_user_sees_only_own_users_row(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """An unfiltered scan of users returns A's row and nothing else."""
        await acting_for(conn, user_id=customer_a.user_id)
        assert [row["id"] for row in await conn.fetch("SELECT id FROM users")] == [
            customer_a.user_id
        ]

    async def test_user_sees_only_own_daily_stats(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """An unfiltered scan of daily_user_stats returns only A's statistics."""
        await acting_for(conn, user_id=customer_a.user_id)
        found = await conn.fetch("SELECT DISTINCT user_id FROM daily_user_stats")
        assert [row["user_id"] for row in found] == [customer_a.user_id]

    async def test_user_sees_only_own_archived_transactions(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """The transaction history shows A's archived rows and none of B's."""
        await acting_for(conn, user_id=customer_a.user_id)
        ids = [customer_a.ids["transactions_archive"], customer_b.ids["transactions_archive"]]
        assert await _visible(conn, "transactions_archive", ids) == {
            customer_a.ids["transactions_archive"]
        }

    @pytest.mark.parametrize("table", OWNED_TABLES)
    async def test_user_cannot_update_other_users_rows(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer, table: str
    ) -> None:
        """An UPDATE aimed at B's row affects nothing, while the same UPDATE of A's row works."""
        await acting_for(conn, user_id=customer_a.user_id)
        statement = f'UPDATE "{table}" SET {TOUCH[table]} WHERE id = $1'
        assert await conn.execute(statement, customer_b.ids[table]) == "UPDATE 0"
        assert await conn.execute(statement, customer_a.ids[table]) == "UPDATE 1"

    @pytest.mark.parametrize("table", OWNED_TABLES)
    async def test_user_cannot_delete_other_users_rows(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer, table: str
    ) -> None:
        """A DELETE aimed at B's row affects nothing and B's row is still there."""
        await acting_for(conn, user_id=customer_a.user_id)
        deleted = await conn.execute(f'DELETE FROM "{table}" WHERE id = $1', customer_b.ids[table])
        assert deleted == "DELETE 0"
        await conn.execute("RESET ROLE")
        assert await _visible(conn, table, [customer_b.ids[table]]) == {customer_b.ids[table]}

    @pytest.mark.parametrize(
        ("table", "values"),
        [
            ("users", lambda a, b: {"id": uuid.uuid4()}),
            ("user_mfa", lambda a, b: {"user_id": b.user_id, "method": "sms"}),
            ("user_sessions", lambda a, b: {"user_id": b.user_id}),
            ("connected_wallets", lambda a, b: {"user_id": b.user_id}),
            ("wallet_balances", lambda a, b: {"wallet_id": b.ids["connected_wallets"]}),
            ("payment_cards", lambda a, b: {"wallet_id": b.ids["connected_wallets"]}),
            (
                "transactions",
                lambda a, b: {"user_id": b.user_id, "wallet_id": b.ids["connected_wallets"]},
            ),
            (
                "transactions",
                lambda a, b: {"user_id": a.user_id, "wallet_id": b.ids["connected_wallets"]},
            ),
            ("user_risk_profiles", lambda a, b: {"user_id": b.user_id}),
            ("compliance_records", lambda a, b: {"user_id": b.user_id}),
            (
                "compliance_records",
                lambda a, b: {"user_id": a.user_id, "transaction_id": b.ids["transactions"]},
            ),
            ("daily_user_stats", lambda a, b: {"user_id": b.user_id, "date": date(2025, 2, 1)}),
        ],
        ids=[
            "users",
            "user_mfa",
            "user_sessions",
            "connected_wallets",
            "wallet_balances",
            "payment_cards",
            "transactions",
            "transactions-on-other-wallet",
            "user_risk_profiles",
            "compliance_records",
            "compliance_records-on-other-transaction",
            "daily_user_stats",
        ],
    )
    async def test_user_cannot_insert_rows_for_other_user(
        self,
        conn: asyncpg.Connection,
        rows: InsertRow,
        customer_a: Customer,
        customer_b: Customer,
        *,
        table: str,
        values: Callable[[Customer, Customer], dict[str, object]],
    ) -> None:
        """A row owned by B, or pointing at B's wallet or transaction, is refused for A."""
        await acting_for(conn, user_id=customer_a.user_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await rows(table, **values(customer_a, customer_b))

    @pytest.mark.parametrize(
        ("table", "column", "target"),
        [
            ("user_mfa", "user_id", "users"),
            ("user_sessions", "user_id", "users"),
            ("connected_wallets", "user_id", "users"),
            ("wallet_balances", "wallet_id", "connected_wallets"),
            ("payment_cards", "wallet_id", "connected_wallets"),
            ("transactions", "user_id", "users"),
            ("transactions", "wallet_id", "connected_wallets"),
            ("user_risk_profiles", "user_id", "users"),
            ("compliance_records", "user_id", "users"),
            ("compliance_records", "transaction_id", "transactions"),
        ],
    )
    async def test_user_cannot_move_own_row_to_other_user(
        self,
        conn: asyncpg.Connection,
        customer_a: Customer,
        customer_b: Customer,
        *,
        table: str,
        column: str,
        target: str,
    ) -> None:
        """Re-pointing A's row at B (or B's wallet or transaction) is refused."""
        await acting_for(conn, user_id=customer_a.user_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await conn.execute(
                    f'UPDATE "{table}" SET "{column}" = $1 WHERE id = $2',
                    customer_b.ids[target],
                    customer_a.ids[table],
                )

    async def test_user_can_write_own_rows(
        self, conn: asyncpg.Connection, rows: InsertRow, customer_a: Customer
    ) -> None:
        """A creates a wallet, a balance, a card and a transaction of A's own."""
        await acting_for(conn, user_id=customer_a.user_id)
        wallet = await rows("connected_wallets", user_id=customer_a.user_id)
        await rows("wallet_balances", wallet_id=wallet["id"])
        await rows("payment_cards", wallet_id=wallet["id"])
        await rows("transactions", user_id=customer_a.user_id, wallet_id=wallet["id"])
        assert await conn.fetchval("SELECT count(*) FROM connected_wallets") == 2

    async def test_users_own_writes_are_audited(
        self, conn: asyncpg.Connection, rows: InsertRow, customer_a: Customer
    ) -> None:
        """The audit trigger records a user-acting write, and A can read that audit row."""
        await acting_for(conn, user_id=customer_a.user_id, ip="203.0.113.9")
        wallet = await rows("connected_wallets", user_id=customer_a.user_id)
        row = await conn.fetchrow(
            "SELECT action, changed_by, host(ip_address) AS ip FROM audit_log"
            " WHERE table_name = 'connected_wallets' AND record_id = $1",
            wallet["id"],
        )
        assert row is not None
        assert tuple(row) == ("INSERT", customer_a.user_id, "203.0.113.9")

    async def test_user_reads_only_own_audit_rows(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """A sees the audit rows of A's own actions and none of B's."""
        for customer in (customer_a, customer_b):
            await acting_for(conn, user_id=customer.user_id)
            await conn.execute(
                "UPDATE users SET phone_number = '+15550123' WHERE id = $1", customer.user_id
            )
            await conn.execute("RESET ROLE")
        await acting_for(conn, user_id=customer_a.user_id)
        found = await conn.fetch("SELECT DISTINCT changed_by FROM audit_log")
        assert [row["changed_by"] for row in found] == [customer_a.user_id]

    @pytest.mark.parametrize(
        "statement",
        [
            "INSERT INTO audit_log (table_name, record_id, action) VALUES ('users', $1, 'UPDATE')",
            "UPDATE audit_log SET user_agent = 'forged' WHERE changed_by = $1",
            "DELETE FROM audit_log WHERE changed_by = $1",
            "UPDATE transactions_archive SET description = 'forged' WHERE user_id = $1",
            "DELETE FROM transactions_archive WHERE user_id = $1",
            "SELECT count(*) FROM event_store WHERE aggregate_id = $1",
            "SELECT count(*) FROM event_snapshots WHERE aggregate_id = $1",
            "SELECT count(*) FROM transactions_archive_2025_01 WHERE user_id = $1",
        ],
    )
    async def test_user_cannot_touch_what_is_not_granted(
        self, conn: asyncpg.Connection, customer_a: Customer, statement: str
    ) -> None:
        """The audit trail and the history are read-only and events unreadable for users."""
        await acting_for(conn, user_id=customer_a.user_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with conn.transaction():
                await conn.execute(statement, customer_a.user_id)

    async def test_user_may_append_events(
        self, conn: asyncpg.Connection, customer_a: Customer
    ) -> None:
        """A user-acting transaction may append to the event store without reading it."""
        await acting_for(conn, user_id=customer_a.user_id)
        status = await conn.execute(
            "INSERT INTO event_store (aggregate_id, aggregate_type, event_type, event_data,"
            " version) VALUES ($1, 'user', 'user.profile_updated', '{}', 1)",
            customer_a.user_id,
        )
        assert status == "INSERT 0 1"

    async def test_without_a_user_id_nothing_is_visible(
        self, conn: asyncpg.Connection, customer_a: Customer
    ) -> None:
        """The user role with no dwaybank.user_id set sees no row at all."""
        await conn.execute("SELECT set_config('dwaybank.user_id', '', true)")
        await conn.execute("SET LOCAL ROLE dwaybank_user")
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        assert await conn.fetchval("SELECT count(*) FROM transactions") == 0


class TestServiceAccess:
    """The service role, its members and superusers see every customer."""

    async def test_superuser_sees_both_customers(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """The migrating superuser is not limited by row-level security."""
        for table in OWNED_TABLES:
            ids = [customer_a.ids[table], customer_b.ids[table]]
            assert await _visible(conn, table, ids) == set(ids), table

    async def test_service_role_sees_both_customers(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """dwaybank_service (BYPASSRLS) sees both customers' rows, even with a user id set."""
        await acting_for(conn, user_id=customer_a.user_id)
        await conn.execute("SET LOCAL ROLE dwaybank_service")
        for table in [*OWNED_TABLES, "transactions_archive"]:
            ids = [customer_a.ids[table], customer_b.ids[table]]
            assert await _visible(conn, table, ids) == set(ids), table

    async def test_member_of_service_role_sees_both_customers(
        self, conn: asyncpg.Connection, customer_a: Customer, customer_b: Customer
    ) -> None:
        """A role merely granted dwaybank_service (no BYPASSRLS of its own) sees every row."""
        member = f"dwaybank_test_member_{uuid.uuid4().hex[:12]}"
        await conn.execute(f"CREATE ROLE {member} NOLOGIN IN ROLE dwaybank_service")
        await conn.execute(f"SET LOCAL ROLE {member}")
        for table in OWNED_TABLES:
            ids = [customer_a.ids[table], customer_b.ids[table]]
            assert await _visible(conn, table, ids) == set(ids), table

    async def test_service_role_can_write_for_any_customer(
        self, conn: asyncpg.Connection, rows: InsertRow, customer_b: Customer
    ) -> None:
        """dwaybank_service writes rows for a customer and archives history."""
        await conn.execute("SET LOCAL ROLE dwaybank_service")
        await rows("connected_wallets", user_id=customer_b.user_id)
        await rows(
            "transactions_archive",
            user_id=customer_b.user_id,
            created_at=datetime(2025, 1, 20, tzinfo=UTC),
            amount=Decimal("1.00000000"),
        )

    async def test_service_role_cannot_rewrite_the_audit_trail(
        self, conn: asyncpg.Connection, customer_a: Customer
    ) -> None:
        """audit_log is append-only for the service role as well."""
        await conn.execute("SET LOCAL ROLE dwaybank_service")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with conn.transaction():
                await conn.execute("DELETE FROM audit_log WHERE record_id = $1", customer_a.user_id)
