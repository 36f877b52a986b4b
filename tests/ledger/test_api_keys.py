"""API keys and secure mode through Blnk's own Python SDK, over real HTTP.

The secure-mode server has a master key; each test mints the keys it needs with it and then
drives the API as a Blnk user would, with `X-Blnk-Key` set by the SDK. What is proven: the
401s (missing, unknown, expired, revoked), the scope checks and their 403s (insufficient,
unknown resource, master-only hooks, cross-owner, escalation), the key shown once and stored as
a hash, `last_used_at`, and Blnk's `BLNK_GENERATED_BY` stamp on what a key creates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from blnk_sdk import BlnkClientOptions, blnk_init
from pydantic import SecretStr

from kit.clock import FrozenClock
from kit.db import Database
from kit.settings import Settings
from ledger.apikeys import (
    API_KEY_CACHE_TTL_S,
    LAST_USED_WRITE_INTERVAL_S,
    LAST_USED_WRITES_PENDING_MAX,
    KeyVerifier,
)
from ledger.surface_errors import ExpiredApiKeyError
from ledger.wire import ZERO_TIME
from tests.ledger.servers import MASTER_KEY

pytestmark = pytest.mark.db

FUTURE = "2999-01-01T00:00:00Z"
LAST_USED_WAIT_S = 5.0


@contextmanager
def _client(url: str, key: str) -> Iterator[Any]:
    client = blnk_init(key, BlnkClientOptions(base_url=url, retry_count=1))
    try:
        yield client
    finally:
        client.close()


def _owner() -> str:
    return f"owner-{uuid.uuid4().hex[:10]}"


def _mint(blnk_master: Any, scopes: list[str], *, owner: str | None = None) -> dict[str, Any]:
    response = blnk_master.api_keys.create(
        {"name": "test key", "owner": owner or _owner(), "scopes": scopes, "expires_at": FUTURE}
    )
    assert response.status == 201, response.to_dict()
    data: dict[str, Any] = response.data
    return data


def _ledger(client: Any) -> str:
    response = client.ledgers.create({"name": f"ledger-{uuid.uuid4().hex[:6]}"})
    assert response.status == 201, response.to_dict()
    ledger_id: str = response.data["ledger_id"]
    return ledger_id


class TestManagement:
    def test_create_list_revoke(self, blnk_master: Any) -> None:
        """The master key mints a key (secret shown once), lists it without the secret, revokes it (204)."""
        owner = _owner()
        created = _mint(blnk_master, ["ledgers:read", "transactions:*"], owner=owner)
        assert created["api_key_id"].startswith("api_key_")
        assert len(created["key"]) >= 43
        assert created["owner_id"] == owner
        assert created["scopes"] == ["ledgers:read", "transactions:*"]
        assert created["is_revoked"] is False
        assert created["last_used_at"] == ZERO_TIME
        listed = blnk_master.api_keys.list({"owner": owner})
        assert listed.status == 200, listed.to_dict()
        assert [k["api_key_id"] for k in listed.data] == [created["api_key_id"]]
        assert listed.data[0]["key"] == ""
        revoked = blnk_master.api_keys.delete(created["api_key_id"], {"owner": owner})
        assert revoked.status == 204
        assert revoked.data is None
        after = blnk_master.api_keys.list({"owner": owner}).data[0]
        assert after["is_revoked"] is True
        assert after["revoked_at"] != ZERO_TIME

    async def test_only_a_hash_is_stored(self, blnk_master: Any, db: Database) -> None:
        """The database holds the SHA-256 of the key, never the key itself."""
        created = _mint(blnk_master, ["ledgers:read"])
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT to_jsonb(k) AS everything, key_hash FROM ledger.api_keys k WHERE api_key_id = $1",
                created["api_key_id"],
            )
        assert row is not None
        assert row["key_hash"] == hashlib.sha256(created["key"].encode()).hexdigest()
        assert created["key"] not in str(row["everything"])

    def test_invalid_requests_are_400(self, blnk_master: Any) -> None:
        """A malformed scope or an expiry in the past is 400 APIKEY_INVALID; no owner on list is 400."""
        bad_scope = blnk_master.api_keys.create(
            {"name": "k", "owner": _owner(), "scopes": ["ledgers:fly"], "expires_at": FUTURE}
        )
        assert bad_scope.status == 400
        assert bad_scope.error.code == "APIKEY_INVALID"
        past = blnk_master.api_keys.create(
            {
                "name": "k",
                "owner": _owner(),
                "scopes": ["ledgers:read"],
                "expires_at": "2001-01-01T00:00:00Z",
            }
        )
        assert past.status == 400
        assert past.error.code == "APIKEY_INVALID"
        no_owner = blnk_master.api_keys.list()
        assert no_owner.status == 400
        assert no_owner.error.code == "APIKEY_OWNER_REQUIRED"

    def test_unknown_key_id_is_404(self, blnk_master: Any) -> None:
        """Revoking an id that does not exist is 404 APIKEY_NOT_FOUND."""
        response = blnk_master.api_keys.delete(f"api_key_{uuid.uuid4()}", {"owner": _owner()})
        assert response.status == 404
        assert response.error.code == "APIKEY_NOT_FOUND"

    def test_an_expiry_outside_years_1_to_9999_in_utc_is_400(self, blnk_master: Any) -> None:
        """An expiry whose offset carries it past year 9999 in UTC is 400 APIKEY_INVALID and
        mints nothing (the driver could not encode it: a 500)."""
        owner = _owner()
        response = blnk_master.api_keys.create(
            {
                "name": "k",
                "owner": owner,
                "scopes": ["ledgers:read"],
                "expires_at": "9999-12-31T23:59:59-14:00",
            }
        )
        assert response.status == 400, response.to_dict()
        assert response.error.code == "APIKEY_INVALID"
        assert blnk_master.api_keys.list({"owner": owner}).data == []

    def test_a_key_manages_only_its_owner_within_its_scopes(
        self, blnk_master: Any, secure_ledger_url: str
    ) -> None:
        """A key mints keys for its own owner with narrower scopes; other owners and wider scopes are 403."""
        owner = _owner()
        manager = _mint(blnk_master, ["api-keys:*", "ledgers:read"], owner=owner)
        with _client(secure_ledger_url, manager["key"]) as client:
            child = client.api_keys.create(
                {"name": "child", "owner": owner, "scopes": ["ledgers:read"], "expires_at": FUTURE}
            )
            assert child.status == 201, child.to_dict()
            other = client.api_keys.create(
                {"name": "x", "owner": _owner(), "scopes": ["ledgers:read"], "expires_at": FUTURE}
            )
            assert other.status == 403
            assert other.error.code == "AUTH_CROSS_OWNER_ACCESS"
            wider = client.api_keys.create(
                {"name": "x", "owner": owner, "scopes": ["ledgers:write"], "expires_at": FUTURE}
            )
            assert wider.status == 403
            assert wider.error.code == "AUTH_SCOPE_ESCALATION"
            mine = client.api_keys.list()
            assert sorted(k["api_key_id"] for k in mine.data) == sorted(
                [manager["api_key_id"], child.data["api_key_id"]]
            )
            stranger = _mint(blnk_master, ["ledgers:read"])
            refused = client.api_keys.delete(stranger["api_key_id"])
            assert refused.status == 403
            assert refused.error.code == "AUTH_CROSS_OWNER_ACCESS"

    def test_a_key_cannot_mint_one_that_outlives_it(
        self, blnk_master: Any, secure_ledger_url: str
    ) -> None:
        """A child key expires no later than the key that made it: otherwise a key could renew
        itself for ever by minting its successor before it expires."""
        owner = _owner()
        parent = blnk_master.api_keys.create(
            {
                "name": "short-lived",
                "owner": owner,
                "scopes": ["api-keys:*", "ledgers:read"],
                "expires_at": "2998-01-01T00:00:00Z",
            }
        )
        assert parent.status == 201, parent.to_dict()
        with _client(secure_ledger_url, parent.data["key"]) as client:
            body = {"name": "child", "owner": owner, "scopes": ["ledgers:read"]}
            longer = client.api_keys.create({**body, "expires_at": "2998-01-01T00:00:01Z"})
            assert longer.status == 400, longer.to_dict()
            assert longer.error.code == "APIKEY_INVALID"
            assert "2998-01-01T00:00:00Z" in longer.error.message
            same = client.api_keys.create({**body, "expires_at": "2998-01-01T00:00:00Z"})
            assert same.status == 201, same.to_dict()
        keys = blnk_master.api_keys.list({"owner": owner}).data
        assert len(keys) == 2  # the parent and the one child that does not outlive it


class TestSecureMode:
    def test_missing_key_is_401_but_health_is_open(self, secure_ledger_url: str) -> None:
        """Without X-Blnk-Key every route but / and /health answers 401 AUTH_MISSING_API_KEY."""
        with _client(secure_ledger_url, "") as anonymous:
            assert anonymous.system.health().status == 200
            response = anonymous.ledgers.list()
            assert response.status == 401
            assert response.error.code == "AUTH_MISSING_API_KEY"
        assert httpx.get(f"{secure_ledger_url}/").status_code == 200

    def test_unknown_key_is_401(self, secure_ledger_url: str) -> None:
        """A key that was never issued answers 401 AUTH_INVALID_API_KEY."""
        with _client(secure_ledger_url, secrets.token_urlsafe(32)) as stranger:
            response = stranger.ledgers.list()
        assert response.status == 401
        assert response.error.code == "AUTH_INVALID_API_KEY"

    def test_revoked_key_is_401_at_once(self, blnk_master: Any, secure_ledger_url: str) -> None:
        """A revoked key stops working immediately: 401 AUTH_EXPIRED_API_KEY."""
        created = _mint(blnk_master, ["ledgers:read"])
        with _client(secure_ledger_url, created["key"]) as client:
            assert client.ledgers.list().status == 200
            assert (
                blnk_master.api_keys.delete(
                    created["api_key_id"], {"owner": created["owner_id"]}
                ).status
                == 204
            )
            response = client.ledgers.list()
        assert response.status == 401
        assert response.error.code == "AUTH_EXPIRED_API_KEY"

    async def test_expired_key_is_401(self, secure_ledger_url: str, db: Database) -> None:
        """A key past its expiry answers 401 AUTH_EXPIRED_API_KEY."""
        key = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO ledger.api_keys (api_key_id, key_hash, name, owner_id, scopes, expires_at, created_at)"
                " VALUES ($1, $2, 'old', 'someone', '{*:*}', $3, $4)",
                f"api_key_{uuid.uuid4()}",
                hashlib.sha256(key.encode()).hexdigest(),
                now - timedelta(days=1),
                now - timedelta(days=30),
            )
        with _client(secure_ledger_url, key) as client:
            response = client.ledgers.list()
        assert response.status == 401
        assert response.error.code == "AUTH_EXPIRED_API_KEY"

    def test_scopes_decide_resource_and_action(
        self, blnk_master: Any, secure_ledger_url: str
    ) -> None:
        """ledgers:read lists ledgers but cannot create one or read balances (403 insufficient)."""
        reader = _mint(blnk_master, ["ledgers:read"])
        with _client(secure_ledger_url, reader["key"]) as client:
            assert client.ledgers.list().status == 200
            create = client.ledgers.create({"name": "nope"})
            assert create.status == 403
            assert create.error.code == "AUTH_INSUFFICIENT_PERMISSIONS"
            balances = client.ledger_balances.list()
            assert balances.status == 403
        writer = _mint(blnk_master, ["ledgers:*", "*:read"])
        with _client(secure_ledger_url, writer["key"]) as client:
            ledger_id = _ledger(client)
            assert client.ledger_balances.list().status == 200
            assert client.ledgers.get(ledger_id).status == 200

    def test_unmapped_resources_and_hooks(self, blnk_master: Any, secure_ledger_url: str) -> None:
        """Even a *:* key gets 403 AUTH_UNKNOWN_RESOURCE on /{id}/metadata and needs the master key for hooks."""
        everything = _mint(blnk_master, ["*:*"])
        ledger_id = _ledger(blnk_master)
        with _client(secure_ledger_url, everything["key"]) as client:
            metadata = client.metadata.update(ledger_id, {"meta_data": {"a": 1}})
            assert metadata.status == 403
            assert metadata.error.code == "AUTH_UNKNOWN_RESOURCE"
            hooks = client.hooks.list()
            assert hooks.status == 403
            assert hooks.error.code == "AUTH_MASTER_KEY_REQUIRED"
        assert blnk_master.metadata.update(ledger_id, {"meta_data": {"a": 1}}).status == 200
        assert blnk_master.hooks.list().status == 200

    def test_generated_by_is_stamped_on_what_a_key_creates(
        self, blnk_master: Any, secure_ledger_url: str
    ) -> None:
        """A transaction, a bulk item and an identity created with a key carry BLNK_GENERATED_BY = its id."""
        key = _mint(blnk_master, ["transactions:*", "identities:write", "balances:*"])
        ledger_id = _ledger(blnk_master)
        with _client(secure_ledger_url, key["key"]) as client:
            balance = client.ledger_balances.create({"ledger_id": ledger_id, "currency": "USD"})
            assert balance.status == 201, balance.to_dict()
            posted = client.transactions.create(
                {
                    "precise_amount": 100,
                    "precision": 100,
                    "reference": f"ref-{uuid.uuid4()}",
                    "currency": "USD",
                    "description": "stamped",
                    "source": "@WorldUSD",
                    "destination": balance.data["balance_id"],
                    "allow_overdraft": True,
                    "skip_queue": True,
                    "meta_data": {"note": "kept"},
                }
            )
            assert posted.status == 201, posted.to_dict()
            assert posted.data["meta_data"] == {
                "note": "kept",
                "BLNK_GENERATED_BY": key["api_key_id"],
            }
            bulk = client.transactions.create_bulk(
                {
                    "transactions": [
                        {
                            "precise_amount": 5,
                            "precision": 100,
                            "reference": f"ref-{uuid.uuid4()}",
                            "currency": "USD",
                            "description": "bulk",
                            "source": "@WorldUSD",
                            "destination": balance.data["balance_id"],
                            "allow_overdraft": True,
                        }
                    ]
                }
            )
            assert bulk.status == 201, bulk.to_dict()
            items = blnk_master.search.filter(
                {
                    "filters": [
                        {
                            "field": "parent_transaction",
                            "operator": "eq",
                            "value": bulk.data["batch_id"],
                        }
                    ]
                },
                "transactions",
            ).data
            assert [t["meta_data"]["BLNK_GENERATED_BY"] for t in items] == [key["api_key_id"]]
            identity = client.identity.create({"identity_type": "individual", "first_name": "Key"})
            assert identity.status == 201, identity.to_dict()
            assert identity.data["meta_data"]["BLNK_GENERATED_BY"] == key["api_key_id"]
        by_master = blnk_master.identity.create(
            {"identity_type": "individual", "first_name": "Master"}
        )
        assert "BLNK_GENERATED_BY" not in by_master.data["meta_data"]

    def test_last_used_at_is_recorded(self, blnk_master: Any, secure_ledger_url: str) -> None:
        """Using a key records its last use (written in the background)."""
        key = _mint(blnk_master, ["ledgers:read"])
        with _client(secure_ledger_url, key["key"]) as client:
            assert client.ledgers.list().status == 200
        deadline = time.monotonic() + LAST_USED_WAIT_S
        last_used = ZERO_TIME
        while last_used == ZERO_TIME and time.monotonic() < deadline:
            last_used = blnk_master.api_keys.list({"owner": key["owner_id"]}).data[0][
                "last_used_at"
            ]
            time.sleep(0.05)
        assert last_used != ZERO_TIME


class TestOpenMode:
    def test_management_routes_need_a_principal(self, blnk: Any) -> None:
        """In open mode no master key exists: API keys answer 401 AUTH_MISSING_PRINCIPAL, hooks 403."""
        keys = blnk.api_keys.list({"owner": "anyone"})
        assert keys.status == 401
        assert keys.error.code == "AUTH_MISSING_PRINCIPAL"
        hooks = blnk.hooks.list()
        assert hooks.status == 403
        assert hooks.error.code == "AUTH_MASTER_KEY_REQUIRED"


class TestDocumentedAuthentication:
    def test_secure_mode_documents_blnks_key_and_no_bearer_token(
        self, secure_ledger_url: str
    ) -> None:
        """In secure mode every operation the key guards names the `X-Blnk-Key` scheme, and none
        the bearer JWT of our API (the ledger never takes one; the document said every route
        did)."""
        schema = httpx.get(f"{secure_ledger_url}/openapi.json", timeout=30).json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes == {
            "blnkKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Blnk-Key",
                "description": schemes["blnkKey"]["description"],
            }
        }
        open_paths = {
            path
            for path, item in schema["paths"].items()
            for operation in item.values()
            if operation.get("security") != [{"blnkKey": []}]
        }
        # Blnk's root and health, and every ingress's own health and metrics.
        assert open_paths == {"/", "/health", "/health/live", "/health/ready", "/metrics"}
        assert "bearerAuth" not in str(schema)

    def test_open_mode_documents_no_scheme(self, ledger_url: str) -> None:
        """Without a master key nothing is guarded, and the document says so."""
        schema = httpx.get(f"{ledger_url}/openapi.json", timeout=30).json()
        assert "securitySchemes" not in schema.get("components", {})
        assert all(
            "security" not in op for item in schema["paths"].values() for op in item.values()
        )


def _create(url: str, key: str, **overrides: Any) -> tuple[int, str]:
    """POST /api-keys over plain HTTP (the SDK refuses some bodies before sending them)."""
    body = {"name": "k", "owner": _owner(), "scopes": ["ledgers:read"], "expires_at": FUTURE}
    body.update(overrides)
    response = httpx.post(f"{url}/api-keys", json=body, headers={"X-Blnk-Key": key})
    code: str = response.json().get("error_detail", {}).get("code", "")
    return response.status_code, code


class TestScopeRules:
    @pytest.mark.parametrize(
        "scopes",
        [
            [],
            ["payments:read"],
            ["ledgers"],
            ["ledgers:"],
            [":read"],
            ["ledgers:read:extra"],
            ["Ledgers:read"],
            ["ledgers:read", "ledgers:fly"],
        ],
    )
    def test_a_malformed_scope_list_is_400(self, secure_ledger_url: str, scopes: list[str]) -> None:
        """No scope, an unknown resource or action, or a scope not `resource:action` is 400."""
        assert _create(secure_ledger_url, MASTER_KEY, scopes=scopes) == (400, "APIKEY_INVALID")

    @pytest.mark.parametrize(
        ("overrides", "code"),
        [
            ({"name": ""}, "APIKEY_INVALID"),
            ({"expires_at": "2999-01-01T00:00:00"}, "APIKEY_INVALID"),  # no offset
            ({"owner": ""}, "APIKEY_OWNER_REQUIRED"),
            ({"scopes": ["ledgers:read"] * 65}, "GEN_MALFORMED_REQUEST"),
        ],
    )
    def test_an_invalid_key_request_is_400(
        self, secure_ledger_url: str, overrides: dict[str, Any], code: str
    ) -> None:
        """An empty name, an expiry without an offset, no owner or too many scopes is 400."""
        assert _create(secure_ledger_url, MASTER_KEY, **overrides) == (400, code)

    def test_actions_follow_the_method(self, blnk_master: Any, secure_ledger_url: str) -> None:
        """read and write on api-keys do not revoke (DELETE needs delete); fx:read reads rates
        but only fx:write sets one."""
        owner = _owner()
        key = _mint(blnk_master, ["api-keys:read", "api-keys:write", "fx:read"], owner=owner)
        with _client(secure_ledger_url, key["key"]) as client:
            refused = client.api_keys.delete(key["api_key_id"])
            assert (refused.status, refused.error.code) == (403, "AUTH_INSUFFICIENT_PERMISSIONS")
        headers = {"X-Blnk-Key": key["key"]}
        assert (
            httpx.get(f"{secure_ledger_url}/fx/rates/USD/EUR", headers=headers).status_code == 200
        )
        set_rate = httpx.put(
            f"{secure_ledger_url}/fx/rates/USD/EUR", json={"rate": "9"}, headers=headers
        )
        assert (set_rate.status_code, set_rate.json()["error_detail"]["code"]) == (
            403,
            "AUTH_INSUFFICIENT_PERMISSIONS",
        )
        assert blnk_master.api_keys.list({"owner": owner}).data[0]["is_revoked"] is False

    async def test_a_stored_scope_of_an_unknown_resource_grants_nothing(
        self, secure_ledger_url: str, db: Database
    ) -> None:
        """A stored scope naming a resource this version does not serve (PostgreSQL holds any
        lower-case word) grants no request and cannot be passed on; the key's other scopes work."""
        key, owner = secrets.token_urlsafe(32), _owner()
        now = datetime.now(UTC)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO ledger.api_keys (api_key_id, key_hash, name, owner_id, scopes, expires_at, created_at)"
                " VALUES ($1, $2, 'imported', $3, $4, $5, $6)",
                f"api_key_{uuid.uuid4()}",
                hashlib.sha256(key.encode()).hexdigest(),
                owner,
                ["payments:*", "ledgers:read", "api-keys:write"],
                now + timedelta(days=1),
                now,
            )
        with _client(secure_ledger_url, key) as client:
            assert client.ledgers.list().status == 200
            assert client.ledgers.create({"name": "nope"}).status == 403
        within = (now + timedelta(hours=1)).isoformat()  # no later than the key itself
        assert (
            _create(
                secure_ledger_url, key, owner=owner, scopes=["api-keys:write"], expires_at=within
            )[0]
            == 201
        )
        assert _create(
            secure_ledger_url, key, owner=owner, scopes=["ledgers:write"], expires_at=within
        ) == (403, "AUTH_SCOPE_ESCALATION")


