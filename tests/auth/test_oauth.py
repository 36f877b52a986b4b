"""OAuth 2.0 with a standard client: authlib completes code + PKCE and a refresh against us.

Method: an administrator (with a second factor) registers a confidential client over the admin
route; authlib's `AsyncOAuth2Client`, speaking HTTP to the same ASGI app, builds the
authorization URL with an S256 challenge; the user's app calls `/oauth/authorize` with the
user's bearer token and hands the redirect back to authlib, which exchanges the code and later
refreshes. Revocation (RFC 7009) and introspection (RFC 7662) are checked on the tokens issued.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import warnings
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from auth.dependencies import AuthDependencies
from kit.clock import FrozenClock
from tests.auth.conftest import Account, administrator, build_app, registered, with_totp
from users import service as users
from users.models import Role

with warnings.catch_warnings(record=True):
    # authlib 1.9 warns at import that its httpx integration will move to httpx2; it still
    # speaks httpx 0.28, which is what we test against.
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]  # untyped library

pytestmark = pytest.mark.db

ISSUER = "http://127.0.0.1:8000"
REDIRECT = "https://partner.example/callback"


async def _client(client: httpx.AsyncClient, admin: Account, **extra: object) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/oauth/clients",
        json={
            "name": "Partner",
            "redirect_uris": [REDIRECT],
            "scopes": ["openid", "profile", "wallet"],
            **extra,
        },
        headers=admin.bearer,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


class TestAuthlibClient:
    async def test_code_pkce_and_refresh(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """authlib gets tokens with code + PKCE S256, then refreshes them."""
        admin = await administrator(client, deps, clock)
        registered_client = await _client(client, admin)
        oauth = AsyncOAuth2Client(
            client_id=registered_client["client_id"],
            client_secret=registered_client["client_secret"],
            scope="openid wallet",
            redirect_uri=REDIRECT,
            code_challenge_method="S256",
            transport=httpx.ASGITransport(app=build_app(deps)),
        )
        verifier = secrets.token_urlsafe(48)
        url, state = oauth.create_authorization_url(
            f"{ISSUER}/oauth/authorize", code_verifier=verifier
        )
        redirect = await client.get(url, headers=admin.bearer)
        assert redirect.status_code == 302, redirect.text
        location = redirect.headers["location"]
        assert location.startswith(REDIRECT)
        assert parse_qs(urlsplit(location).query)["iss"] == [ISSUER]
        token = await oauth.fetch_token(
            f"{ISSUER}/oauth/token",
            authorization_response=location,
            code_verifier=verifier,
            state=state,
        )
        assert token["token_type"].lower() == "bearer"
        claims = deps.verifier.verify(token["access_token"])
        assert claims.client_id == registered_client["client_id"]
        assert claims.scope == ("openid", "wallet")
        assert claims.has_mfa
        id_token = jwt.decode(
            token["id_token"],
            options={"verify_signature": False},
            audience=registered_client["client_id"],
        )
        assert id_token["sub"] == str(claims.sub)

        refreshed = await oauth.refresh_token(
            f"{ISSUER}/oauth/token", refresh_token=token["refresh_token"]
        )
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert deps.verifier.verify(refreshed["access_token"]).sid == claims.sid
        await oauth.aclose()

    async def test_code_is_single_use_and_bound_to_pkce(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A wrong verifier, a second exchange and a foreign redirect_uri are invalid_grant."""
        admin = await administrator(client, deps, clock)
        registered_client = await _client(client, admin)
        verifier, challenge = _pkce()
        params = {
            "response_type": "code",
            "client_id": registered_client["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        location = (
            await client.get("/oauth/authorize", params=params, headers=admin.bearer)
        ).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": registered_client["client_id"],
            "client_secret": registered_client["client_secret"],
        }
        bad = await client.post("/oauth/token", data={**form, "code_verifier": "x" * 43})
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_grant"
        good = await client.post("/oauth/token", data={**form, "code_verifier": verifier})
        assert good.status_code == 200, good.text
        assert good.headers["cache-control"] == "no-store"
        replay = await client.post("/oauth/token", data={**form, "code_verifier": verifier})
        assert replay.status_code == 400
        revoked = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": good.json()["refresh_token"]}
        )
        assert revoked.status_code == 401  # a replayed code revokes what it produced

    async def test_authorize_checks_client_redirect_and_pkce(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Unregistered redirect URIs never redirect; a missing PKCE challenge is an error."""
        admin = await administrator(client, deps, clock)
        registered_client = await _client(client, admin)
        base = {
            "response_type": "code",
            "client_id": registered_client["client_id"],
            "scope": "openid",
        }
        foreign = await client.get(
            "/oauth/authorize",
            params={**base, "redirect_uri": REDIRECT + "x"},
            headers=admin.bearer,
        )
        assert foreign.status_code == 400
        assert foreign.json()["code"] == "AUTH_OAUTH_ERROR"
        no_pkce = await client.get(
            "/oauth/authorize", params={**base, "redirect_uri": REDIRECT}, headers=admin.bearer
        )
        assert no_pkce.status_code == 302
        assert parse_qs(urlsplit(no_pkce.headers["location"]).query)["error"] == ["invalid_request"]

    async def test_bad_client_secret_is_invalid_client(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A wrong secret answers 401 invalid_client in RFC 6749's shape."""
        admin = await administrator(client, deps, clock)
        registered_client = await _client(client, admin)
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            auth=(registered_client["client_id"], "wrong"),
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    async def test_client_name_with_nul_is_422(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """U+0000, which PostgreSQL cannot store, is refused before the handler runs (it was a
        500 from the database) and no client is registered."""
        admin = await administrator(client, deps, clock)
        async with deps.db.connection() as conn:
            before = await conn.fetchval("SELECT count(*) FROM oauth_clients")
        response = await client.post(
            "/api/v1/auth/oauth/clients",
            json={"name": "Part\x00ner", "redirect_uris": [REDIRECT], "scopes": ["openid"]},
            headers=admin.bearer,
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "U+0000" in response.text
        async with deps.db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM oauth_clients") == before

    async def test_client_registration_needs_an_admin(
        self, client: httpx.AsyncClient, clock: FrozenClock
    ) -> None:
        """A user with a second factor but no admin role is refused."""
        account = await registered(client)
        await with_totp(client, account, clock)
        response = await client.post(
            "/api/v1/auth/oauth/clients",
            json={"name": "x", "redirect_uris": [REDIRECT], "scopes": ["openid"]},
            headers=account.bearer,
        )
        assert response.status_code == 403
        assert response.json()["code"] == "AUTH_ADMIN_REQUIRED"

    async def test_a_withdrawn_admin_role_cannot_register_with_its_old_token(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The token still says admin, the account no longer does: refused, nothing stored."""
        admin = await administrator(client, deps, clock)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, admin.email)
            assert user is not None
            await users.set_role(conn, user.id, Role.USER)
            before = await conn.fetchval("SELECT count(*) FROM oauth_clients")
        response = await client.post(
            "/api/v1/auth/oauth/clients",
            json={"name": "x", "redirect_uris": [REDIRECT], "scopes": ["openid"]},
            headers=admin.bearer,
        )
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "AUTH_ADMIN_REQUIRED"
        async with deps.db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM oauth_clients") == before


class TestRevocationAndIntrospection:
    async def test_introspect_then_revoke(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Introspection says active; after RFC 7009 revocation both tokens are inactive."""
        admin = await administrator(client, deps, clock)
        registered_client = await _client(client, admin)
        verifier, challenge = _pkce()
        params = {
            "response_type": "code",
            "client_id": registered_client["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "openid wallet",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        location = (
            await client.get("/oauth/authorize", params=params, headers=admin.bearer)
        ).headers["location"]
        auth = (registered_client["client_id"], registered_client["client_secret"])
        tokens = (
            await client.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": parse_qs(urlsplit(location).query)["code"][0],
                    "redirect_uri": REDIRECT,
                    "code_verifier": verifier,
                },
                auth=auth,
            )
        ).json()
        active = (
            await client.post(
                "/oauth/introspect", data={"token": tokens["access_token"]}, auth=auth
            )
        ).json()
        assert active["active"] is True
        assert active["client_id"] == registered_client["client_id"]
        assert active["scope"] == "openid wallet"
        refresh_info = (
            await client.post(
                "/oauth/introspect", data={"token": tokens["refresh_token"]}, auth=auth
            )
        ).json()
        assert refresh_info["active"] is True
        assert refresh_info["token_type"] == "refresh_token"

        assert (
            await client.post("/oauth/revoke", data={"token": tokens["refresh_token"]}, auth=auth)
        ).status_code == 200
        for token in (tokens["access_token"], tokens["refresh_token"]):
            answer = (
                await client.post("/oauth/introspect", data={"token": token}, auth=auth)
            ).json()
            assert answer == {"active": False}
        assert (
            await client.post("/oauth/revoke", data={"token": "unknown"}, auth=auth)
        ).status_code == 200


class TestMalformedInput:
    """Input no client can mean is refused before anything is looked up."""

    @pytest.mark.parametrize(
        ("path", "form"),
        [
            ("/oauth/token", {"grant_type": "refresh_token", "client_id": "a\x00b"}),
            ("/oauth/token", {"grant_type": "authorization_code", "code": "c\x00d"}),
            ("/oauth/introspect", {"token": "t", "client_id": "\x00"}),
            ("/oauth/introspect", {"token": "t\x00", "client_id": "x", "client_secret": "y"}),
            ("/oauth/revoke", {"token": "t", "client_secret": "s\x00"}),
        ],
    )
    async def test_nul_in_a_form_field_is_422(
        self, client: httpx.AsyncClient, path: str, form: dict[str, str]
    ) -> None:
        """A form field with U+0000 is refused as any malformed field is (it reached
        PostgreSQL's lookup of the client and was a 500)."""
        response = await client.post(path, data=form)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "U+0000" in response.text

    @pytest.mark.parametrize(
        "credentials",
        ["part\x00ner:secret", "partner:sec\x00ret", "x" * 65 + ":secret", "partner:" + "s" * 201],
    )
    async def test_impossible_basic_credentials_are_invalid_client(
        self, client: httpx.AsyncClient, credentials: str
    ) -> None:
        """HTTP Basic credentials no client can have (U+0000, past the field bounds) fail
        client authentication like a wrong secret: 401 invalid_client, nothing looked up."""
        basic = base64.b64encode(credentials.encode()).decode()
        response = await client.post(
            "/oauth/introspect", data={"token": "t"}, headers={"Authorization": f"Basic {basic}"}
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
