"""Identities and field tokenization through Blnk's own Python SDK, over real HTTP.

CRUD, lists and filters run on the open-mode server (no cipher configured, so tokenization
answers 403 as Blnk's does). Tokenization runs on the secure-mode server, which has a cipher;
there the master key is sent with every call. A few bypass tests write rows with raw SQL to
prove that PostgreSQL refuses a "tokenized" field holding a plain value, and that an envelope
copied onto another identity does not open.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from kit.db import Database

pytestmark = pytest.mark.db


def _person(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identity_type": "individual",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "other_names": "Augusta",
        "gender": "female",
        "email_address": f"ada-{uuid.uuid4().hex[:8]}@example.com",
        "phone_number": "+447700900123",
        "nationality": "GB",
        "street": "12 St James's Square",
        "country": "GB",
        "state": "London",
        "post_code": "SW1Y 4JH",
        "city": "London",
        "dob": "1815-12-10T00:00:00Z",
        "category": "retail",
        "meta_data": {"tier": "gold"},
    }
    body.update(extra)
    return body


def _create(client: Any, **extra: Any) -> dict[str, Any]:
    response = client.identity.create(_person(**extra))
    assert response.status == 201, response.to_dict()
    data: dict[str, Any] = response.data
    return data


class TestIdentityRecords:
    def test_create_get_update_delete(self, blnk: Any) -> None:
        """An identity is created with an idt_ id, read back, replaced, and deleted."""
        created = _create(blnk)
        identity_id = created["identity_id"]
        assert identity_id.startswith("idt_")
        assert created["first_name"] == "Ada"
        assert created["dob"] == "1815-12-10T00:00:00Z"
        assert created["meta_data"] == {"tier": "gold"}
        got = blnk.identity.get(identity_id)
        assert got.status == 200
        assert got.data == created
        updated = blnk.identity.update(
            identity_id, _person(first_name="Augusta Ada", city="Marylebone")
        )
        assert updated.status == 200, updated.to_dict()
        assert updated.data == {"message": "Identity updated successfully"}
        after = blnk.identity.get(identity_id).data
        assert (after["first_name"], after["city"]) == ("Augusta Ada", "Marylebone")
        assert after["created_at"] == created["created_at"]
        deleted = blnk.identity.delete(identity_id)
        assert deleted.status == 200
        assert deleted.data == {"message": "Identity deleted successfully"}
        gone = blnk.identity.get(identity_id)
        assert gone.status == 404
        assert gone.error.code == "IDT_NOT_FOUND"

    async def test_creation_queues_the_identity_created_event(
        self, blnk: Any, db: Database
    ) -> None:
        """Creating an identity writes Blnk's identity.created webhook event in the same transaction."""
        created = _create(blnk)
        async with db.connection() as conn:
            payload = await conn.fetchval(
                "SELECT payload FROM ledger.outbox WHERE event_type = 'identity.created' AND entity_id = $1",
                created["identity_id"],
            )
        assert payload == created

    def test_client_chosen_id_is_kept_and_a_duplicate_refused(self, blnk: Any) -> None:
        """A client's idt_<uuid> is used as given; the same id again is 400 IDT_VALIDATION_ERROR."""
        identity_id = f"idt_{uuid.uuid4()}"
        assert _create(blnk, identity_id=identity_id)["identity_id"] == identity_id
        again = blnk.identity.create(_person(identity_id=identity_id))
        assert again.status == 400
        assert again.error.code == "IDT_VALIDATION_ERROR"

    def test_malformed_id_is_400(self, ledger_url: str) -> None:
        """An identity_id that is not idt_<uuid> is refused (the SDK would stop it first)."""
        response = httpx.post(f"{ledger_url}/identities", json=_person(identity_id="idt_nope"))
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "IDT_VALIDATION_ERROR"

    def test_unknown_identity_is_404_everywhere(self, blnk: Any) -> None:
        """Get, update, delete and tokenized-fields of an unknown id all answer 404 IDT_NOT_FOUND."""
        missing = f"idt_{uuid.uuid4()}"
        for response in (
            blnk.identity.get(missing),
            blnk.identity.update(missing, _person()),
            blnk.identity.delete(missing),
            blnk.identity.get_tokenized_fields(missing),
        ):
            assert response.status == 404, response.to_dict()
            assert response.error.code == "IDT_NOT_FOUND"

    def test_list_and_filter(self, blnk: Any) -> None:
        """The list returns identities; a filter on the email finds exactly one, with a count."""
        created = _create(blnk)
        listed = blnk.identity.list()
        assert listed.status == 200
        assert isinstance(listed.data, list)
        found = blnk.search.filter(
            {
                "filters": [
                    {"field": "email_address", "operator": "eq", "value": created["email_address"]}
                ],
                "include_count": True,
            },
            "identities",
        )
        assert found.status == 200, found.to_dict()
        assert found.data["total_count"] == 1
        assert found.data["data"][0]["identity_id"] == created["identity_id"]

    def test_balance_includes_its_identity(self, blnk: Any) -> None:
        """GET /balances/{id}?include=identity embeds the identity the balance belongs to."""
        identity = _create(blnk)
        ledger = blnk.ledgers.create({"name": "identities"}).data["ledger_id"]
        balance = blnk.ledger_balances.create(
            {"ledger_id": ledger, "currency": "USD", "identity_id": identity["identity_id"]}
        ).data
        # The SDK puts the id into the path unencoded, so the query rides along with it.
        got = blnk.ledger_balances.get(f"{balance['balance_id']}?include=identity")
        assert got.status == 200, got.to_dict()
        assert got.data["identity"]["identity_id"] == identity["identity_id"]
        assert "identity" not in blnk.ledger_balances.get(balance["balance_id"]).data

    def test_identity_with_balances_cannot_be_deleted(self, blnk: Any) -> None:
        """Deleting an identity a balance belongs to is 409; the identity stays."""
        identity = _create(blnk)
        ledger = blnk.ledgers.create({"name": "owned"}).data["ledger_id"]
        blnk.ledger_balances.create(
            {"ledger_id": ledger, "currency": "USD", "identity_id": identity["identity_id"]}
        )
        refused = blnk.identity.delete(identity["identity_id"])
        assert refused.status == 409
        assert refused.error.code == "GEN_CONFLICT"
        assert blnk.identity.get(identity["identity_id"]).status == 200

    def test_metadata_merges_but_cannot_forge_tokenization(self, blnk: Any) -> None:
        """Metadata merges into an identity; a `tokenized_fields` key in it is not believed."""
        identity = _create(blnk)
        merged = blnk.metadata.update(
            identity["identity_id"],
            {"meta_data": {"kyc": "passed", "tokenized_fields": {"FirstName": True}}},
        )
        assert merged.status == 200, merged.to_dict()
        got = blnk.identity.get(identity["identity_id"]).data
        assert got["meta_data"] == {"tier": "gold", "kyc": "passed"}
        assert blnk.identity.get_tokenized_fields(identity["identity_id"]).data == {
            "tokenized_fields": []
        }

    def test_tokenization_without_a_cipher_is_403(self, blnk: Any) -> None:
        """With no tokenization secret configured, tokenizing answers 403 IDT_TOKENIZATION_DISABLED."""
        identity = _create(blnk)
        response = blnk.identity.tokenize_field(identity["identity_id"], "FirstName")
        assert response.status == 403
        assert response.error.code == "IDT_TOKENIZATION_DISABLED"
        assert blnk.identity.get(identity["identity_id"]).data["first_name"] == "Ada"


