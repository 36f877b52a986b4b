"""Bad input the identity API must refuse cleanly: a 4xx in its documented shape, nothing
changed, never a 500.

Method: each case is one the OpenAPI fuzzer (`test_fuzz_openapi.py`) cannot reach on its own,
since it needs state a random request does not have (a pending TOTP enrolment, a sign-in's
`mfa_token`, a WebAuthn registration challenge answered by a real authenticator, a registered
OAuth client, a redirect URI stored before registration checked it); the test builds that
state over HTTP (or, for old rows, with SQL), then sends the bad value where a client could put
it: text outside ASCII where ASCII is expected, the parts of a WebAuthn response that no
signature covers, a loopback redirect beside a stored URI that does not parse. Last, the
OAuth forms' required fields are documented as non-empty, as they are answered.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from auth.dependencies import AuthDependencies
from auth.otp import match_totp, totp
from kit.clock import FrozenClock
from tests.auth.conftest import (
    Account,
    administrator,
    login,
    mfa_token,
    registered,
    start_totp,
    verify_second_step,
    with_totp,
)
from tests.auth.test_oauth_flows import authorize, pkce, query_of, register
from tests.auth.test_webauthn import SoftAuthenticator

pytestmark = pytest.mark.db

# Six characters Python calls digits that no authenticator app shows: Arabic-Indic, full-width
# and superscript digits.
NON_ASCII_DIGITS = [
    "\u0661\u0662\u0663\u0664\u0665\u0666",
    "\uff11\uff12\uff13\uff14\uff15\uff16",
    "\u00b2" * 6,
]


class TestTotpCodeOutsideAscii:
    """A TOTP code is six ASCII digits; any other six "digits" are a wrong code (401), not a
    comparison that raises."""

    @pytest.mark.parametrize("code", NON_ASCII_DIGITS)
    def test_match_totp_finds_no_step(self, clock: FrozenClock, code: str) -> None:
        """The matcher answers None for digits outside ASCII, as for any wrong code."""
        assert code.isdigit()
        assert match_totp(b"0" * 20, code, clock.now()) is None

    @pytest.mark.parametrize("code", NON_ASCII_DIGITS)
    async def test_sign_in_with_such_a_code_is_a_wrong_code(
        self, client: httpx.AsyncClient, clock: FrozenClock, code: str
    ) -> None:
        """`mfa_code` at login and `/mfa/verify` answer 401 AUTH_INVALID_MFA_CODE; the right
        code still signs in afterwards."""
        account = await registered(client)
        secret = await with_totp(client, account, clock)
        direct = await login(client, Account(email=account.email), mfa_code=code)
        assert direct.status_code == 401, direct.text
        assert direct.json()["code"] == "AUTH_INVALID_MFA_CODE"
        token = await mfa_token(client, account)
        second = await verify_second_step(client, token, "totp", code)
        assert second.status_code == 401, second.text
        assert second.json()["code"] == "AUTH_INVALID_MFA_CODE"
        right = await verify_second_step(client, token, "totp", totp(secret, clock.now()))
        assert right.status_code == 200, right.text

    @pytest.mark.parametrize("code", NON_ASCII_DIGITS)
    async def test_confirming_enrolment_with_such_a_code_enables_nothing(
        self, client: httpx.AsyncClient, clock: FrozenClock, code: str
    ) -> None:
        """`/mfa/totp/confirm` answers 401 and the factor stays pending."""
        account = await registered(client)
        await start_totp(client, account)
        response = await client.post(
            "/api/v1/auth/mfa/totp/confirm", json={"code": code}, headers=account.bearer
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "AUTH_INVALID_MFA_CODE"
        factors = await client.get("/api/v1/auth/mfa/factors", headers=account.bearer)
        assert [f["is_enabled"] for f in factors.json()["factors"]] == [False]


class TestPasskeyTransports:
    """`response.transports` of a registration is the client's hint, outside the signature: it
    is kept only as the WebAuthn values it names (L3 §5.8.4), whatever else is sent."""

    @pytest.mark.parametrize(
        ("transports", "kept"),
        [
            (["\u0000"], []),
            (5, []),
            (None, []),
            ("usb", []),
            ({"usb": True}, []),
            (["usb", "bogus", {"a": 1}, ["nfc"], 7, "x" * 10_000, "internal"], ["usb", "internal"]),
        ],
    )
    async def test_only_known_transports_are_kept(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        transports: Any,
        kept: list[str],
    ) -> None:
        """A genuine registration with odd transports is accepted (200); the stored list holds
        only the known values it named."""
        account = await registered(client)
        authenticator = SoftAuthenticator("localhost", deps.settings.auth_webauthn_origins)
        options = (
            await client.post("/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer)
        ).json()
        credential = authenticator.register(options)
        credential["response"]["transports"] = transports
        response = await client.post(
            "/api/v1/auth/mfa/webauthn/register/verify",
            json={"credential": credential},
            headers=account.bearer,
        )
        assert response.status_code == 200, response.text
        async with deps.db.connection() as conn:
            stored = await conn.fetchval(
                "SELECT transports FROM webauthn_credentials WHERE credential_id = $1",
                authenticator.credential_id,
            )
        assert stored == kept


class TestPkceChallengeShape:
    """An S256 `code_challenge` is 43 base64url characters (RFC 7636 §4.2); anything else is
    refused at `/oauth/authorize`, before a code exists, rather than failing its exchange."""

    @pytest.mark.parametrize("challenge", ["é" * 43, "+" * 43, "A" * 42 + "=", "A" * 42 + " "])
    async def test_a_challenge_outside_base64url_gets_no_code(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        challenge: str,
    ) -> None:
        """The client is sent `invalid_request` and no code is stored."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        query = query_of(await authorize(client, admin, partner, code_challenge=challenge))
        assert query["error"] == ["invalid_request"]
        assert "code" not in query
        async with deps.db.connection() as conn:
            codes = await conn.fetchval(
                "SELECT count(*) FROM oauth_authorization_codes WHERE client_id = $1",
                partner.client_id,
            )
        assert codes == 0


