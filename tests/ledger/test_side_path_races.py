"""The ledger's side paths (API keys, hooks, webhook subscriptions, balance monitors) under
concurrent requests: a request that decides on a row another request is changing acts on the
row as it ends up, never on the version it read first.

Money moves through the serialised engine; these paths write PostgreSQL directly from
concurrent requests, so each check-then-act needs a lock. Each scenario is played explicitly,
never left to timing: a holder transaction makes the competing change (and so holds its row or
advisory lock), the request under test is started, the holder waits until the request waits on
its lock (or has finished, which is the bug), commits, and the request then goes on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import pytest

from kit.db import Database
from ledger import apikey_repository, apikeys, hooks, monitors, webhooks
from ledger.apikeys import MASTER, ApiKeyRecord, Principal
from ledger.errors import LedgerValidationError
from ledger.hooks import HOOKS_MAX, HookIn
from ledger.monitors import MONITORS_PER_BALANCE_MAX, MonitorCache, parse_request
from ledger.surface_errors import ExpiredApiKeyError, HookInvalidError
from tests.ledger.conftest import MakeBalance
from tests.ledger.races import race

pytestmark = pytest.mark.db

KEY_LIFETIME: Final = timedelta(days=1)


class TestApiKeys:
    async def test_a_child_key_is_not_minted_by_a_key_revoked_meanwhile(self, db: Database) -> None:
        """A key checked valid at the start of a request, then revoked while the request creates
        a child key, creates nothing: the revocation wins, and no key outlives it."""
        now = datetime.now(UTC)
        owner = f"owner-{now.timestamp()}"
        async with db.transaction() as conn:
            parent = await apikeys.create_api_key(
                conn,
                principal=MASTER,
                name="parent",
                owner=owner,
                scopes=["*:*"],
                expires_at=now + KEY_LIFETIME,
                now=now,
            )
            row = await apikey_repository.find_by_hash(conn, apikeys.hash_key(parent["key"]))
        assert row is not None
        principal = Principal(is_master=False, key=ApiKeyRecord.from_row(row))

        async def revoke(conn: asyncpg.Connection) -> None:
            await apikeys.revoke_api_key(
                conn, principal=MASTER, api_key_id=parent["api_key_id"], owner=owner, now=now
            )

        async def mint(conn: asyncpg.Connection) -> dict[str, Any]:
            return await apikeys.create_api_key(
                conn,
                principal=principal,
                name="child",
                owner=owner,
                scopes=["ledgers:read"],
                expires_at=now + KEY_LIFETIME / 2,
                now=now,
            )

        result = await race(db, revoke, mint)
        assert isinstance(result, ExpiredApiKeyError), result
        async with db.connection() as conn:
            keys = await conn.fetchval(
                "SELECT count(*) FROM ledger.api_keys WHERE owner_id = $1", owner
            )
        assert keys == 1


class TestHooks:
    async def test_two_creates_never_pass_the_limit_together(self, db: Database) -> None:
        """One short of the limit, a create made while another is uncommitted waits for it and
        is refused: past the limit a pre hook would drop out of the gate's bounded read."""
        now = datetime.now(UTC)
        body = HookIn(url="http://example.com/h", type="POST_TRANSACTION", active=False)
        created: list[str] = []
        try:
            async with db.transaction() as conn:
                present = await conn.fetchval("SELECT count(*) FROM ledger.hooks")
                created.extend(
                    [
                        (await hooks.create_hook(conn, body, now=now))["id"]
                        for _ in range(HOOKS_MAX - 1 - present)
                    ]
                )

            async def create(conn: asyncpg.Connection) -> None:
                created.append((await hooks.create_hook(conn, body, now=now))["id"])

            result = await race(db, create, create)
            assert isinstance(result, HookInvalidError), result
            async with db.connection() as conn:
                assert await conn.fetchval("SELECT count(*) FROM ledger.hooks") == HOOKS_MAX
        finally:
            async with db.transaction() as conn:
                for hook_id in created:
                    await hooks.delete_hook(conn, hook_id)


class TestWebhookSubscriptions:
    async def test_a_patch_keeps_a_concurrent_deactivation(self, db: Database) -> None:
        """A PATCH of the description racing a PATCH that deactivates the subscription does
        not write the old `active` back: the subscription stays off."""
        now = datetime.now(UTC)
        async with db.transaction() as conn:
            created = await webhooks.create_subscription(
                conn,
                {"url": "https://example.com/w", "event_types": ["transaction.applied"]},
                now=now,
                cipher=None,
            )
        subscription_id = created["subscription_id"]
        try:

            async def deactivate(conn: asyncpg.Connection) -> None:
                await webhooks.update_subscription(
                    conn, subscription_id, {"active": False}, now=now
                )

            async def describe(conn: asyncpg.Connection) -> None:
                await webhooks.update_subscription(
                    conn, subscription_id, {"description": "statements"}, now=now
                )

            result = await race(db, deactivate, describe)
            assert result is None, result
            async with db.connection() as conn:
                found = await webhooks.get_subscription(conn, subscription_id)
            assert (found.active, found.description) == (False, "statements")
        finally:
            async with db.transaction() as conn:
                await webhooks.delete_subscription(conn, subscription_id)


class TestBalanceMonitors:
    async def test_an_update_counts_a_balance_its_monitor_left_meanwhile(
        self, db: Database, make_balance: MakeBalance
    ) -> None:
        """A monitor moved off a full balance (and its place taken) while an update puts it
        back is counted as arriving: the balance never holds more than a batch evaluates."""
        cache = MonitorCache()
        full, other = await make_balance(), await make_balance()
        condition = {"field": "balance", "operator": ">", "value": 0, "precision": 1}
        on_full = parse_request({"balance_id": full, "condition": condition})
        moved = None
        for _ in range(MONITORS_PER_BALANCE_MAX):
            async with db.transaction() as conn:
                moved = await monitors.create_monitor(
                    conn, on_full, now=datetime.now(UTC), cache=cache
                )
        assert moved is not None
        monitor_id = moved.monitor_id

        async def move_away_and_fill(conn: asyncpg.Connection) -> None:
            away = parse_request({"balance_id": other, "condition": condition})
            await monitors.update_monitor(conn, monitor_id, away, cache=cache)
            await monitors.create_monitor(conn, on_full, now=datetime.now(UTC), cache=cache)

        async def put_back(conn: asyncpg.Connection) -> None:
            await monitors.update_monitor(conn, monitor_id, on_full, cache=cache)

        result = await race(db, move_away_and_fill, put_back)
        assert isinstance(result, LedgerValidationError), result
        async with db.connection() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM ledger.balance_monitors WHERE balance_id = $1", full
            )
        assert count == MONITORS_PER_BALANCE_MAX