class TestTokenization:
    def test_tokenize_one_field_then_detokenize(self, blnk_master: Any) -> None:
        """A sealed field shows a token, is listed in meta_data and tokenized-fields, and opens again."""
        identity = _create(blnk_master)
        identity_id = identity["identity_id"]
        sealed = blnk_master.identity.tokenize_field(identity_id, "firstName")
        assert sealed.status == 200, sealed.to_dict()
        assert sealed.data == {"message": "Field tokenized successfully"}
        got = blnk_master.identity.get(identity_id).data
        assert got["first_name"] != "Ada"
        assert got["first_name"].startswith("v1.")
        assert got["meta_data"]["tokenized_fields"] == {"FirstName": True}
        assert got["meta_data"]["tier"] == "gold"
        listed = blnk_master.identity.get_tokenized_fields(identity_id)
        assert listed.data == {"tokenized_fields": ["FirstName"]}
        opened = blnk_master.identity.detokenize_field(identity_id, "FirstName")
        assert opened.status == 200, opened.to_dict()
        assert opened.data == {"field": "FirstName", "value": "Ada"}

    def test_tokenizing_twice_is_409(self, blnk_master: Any) -> None:
        """A field that is already sealed answers 409 IDT_FIELD_ALREADY_TOKENIZED."""
        identity_id = _create(blnk_master)["identity_id"]
        assert blnk_master.identity.tokenize_field(identity_id, "EmailAddress").status == 200
        again = blnk_master.identity.tokenize_field(identity_id, "EmailAddress")
        assert again.status == 409
        assert again.error.code == "IDT_FIELD_ALREADY_TOKENIZED"

    def test_field_outside_the_list_is_400(self, blnk_master: Any) -> None:
        """Only Blnk's seven personal fields are tokenizable; `category` is 400 IDT_FIELD_NOT_TOKENIZABLE."""
        identity_id = _create(blnk_master)["identity_id"]
        response = blnk_master.identity.tokenize_field(identity_id, "Category")
        assert response.status == 400
        assert response.error.code == "IDT_FIELD_NOT_TOKENIZABLE"

    def test_detokenizing_a_plain_field_is_400(self, blnk_master: Any) -> None:
        """Opening a field that was never sealed answers 400 IDT_FIELD_NOT_TOKENIZED."""
        identity_id = _create(blnk_master)["identity_id"]
        response = blnk_master.identity.detokenize_field(identity_id, "PhoneNumber")
        assert response.status == 400
        assert response.error.code == "IDT_FIELD_NOT_TOKENIZED"

    def test_tokenize_many_is_all_or_nothing(self, blnk_master: Any) -> None:
        """If one field of the list is already sealed, none of the others is sealed either."""
        identity_id = _create(blnk_master)["identity_id"]
        assert blnk_master.identity.tokenize_field(identity_id, "FirstName").status == 200
        refused = blnk_master.identity.tokenize(identity_id, {"fields": ["LastName", "FirstName"]})
        assert refused.status == 409
        assert blnk_master.identity.get(identity_id).data["last_name"] == "Lovelace"
        sealed = blnk_master.identity.tokenize(
            identity_id, {"fields": ["LastName", "street", "PostCode"]}
        )
        assert sealed.status == 200, sealed.to_dict()
        assert sealed.data == {"message": "Fields tokenized successfully"}
        assert sorted(
            blnk_master.identity.get_tokenized_fields(identity_id).data["tokenized_fields"]
        ) == [
            "FirstName",
            "LastName",
            "PostCode",
            "Street",
        ]

    def test_detokenize_many_and_all(self, blnk_master: Any) -> None:
        """Named fields open keyed as asked; an empty list opens every sealed field."""
        identity_id = _create(blnk_master)["identity_id"]
        assert (
            blnk_master.identity.tokenize(
                identity_id, {"fields": ["FirstName", "PhoneNumber"]}
            ).status
            == 200
        )
        named = blnk_master.identity.detokenize(identity_id, {"fields": ["firstName"]})
        assert named.status == 200, named.to_dict()
        assert named.data == {"fields": {"firstName": "Ada"}}
        everything = blnk_master.identity.detokenize(identity_id, {"fields": []})
        assert everything.data == {"fields": {"FirstName": "Ada", "PhoneNumber": "+447700900123"}}

    def test_update_keeps_a_sealed_field_sealed(self, blnk_master: Any) -> None:
        """A new value for a sealed field is sealed in its place; sending the token back keeps it."""
        identity = _create(blnk_master)
        identity_id = identity["identity_id"]
        assert blnk_master.identity.tokenize_field(identity_id, "EmailAddress").status == 200
        token = blnk_master.identity.get(identity_id).data["email_address"]
        body = _person(email_address="ada@analytical.engine")
        assert blnk_master.identity.update(identity_id, body).status == 200
        after = blnk_master.identity.get(identity_id).data
        assert after["email_address"].startswith("v1.")
        assert after["email_address"] != token
        opened = blnk_master.identity.detokenize_field(identity_id, "EmailAddress")
        assert opened.data["value"] == "ada@analytical.engine"
        keep = _person(email_address=after["email_address"], city="Paris")
        assert blnk_master.identity.update(identity_id, keep).status == 200
        assert blnk_master.identity.get(identity_id).data["email_address"] == after["email_address"]


