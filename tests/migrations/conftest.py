"""Row factories for the schema tests: one valid row per table, its parents made on demand.

`rows(table, **values)` inserts a row that satisfies every constraint of `table`, with `values`
overriding the defaults, and returns it as stored (`RETURNING *`). A missing parent (the user
of a wallet, the wallet of a card) is inserted first, so a test names only what it is about.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

InsertRow = Callable[..., Awaitable[asyncpg.Record]]

USER_KEYED = {
    "user_mfa",
    "user_sessions",
    "connected_wallets",
    "user_risk_profiles",
    "compliance_records",
    "daily_user_stats",
}
WALLET_KEYED = {"wallet_balances", "payment_cards"}


# A valid row per table, as a function of a fresh random token so that unique columns differ.
DEFAULTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "users": lambda token: {
        "email": f"customer-{token}@example.com",
        "password_hash": f"$argon2id$v=19$m=65536,t=3,p=4${token}",
    },
    "user_mfa": lambda token: {
        "method": "totp",
        "secret_key": f"SEED{token}",
        "backup_codes": [token[:8]],
    },
    "user_sessions": lambda token: {
        "session_token": token,
        "ip_address": "198.51.100.4",
        "expires_at": datetime.now(UTC) + timedelta(hours=1),
    },
    "connected_wallets": lambda token: {
        "wallet_type": "bank_account",
        "display_name": "Checking",
        "encrypted_credentials": f"v1:{token}",
    },
    "wallet_balances": lambda _: {"balance": Decimal("100.50000000"), "currency": "USD"},
    "payment_cards": lambda token: {
        "card_token": f"tok_{token}",
        "last_four": "4242",
        "card_brand": "visa",
        "expiry_month": 12,
        "expiry_year": 2030,
    },
    "transactions": lambda _: {
        "amount": Decimal("12.34000000"),
        "currency": "USD",
        "transaction_type": "spend",
    },
    "transactions_archive": lambda _: {
        "user_id": uuid.uuid4(),
        "wallet_id": uuid.uuid4(),
        "amount": Decimal("12.34000000"),
        "currency": "USD",
        "transaction_type": "spend",
        "status": "completed",
        "created_at": datetime(2025, 1, 15, 12, 0, tzinfo=UTC),
    },
    "user_risk_profiles": lambda _: {},
    "compliance_records": lambda _: {"check_type": "kyc", "status": "passed", "score": 10},
    "audit_log": lambda _: {"table_name": "users", "record_id": uuid.uuid4(), "action": "UPDATE"},
    "event_store": lambda _: {
        "aggregate_id": uuid.uuid4(),
        "aggregate_type": "user",
        "event_type": "user.registered",
        "event_data": {"email_domain": "example.com"},
        "version": 1,
    },
    "event_snapshots": lambda _: {
        "aggregate_id": uuid.uuid4(),
        "aggregate_type": "user",
        "data": {"kyc_status": "pending"},
        "version": 1,
    },
    "daily_user_stats": lambda _: {"date": date(2025, 1, 15), "total_transactions": 2},
}


class RowFactory:
    """Inserts valid rows through one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def insert(self, table: str, **values: Any) -> asyncpg.Record:
        """Insert one valid row of `table`, overridden by `values`, and return it."""
        row = DEFAULTS[table](uuid.uuid4().hex) | values
        if table in USER_KEYED and "user_id" not in row:
            row["user_id"] = (await self.insert("users"))["id"]
        if table in WALLET_KEYED and "wallet_id" not in row:
            row["wallet_id"] = (await self.insert("connected_wallets"))["id"]
        if table == "transactions":
            if "wallet_id" not in row:
                owner = {"user_id": row["user_id"]} if "user_id" in row else {}
                wallet = await self.insert("connected_wallets", **owner)
                row["wallet_id"] = wallet["id"]
                row.setdefault("user_id", wallet["user_id"])
            row.setdefault("user_id", None)
        columns = ", ".join(f'"{name}"' for name in row)
        placeholders = ", ".join(f"${index}" for index in range(1, len(row) + 1))
        record = await self._conn.fetchrow(
            f'INSERT INTO "{table}" ({columns}) VALUES ({placeholders}) RETURNING *',
            *row.values(),
        )
        assert record is not None
        return record


@pytest.fixture
def rows(conn: asyncpg.Connection) -> InsertRow:
    """Insert a valid row of a table inside the test's transaction: `await rows("users")`."""
    return RowFactory(conn).insert