class TestKeyHeader:
    @pytest.mark.parametrize(
        ("key", "code"),
        [
            ("k" * 513, "AUTH_INVALID_API_KEY"),
            ("k" * 512, "AUTH_INVALID_API_KEY"),
            ("not a key", "AUTH_INVALID_API_KEY"),
            ("", "AUTH_MISSING_API_KEY"),
        ],
    )
    def test_a_missing_or_malformed_key_is_401(
        self, secure_ledger_url: str, key: str, code: str
    ) -> None:
        """An empty, overlong or made-up X-Blnk-Key answers Blnk's 401 with its code."""
        response = httpx.get(f"{secure_ledger_url}/ledgers", headers={"X-Blnk-Key": key})
        assert (response.status_code, response.json()["error_detail"]["code"]) == (401, code)

    def test_the_master_key_with_extra_text_is_not_the_master_key(
        self, secure_ledger_url: str
    ) -> None:
        """Only the exact master key is the master key: a prefix or a longer text is 401."""
        for key in (MASTER_KEY[:-1], MASTER_KEY + "x"):
            response = httpx.get(f"{secure_ledger_url}/ledgers", headers={"X-Blnk-Key": key})
            assert response.status_code == 401
        ok = httpx.get(f"{secure_ledger_url}/ledgers", headers={"X-Blnk-Key": MASTER_KEY})
        assert ok.status_code == 200