class TestTokenIntegrity:
    async def test_database_refuses_a_plain_value_marked_tokenized(
        self, conn: asyncpg.Connection
    ) -> None:
        """A row claiming FirstName is sealed while it holds a plain value violates a CHECK."""
        identity_id = f"idt_{uuid.uuid4()}"
        await conn.execute(
            "INSERT INTO ledger.identities (identity_id, first_name) VALUES ($1, 'Ada')",
            identity_id,
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE ledger.identities SET tokenized_fields = '{FirstName}' WHERE identity_id = $1",
                identity_id,
            )

    async def test_database_refuses_an_unknown_tokenized_field(
        self, conn: asyncpg.Connection
    ) -> None:
        """Only Blnk's seven field names may be listed as tokenized, each once."""
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO ledger.identities (identity_id, category, tokenized_fields)"
                " VALUES ($1, 'v1.0000000000000000.x.y', '{Category}')",
                f"idt_{uuid.uuid4()}",
            )

    async def test_token_copied_to_another_identity_does_not_open(
        self, blnk_master: Any, db: Database
    ) -> None:
        """An envelope is bound to its identity and field: moved elsewhere it fails to open (500)."""
        source = _create(blnk_master)["identity_id"]
        target = _create(blnk_master)["identity_id"]
        assert blnk_master.identity.tokenize_field(source, "LastName").status == 200
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE ledger.identities t SET last_name = s.last_name, tokenized_fields = '{LastName}'"
                " FROM ledger.identities s WHERE s.identity_id = $1 AND t.identity_id = $2",
                source,
                target,
            )
        response = blnk_master.identity.detokenize_field(target, "LastName")
        assert response.status == 500
        assert "Lovelace" not in str(response.to_dict())