class TestStoredRedirectUriOutsideTheRules:
    """A redirect URI stored before registration checked it may not even parse; a loopback
    request beside it is judged on the URIs that do (RFC 8252 §7.3 port freedom), not a 500."""

    @pytest.mark.parametrize(
        "stored", ["http://[::1/callback", "http://127.0.0.1:99999/cb", "http://127.0.0.1:x/cb"]
    )
    async def test_a_loopback_request_beside_it_is_answered(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        stored: str,
    ) -> None:
        """An unregistered loopback URI is refused (400), a registered one on another port
        gets its code; the unparsable stored URI is never used."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin, redirect_uris=["http://127.0.0.1/cb"])
        # A path of its own: the clients table is shared, and other tests count broken URIs.
        async with deps.db.transaction() as conn:
            await conn.execute(
                "UPDATE oauth_clients SET redirect_uris = $2::text || redirect_uris"
                " WHERE client_id = $1",
                partner.client_id,
                f"{stored}/{secrets.token_hex(8)}",
            )
        _, challenge = pkce()
        refused = await authorize(
            client,
            admin,
            partner,
            redirect_uri="http://127.0.0.1:8765/other",
            code_challenge=challenge,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "AUTH_OAUTH_ERROR"
        granted = await authorize(
            client,
            admin,
            partner,
            redirect_uri="http://127.0.0.1:8765/cb",
            code_challenge=challenge,
        )
        assert "code" in query_of(granted)


class TestRequiredFormFieldsAreDocumentedNonEmpty:
    """An empty form field is no field at all (422 "Field required"), so the document says the
    required ones have at least one character: a client reading it is not told "" is valid."""

    @pytest.mark.parametrize(
        ("path", "field"),
        [
            ("/oauth/token", "grant_type"),
            ("/oauth/revoke", "token"),
            ("/oauth/introspect", "token"),
        ],
    )
    async def test_document_and_answer_agree(
        self, client: httpx.AsyncClient, path: str, field: str
    ) -> None:
        """`minLength: 1` in the form's schema, and the empty value answered 422 problem+json."""
        document = (await client.get("/openapi.json")).json()
        body = document["paths"][path]["post"]["requestBody"]["content"]
        ref = body["application/x-www-form-urlencoded"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert document["components"]["schemas"][ref]["properties"][field]["minLength"] == 1
        response = await client.post(path, data={field: ""})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