async def _insert_keys(db: Database, count: int, *, now: datetime) -> list[tuple[str, str]]:
    """`count` keys (secret, api_key_id) for the scope `ledgers:read`, written with SQL."""
    keys = [(secrets.token_urlsafe(32), f"api_key_{uuid.uuid4()}") for _ in range(count)]
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.api_keys (api_key_id, key_hash, name, owner_id, scopes, expires_at, created_at)"
            " SELECT id, hash, 'k', 'owner-verifier', '{ledgers:read}', $3, $4"
            " FROM unnest($1::text[], $2::text[]) AS k(id, hash)",
            [key_id for _, key_id in keys],
            [hashlib.sha256(key.encode()).hexdigest() for key, _ in keys],
            now + timedelta(days=1),
            now,
        )
    return keys


async def _last_used(db: Database, api_key_id: str) -> datetime | None:
    async with db.connection() as conn:
        value: datetime | None = await conn.fetchval(
            "SELECT last_used_at FROM ledger.api_keys WHERE api_key_id = $1", api_key_id
        )
    return value


async def _until_last_used(db: Database, api_key_id: str, expected: datetime) -> datetime | None:
    """Poll the background write until it lands (or the wait bound passes)."""
    deadline = time.monotonic() + LAST_USED_WAIT_S
    value = await _last_used(db, api_key_id)
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        value = await _last_used(db, api_key_id)
    return value


