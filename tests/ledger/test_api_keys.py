"""API keys and secure mode through Blnk's own Python SDK, over real HTTP.

The secure-mode server has a master key; each test mints the keys it needs with it and then
drives the API as a Blnk user would, with `X-Blnk-Key` set by the SDK. What is proven: the
401s (missing, unknown, expired, revoked), the scope checks and their 403s (insufficient,
unknown resource, master-only hooks, cross-owner, escalation), the key shown once and stored as
a hash, `last_used_at`, and Blnk's `BLNK_GENERATED_BY` stamp on what a key creates.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from blnk_sdk import BlnkClientOptions, blnk_init

from kit.db import Database
from ledger.wire import ZERO_TIME

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
