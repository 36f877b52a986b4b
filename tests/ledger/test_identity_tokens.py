"""Identity field tokenization at its edges, over real HTTP.

Goal: pin what a client meets around sealed identity fields: each of Blnk's seven tokenizable
fields seals and opens under each spelling of its name, a field is sealed once, names outside
the list are refused, a server without a tokenization secret refuses every sealing or opening
call (403) and writes nothing, a plain value that was sealed never comes back out of a read,
a list, a filter or a search, and an update (the client's GET, edit, PUT round trip) keeps
sealed fields sealed however long their tokens, and a value whose envelope would not fit its
column is refused rather than failing. It also pins the `dob` formats an identity takes.
Method: the secure-mode server (it has a cipher; the master key goes with every call) and the
open-mode server (no cipher) share one database, so an identity sealed through the first can be
updated through the second; plain values are searched for in the raw response bodies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ledger.identities import TOKENIZABLE_FIELDS
from tests.ledger.servers import MASTER_KEY

pytestmark = pytest.mark.db


def _person(**extra: Any) -> dict[str, Any]:
    marker = uuid.uuid4().hex[:10]
    body: dict[str, Any] = {
        "identity_type": "individual",
        "first_name": f"Grace{marker}",
        "last_name": f"Hopper{marker}",
        "other_names": f"Brewster{marker}",
        "gender": "female",
        "email_address": f"grace-{marker}@navy.example",
        "phone_number": f"+1202{marker}",
        "nationality": "US",
        "street": f"{marker} Arlington Ridge Road",
        "country": "US",
        "state": "VA",
        "post_code": f"PC{marker}",
        "city": "Arlington",
        "dob": "1906-12-09T00:00:00Z",
        "category": "retail",
        "meta_data": {"rank": "rear admiral"},
    }
    body.update(extra)
    return body


@pytest.fixture
def sealed_http(secure_ledger_url: str) -> Iterator[httpx.Client]:
    """An HTTP client on the server that has a cipher, sending the master key."""
    with httpx.Client(base_url=secure_ledger_url, headers={"X-Blnk-Key": MASTER_KEY}) as client:
        yield client


@pytest.fixture
def open_http(ledger_url: str) -> Iterator[httpx.Client]:
    """An HTTP client on the server without a tokenization secret."""
    with httpx.Client(base_url=ledger_url) as client:
        yield client


def _create(http: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = http.post("/identities", json=_person(**extra))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _code(response: httpx.Response) -> str:
    code: str = response.json()["error_detail"]["code"]
    return code


class TestEachField:
    @pytest.mark.parametrize("name", list(TOKENIZABLE_FIELDS))
    @pytest.mark.parametrize("spelling", ["pascal", "camel", "snake"])
    def test_field_seals_and_opens(
        self, sealed_http: httpx.Client, name: str, spelling: str
    ) -> None:
        """Each tokenizable field seals under its PascalCase, camelCase or column name and opens
        to the same plain value; the stored value is an envelope."""
        column = TOKENIZABLE_FIELDS[name]
        given = {"pascal": name, "camel": name[0].lower() + name[1:], "snake": column}[spelling]
        identity = _create(sealed_http)
        identity_id = identity["identity_id"]
        sealed = sealed_http.post(f"/identities/{identity_id}/tokenize/{given}")
        assert sealed.status_code == 200, sealed.text
        got = sealed_http.get(f"/identities/{identity_id}").json()
        assert got[column].startswith("v1.")
        assert got["meta_data"]["tokenized_fields"] == {name: True}
        opened = sealed_http.get(f"/identities/{identity_id}/detokenize/{given}")
        assert opened.status_code == 200, opened.text
        assert opened.json() == {"field": given, "value": identity[column]}

    @pytest.mark.parametrize("name", list(TOKENIZABLE_FIELDS))
    def test_field_is_sealed_once(self, sealed_http: httpx.Client, name: str) -> None:
        """Sealing a sealed field again, under any spelling, is 409 and keeps the first token."""
        identity_id = _create(sealed_http)["identity_id"]
        column = TOKENIZABLE_FIELDS[name]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/{name}").status_code == 200
        token = sealed_http.get(f"/identities/{identity_id}").json()[column]
        again = sealed_http.post(f"/identities/{identity_id}/tokenize/{column}")
        assert again.status_code == 409
        assert _code(again) == "IDT_FIELD_ALREADY_TOKENIZED"
        assert sealed_http.get(f"/identities/{identity_id}").json()[column] == token

    @pytest.mark.parametrize("given", ["Gender", "City", "first-name", "FIRSTNAME", "dob"])
    def test_other_names_are_not_tokenizable(self, sealed_http: httpx.Client, given: str) -> None:
        """A name outside the seven (or misspelt) is 400 IDT_FIELD_NOT_TOKENIZABLE to seal or open."""
        identity_id = _create(sealed_http)["identity_id"]
        sealed = sealed_http.post(f"/identities/{identity_id}/tokenize/{given}")
        assert sealed.status_code == 400
        assert _code(sealed) == "IDT_FIELD_NOT_TOKENIZABLE"
        opened = sealed_http.post(f"/identities/{identity_id}/detokenize", json={"fields": [given]})
        assert opened.status_code == 400
        assert _code(opened) == "IDT_FIELD_NOT_TOKENIZABLE"
        assert sealed_http.get(f"/identities/{identity_id}/tokenized-fields").json() == {
            "tokenized_fields": []
        }

    def test_tokenize_many_needs_a_field(self, sealed_http: httpx.Client) -> None:
        """POST .../tokenize with no field names is 400 and seals nothing."""
        identity_id = _create(sealed_http)["identity_id"]
        response = sealed_http.post(f"/identities/{identity_id}/tokenize", json={"fields": []})
        assert response.status_code == 400
        assert _code(response) == "GEN_VALIDATION_ERROR"

    def test_detokenize_of_an_unknown_identity_is_404(self, sealed_http: httpx.Client) -> None:
        """Opening fields of an identity that does not exist is 404 IDT_NOT_FOUND."""
        missing = f"idt_{uuid.uuid4()}"
        for response in (
            sealed_http.post(f"/identities/{missing}/detokenize", json={"fields": []}),
            sealed_http.get(f"/identities/{missing}/detokenize/FirstName"),
            sealed_http.post(f"/identities/{missing}/tokenize/FirstName"),
        ):
            assert response.status_code == 404, response.text
            assert _code(response) == "IDT_NOT_FOUND"


class TestWithoutSecret:
    def test_every_sealing_call_is_403(
        self, open_http: httpx.Client, sealed_http: httpx.Client
    ) -> None:
        """Without a tokenization secret, sealing one or many and opening one or many fields of
        a sealed identity answer 403 IDT_TOKENIZATION_DISABLED, and nothing changes."""
        identity = _create(sealed_http)
        identity_id = identity["identity_id"]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/LastName").status_code == 200
        before = open_http.get(f"/identities/{identity_id}").json()
        for response in (
            open_http.post(f"/identities/{identity_id}/tokenize/FirstName"),
            open_http.post(f"/identities/{identity_id}/tokenize", json={"fields": ["Street"]}),
            open_http.get(f"/identities/{identity_id}/detokenize/LastName"),
            open_http.post(f"/identities/{identity_id}/detokenize", json={"fields": []}),
        ):
            assert response.status_code == 403, response.text
            assert _code(response) == "IDT_TOKENIZATION_DISABLED"
            assert identity["last_name"] not in response.text
        assert open_http.get(f"/identities/{identity_id}").json() == before

    def test_update_sealing_a_new_value_is_403(
        self, open_http: httpx.Client, sealed_http: httpx.Client
    ) -> None:
        """A new value for a sealed field cannot be sealed without a secret: the update is 403
        and writes none of its fields (the value is never stored in the clear)."""
        identity_id = _create(sealed_http)["identity_id"]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/Street").status_code == 200
        before = open_http.get(f"/identities/{identity_id}").json()
        body = _person(street="2 New Street", city="Norfolk")
        response = open_http.put(f"/identities/{identity_id}", json=body)
        assert response.status_code == 403
        assert _code(response) == "IDT_TOKENIZATION_DISABLED"
        assert open_http.get(f"/identities/{identity_id}").json() == before

    def test_update_keeping_the_token_needs_no_secret(
        self, open_http: httpx.Client, sealed_http: httpx.Client
    ) -> None:
        """An update that sends a sealed field's token back changes the other fields without a
        secret, and the field stays sealed and opens to its first value."""
        identity = _create(sealed_http)
        identity_id = identity["identity_id"]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/Street").status_code == 200
        got = open_http.get(f"/identities/{identity_id}").json()
        body = {**got, "city": "Norfolk"}
        assert open_http.put(f"/identities/{identity_id}", json=body).status_code == 200
        after = open_http.get(f"/identities/{identity_id}").json()
        assert (after["city"], after["street"]) == ("Norfolk", got["street"])
        opened = sealed_http.get(f"/identities/{identity_id}/detokenize/Street").json()
        assert opened["value"] == identity["street"]


class TestNoLeak:
    def test_sealed_values_stay_out_of_reads_lists_filters_and_search(
        self, sealed_http: httpx.Client
    ) -> None:
        """Once all seven fields are sealed, no read, list, filter or search answer holds a plain
        value, and a filter or a search for a plain value finds nothing."""
        identity = _create(sealed_http)
        identity_id = identity["identity_id"]
        sealed = sealed_http.post(
            f"/identities/{identity_id}/tokenize", json={"fields": list(TOKENIZABLE_FIELDS)}
        )
        assert sealed.status_code == 200, sealed.text
        plains = [identity[column] for column in TOKENIZABLE_FIELDS.values()]
        filtered = {
            "filters": [{"field": "identity_id", "operator": "eq", "value": identity_id}],
            "include_count": True,
        }
        answers = [
            sealed_http.get(f"/identities/{identity_id}"),
            sealed_http.get("/identities", params={"identity_id": identity_id}),
            sealed_http.post("/identities/filter", json=filtered),
            sealed_http.post(
                "/search/identities", json={"q": identity_id, "query_by": "identity_id"}
            ),
        ]
        for answer in answers:
            assert answer.status_code in {200, 201}, answer.text
            assert identity_id in answer.text
            for plain in plains:
                assert plain not in answer.text
        by_email = {
            "filters": [
                {"field": "email_address", "operator": "eq", "value": identity["email_address"]}
            ],
            "include_count": True,
        }
        assert sealed_http.post("/identities/filter", json=by_email).json()["total_count"] == 0
        searched = sealed_http.post(
            "/search/identities", json={"q": identity["last_name"], "query_by": "last_name"}
        )
        assert searched.status_code == 201, searched.text
        assert searched.json()["found"] == 0


class TestUpdate:
    def test_round_trip_keeps_every_sealed_field(self, sealed_http: httpx.Client) -> None:
        """GET then PUT of the same body keeps all seven sealed fields byte for byte."""
        identity = _create(sealed_http)
        identity_id = identity["identity_id"]
        sealed = sealed_http.post(
            f"/identities/{identity_id}/tokenize", json={"fields": list(TOKENIZABLE_FIELDS)}
        )
        assert sealed.status_code == 200
        got = sealed_http.get(f"/identities/{identity_id}").json()
        assert sealed_http.put(f"/identities/{identity_id}", json=got).status_code == 200
        assert sealed_http.get(f"/identities/{identity_id}").json() == got
        opened = sealed_http.post(f"/identities/{identity_id}/detokenize", json={"fields": []})
        assert opened.json()["fields"] == {
            name: identity[column] for name, column in TOKENIZABLE_FIELDS.items()
        }

    @pytest.mark.parametrize("plain", ["x" * 255, "é" * 200, "東" * 150])
    def test_round_trip_keeps_a_long_sealed_value(
        self, sealed_http: httpx.Client, plain: str
    ) -> None:
        """A sealed field whose token is longer than a plain value may be survives the client's
        GET-edit-PUT round trip, and still opens to its plain value."""
        identity_id = _create(sealed_http, street=plain)["identity_id"]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/Street").status_code == 200
        got = sealed_http.get(f"/identities/{identity_id}").json()
        updated = sealed_http.put(f"/identities/{identity_id}", json={**got, "city": "Norfolk"})
        assert updated.status_code == 200, updated.text
        after = sealed_http.get(f"/identities/{identity_id}").json()
        assert (after["city"], after["street"]) == ("Norfolk", got["street"])
        opened = sealed_http.get(f"/identities/{identity_id}/detokenize/Street")
        assert opened.json()["value"] == plain

    def test_wide_values_seal_while_their_envelope_fits(self, sealed_http: httpx.Client) -> None:
        """150 three-byte characters seal and open; 255 of them (an envelope past the column's
        1,024 characters) are 400 IDT_VALIDATION_ERROR to seal, on tokenize and on update, and
        nothing changes."""
        identity_id = _create(sealed_http, other_names="東" * 150)["identity_id"]
        sealed = sealed_http.post(f"/identities/{identity_id}/tokenize/OtherNames")
        assert sealed.status_code == 200, sealed.text
        opened = sealed_http.get(f"/identities/{identity_id}/detokenize/OtherNames")
        assert opened.json()["value"] == "東" * 150
        before = sealed_http.get(f"/identities/{identity_id}").json()
        renamed = sealed_http.put(
            f"/identities/{identity_id}", json=_person(other_names="😀" * 255)
        )
        assert renamed.status_code == 400, renamed.text
        assert _code(renamed) == "IDT_VALIDATION_ERROR"
        assert sealed_http.get(f"/identities/{identity_id}").json() == before
        wide_id = _create(sealed_http, street="東" * 255)["identity_id"]
        refused = sealed_http.post(
            f"/identities/{wide_id}/tokenize", json={"fields": ["FirstName", "Street"]}
        )
        assert refused.status_code == 400, refused.text
        assert _code(refused) == "IDT_VALIDATION_ERROR"
        assert sealed_http.get(f"/identities/{wide_id}").json()["street"] == "東" * 255
        assert sealed_http.get(f"/identities/{wide_id}/tokenized-fields").json() == {
            "tokenized_fields": []
        }

    def test_empty_value_unseals_the_field(self, sealed_http: httpx.Client) -> None:
        """An update that empties a sealed field leaves it empty and no longer tokenized."""
        identity_id = _create(sealed_http)["identity_id"]
        sealed = sealed_http.post(
            f"/identities/{identity_id}/tokenize", json={"fields": ["PhoneNumber", "PostCode"]}
        )
        assert sealed.status_code == 200
        got = sealed_http.get(f"/identities/{identity_id}").json()
        body = {**got, "phone_number": ""}
        assert sealed_http.put(f"/identities/{identity_id}", json=body).status_code == 200
        after = sealed_http.get(f"/identities/{identity_id}").json()
        assert after["phone_number"] == ""
        assert after["meta_data"]["tokenized_fields"] == {"PostCode": True}
        again = sealed_http.get(f"/identities/{identity_id}/detokenize/PhoneNumber")
        assert again.status_code == 400
        assert _code(again) == "IDT_FIELD_NOT_TOKENIZED"

    def test_too_long_plain_value_is_400(self, sealed_http: httpx.Client) -> None:
        """A plain value past 255 characters is 400 IDT_VALIDATION_ERROR on create and update."""
        created = sealed_http.post("/identities", json=_person(city="c" * 256))
        assert created.status_code == 400
        assert _code(created) == "IDT_VALIDATION_ERROR"
        identity_id = _create(sealed_http)["identity_id"]
        assert sealed_http.post(f"/identities/{identity_id}/tokenize/Street").status_code == 200
        updated = sealed_http.put(f"/identities/{identity_id}", json=_person(street="s" * 256))
        assert updated.status_code == 400
        assert _code(updated) == "IDT_VALIDATION_ERROR"

    def test_oversized_meta_data_is_400(self, sealed_http: httpx.Client) -> None:
        """meta_data past 64 KiB once encoded is 400 IDT_VALIDATION_ERROR."""
        response = sealed_http.post("/identities", json=_person(meta_data={"blob": "m" * 65_536}))
        assert response.status_code == 400
        assert _code(response) == "IDT_VALIDATION_ERROR"


class TestDob:
    @pytest.mark.parametrize(
        ("given", "shown"),
        [
            ("1906-12-09T00:00:00Z", "1906-12-09T00:00:00Z"),
            ("1906-12-09T05:30:00+05:30", "1906-12-09T00:00:00Z"),
            ("1906-12-08T19:00:00-05:00", "1906-12-09T00:00:00Z"),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("", "0001-01-01T00:00:00Z"),
        ],
    )
    def test_rfc3339_times_are_kept_in_utc(
        self, sealed_http: httpx.Client, given: str, shown: str
    ) -> None:
        """A dob with any UTC offset is stored as that instant and shown in UTC; Go's zero time
        and an empty dob mean unset."""
        assert _create(sealed_http, dob=given)["dob"] == shown

    @pytest.mark.parametrize(
        "given",
        [
            "1906-12-09",
            "1906-12-09T00:00:00",
            "09/12/1906",
            "yesterday",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:00:00-05:00",
        ],
    )
    def test_other_dobs_are_400(self, sealed_http: httpx.Client, given: str) -> None:
        """A date without a time or an offset, another format, or an instant outside years
        1-9999 in UTC is 400 IDT_VALIDATION_ERROR, on create and on update."""
        created = sealed_http.post("/identities", json=_person(dob=given))
        assert created.status_code == 400, created.text
        assert _code(created) == "IDT_VALIDATION_ERROR"
        identity_id = _create(sealed_http)["identity_id"]
        updated = sealed_http.put(f"/identities/{identity_id}", json=_person(dob=given))
        assert updated.status_code == 400, updated.text
        assert _code(updated) == "IDT_VALIDATION_ERROR"