class _Signal(logging.Handler):
    """Sets an event when a record is logged (the background write reports only by logging)."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


def _verifier(db: Database, clock: FrozenClock, **limits: Any) -> KeyVerifier:
    return KeyVerifier(db, master_key=SecretStr(MASTER_KEY), clock=clock, **limits)


class TestVerifierCache:
    async def test_a_revocation_elsewhere_takes_at_most_the_cache_lifetime(
        self, db: Database
    ) -> None:
        """Another replica's revocation is seen once the cached entry is older than its TTL."""
        now = datetime.now(UTC)
        ((key, key_id),) = await _insert_keys(db, 1, now=now)
        clock = FrozenClock(now)
        verifier = _verifier(db, clock)
        assert (await verifier.verify(key)).key is not None
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.api_keys SET is_revoked = true, revoked_at = $2 WHERE api_key_id = $1",
                key_id,
                now,
            )
        assert (await verifier.verify(key)).key is not None  # cached, as documented
        clock.advance(API_KEY_CACHE_TTL_S)
        with pytest.raises(ExpiredApiKeyError):
            await verifier.verify(key)

    async def test_the_cache_is_bounded(self, db: Database) -> None:
        """Past its entry bound the oldest key is dropped, so its next use reads PostgreSQL."""
        now = datetime.now(UTC)
        (first, first_id), (second, _) = await _insert_keys(db, 2, now=now)
        verifier = _verifier(db, FrozenClock(now), cache_entries_max=1)
        await verifier.verify(first)
        await verifier.verify(second)
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.api_keys SET is_revoked = true, revoked_at = $2 WHERE api_key_id = $1",
                first_id,
                now,
            )
        with pytest.raises(ExpiredApiKeyError):
            await verifier.verify(first)

    async def test_the_master_key_is_never_looked_up(
        self, settings: Settings, database_dsn: str
    ) -> None:
        """The master key is the master principal even when the database is not reachable."""
        closed = await Database.open(settings, database_dsn)
        await closed.close()
        verifier = _verifier(closed, FrozenClock(datetime.now(UTC)))
        assert (await verifier.verify(MASTER_KEY)).is_master


class TestLastUse:
    async def test_a_use_is_written_once_a_minute(self, db: Database) -> None:
        """The first use is written; uses within a minute are not; the next minute's is."""
        now = datetime.now(UTC)
        (key, key_id), (_, other_id) = await _insert_keys(db, 2, now=now)
        clock = FrozenClock(now)
        verifier = _verifier(db, clock)
        record = (await verifier.verify(key)).key
        assert record is not None
        verifier.touch(record)
        assert await _until_last_used(db, key_id, now) == now
        clock.advance(LAST_USED_WRITE_INTERVAL_S)
        verifier.touch(record)
        minute = now + timedelta(seconds=LAST_USED_WRITE_INTERVAL_S)
        assert await _until_last_used(db, key_id, minute) == minute
        clock.advance(LAST_USED_WRITE_INTERVAL_S - 1)
        verifier.touch(record)  # within the minute: not written
        other = replace(record, api_key_id=other_id)
        verifier.touch(other)
        assert await _until_last_used(db, other_id, clock.now()) == clock.now()
        assert await _last_used(db, key_id) == minute

    async def test_writes_pending_are_bounded(
        self, db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past the bound of pending writes a use is dropped (and logged), never queued."""
        now = datetime.now(UTC)
        keys = await _insert_keys(db, LAST_USED_WRITES_PENDING_MAX + 1, now=now)
        verifier = _verifier(db, FrozenClock(now))
        record = (await verifier.verify(keys[0][0])).key
        assert record is not None
        with caplog.at_level(logging.WARNING, logger="ledger.apikeys"):
            for _, key_id in keys:  # no await between: none of the writes can finish
                verifier.touch(replace(record, api_key_id=key_id))
        assert [r.getMessage() for r in caplog.records] == [
            "api key use not recorded: too many writes pending"
        ]
        assert await _until_last_used(db, keys[-2][1], now) == now
        assert await _last_used(db, keys[-1][1]) is None

    async def test_a_failed_write_fails_no_request(
        self,
        *,
        db: Database,
        settings: Settings,
        database_dsn: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """PostgreSQL out of reach: the use is not recorded, logged, and nothing raises."""
        now = datetime.now(UTC)
        ((key, _),) = await _insert_keys(db, 1, now=now)
        record = (await _verifier(db, FrozenClock(now)).verify(key)).key
        assert record is not None
        closed = await Database.open(settings, database_dsn)
        await closed.close()
        logged = asyncio.Event()
        handler = _Signal(logged)
        logging.getLogger("ledger.apikeys").addHandler(handler)
        try:
            with caplog.at_level(logging.WARNING, logger="ledger.apikeys"):
                _verifier(closed, FrozenClock(now)).touch(record)
                await asyncio.wait_for(logged.wait(), timeout=LAST_USED_WAIT_S)
        finally:
            logging.getLogger("ledger.apikeys").removeHandler(handler)
        assert [r.getMessage() for r in caplog.records] == ["api key use not recorded"]


class TestStoredKeys:
    """PostgreSQL keeps a key's identity whatever the code does (bypass tests with raw SQL)."""

    async def test_a_malformed_scope_is_refused(self, db: Database) -> None:
        """A scope that is not `resource:action` cannot be stored."""
        now = datetime.now(UTC)
        async with db.transaction() as conn:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO ledger.api_keys (api_key_id, key_hash, name, owner_id, scopes, expires_at, created_at)"
                    " VALUES ($1, $2, 'k', 'o', '{ledgers}', $3, $4)",
                    f"api_key_{uuid.uuid4()}",
                    "0" * 64,
                    now + timedelta(days=1),
                    now,
                )

    @pytest.mark.parametrize(
        "assignment",
        [
            "scopes = '{*:*}'",
            "expires_at = expires_at + interval '1 year'",
            "is_revoked = false, revoked_at = NULL",
        ],
    )
    async def test_a_key_cannot_be_widened_or_revived(self, db: Database, assignment: str) -> None:
        """Scopes and expiry never change, and a revoked key stays revoked."""
        now = datetime.now(UTC)
        ((_, key_id),) = await _insert_keys(db, 1, now=now)
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.api_keys SET is_revoked = true, revoked_at = $2 WHERE api_key_id = $1",
                key_id,
                now,
            )
        async with db.transaction() as conn:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    f"UPDATE ledger.api_keys SET {assignment} WHERE api_key_id = $1",
                    key_id,
                )
