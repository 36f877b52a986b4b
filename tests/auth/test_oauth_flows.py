"""OAuth 2.0 as a client developer and an attacker meet it: every way a request can go wrong.

Method: an administrator registers clients over the admin route; the user's app calls
`/oauth/authorize` with the user's bearer token and reads the redirect it answers; the tests
then play the client at `/oauth/token`, `/oauth/revoke` and `/oauth/introspect` over HTTP,
replaying codes, presenting them with the wrong client, redirect URI or PKCE verifier, moving
the clock past their lifetime, and mixing client authentication methods (RFC 6749, RFC 7636,
RFC 7009, RFC 7662 and the OAuth 2.0 Security BCP). Protocol errors must come back in RFC
6749's shape (`{error, error_description}`), and a refused request must grant nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import jwt
import pytest

from auth.constants import AUTHORIZATION_CODE_TTL_S, REFRESH_GRACE_S
from auth.dependencies import AuthDependencies
from auth.models import RevokeReason
from auth.service import admin as admin_service
from auth.service.sessions import end_other_sessions
from kit.clock import FrozenClock
from tests.auth.conftest import Account, administrator, registered, until_waiting
from users import service as users

pytestmark = pytest.mark.db

ISSUER = "http://127.0.0.1:8000"
REDIRECT = "https://partner.example/callback"
OTHER_REDIRECT = "https://partner.example/other"
INTROSPECT = "introspect"  # the registered permission to introspect other clients' tokens


@dataclass(frozen=True)
class Client:
    """A registered client as its developer holds it."""

    client_id: str
    client_secret: str | None

    @property
    def basic(self) -> tuple[str, str]:
        """HTTP Basic credentials (`client_secret_basic`)."""
        assert self.client_secret is not None
        return (self.client_id, self.client_secret)

    @property
    def post(self) -> dict[str, str]:
        """Form credentials (`client_secret_post`, or `none` for a public client)."""
        form = {"client_id": self.client_id}
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret
        return form


@dataclass(frozen=True)
class Issued:
    """A code's PKCE verifier and the token response of its exchange."""

    verifier: str
    body: dict[str, Any]

    @property
    def access_token(self) -> str:
        """The access token."""
        return str(self.body["access_token"])

    @property
    def refresh_token(self) -> str:
        """The refresh token."""
        return str(self.body["refresh_token"])


async def register(
    client: httpx.AsyncClient,
    admin: Account,
    *,
    redirect_uris: list[str] | None = None,
    scopes: list[str] | None = None,
    is_confidential: bool = True,
) -> Client:
    """A client registered by the administrator."""
    response = await client.post(
        "/api/v1/auth/oauth/clients",
        json={
            "name": "Partner",
            "redirect_uris": redirect_uris or [REDIRECT, OTHER_REDIRECT],
            "scopes": scopes or ["openid", "profile", "wallet"],
            "is_confidential": is_confidential,
        },
        headers=admin.bearer,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Client(client_id=body["client_id"], client_secret=body["client_secret"])


def pkce(length: int = 64) -> tuple[str, str]:
    """A verifier of `length` characters and its S256 challenge."""
    verifier = secrets.token_urlsafe(length)[:length]
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(response: httpx.Response) -> dict[str, list[str]]:
    """The query of a redirect's Location."""
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


async def authorize(
    client: httpx.AsyncClient, user: Account, registered_client: Client, **params: str
) -> httpx.Response:
    """The user's app asks for a code with the user's bearer token."""
    query = {
        "response_type": "code",
        "client_id": registered_client.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid wallet",
        "code_challenge_method": "S256",
        **params,
    }
    return await client.get("/oauth/authorize", params=query, headers=user.bearer)


async def code_for(
    client: httpx.AsyncClient, user: Account, registered_client: Client, **params: str
) -> tuple[str, str]:
    """A fresh code and its PKCE verifier."""
    verifier, challenge = pkce()
    response = await authorize(client, user, registered_client, code_challenge=challenge, **params)
    return query_of(response)["code"][0], verifier


async def exchange(
    client: httpx.AsyncClient, registered_client: Client, code: str, verifier: str, **form: str
) -> httpx.Response:
    """The authorization_code grant, authenticated with the form (or as a public client)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        **registered_client.post,
        **form,
    }
    return await client.post("/oauth/token", data=data)


async def issued(
    client: httpx.AsyncClient, user: Account, registered_client: Client, **params: str
) -> Issued:
    """Tokens from a complete code + PKCE flow."""
    code, verifier = await code_for(client, user, registered_client, **params)
    response = await exchange(client, registered_client, code, verifier)
    assert response.status_code == 200, response.text
    return Issued(verifier=verifier, body=dict(response.json()))


async def refresh_with(
    client: httpx.AsyncClient, registered_client: Client, token: str, **form: str
) -> httpx.Response:
    """The refresh_token grant, authenticated with the form."""
    data = {"grant_type": "refresh_token", "refresh_token": token, **registered_client.post}
    return await client.post("/oauth/token", data={**data, **form})


async def introspect(
    client: httpx.AsyncClient, registered_client: Client, token: str
) -> dict[str, Any]:
    """What introspection says of a token, asked by a confidential client."""
    response = await client.post(
        "/oauth/introspect", data={"token": token}, auth=registered_client.basic
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def revoke(
    client: httpx.AsyncClient, registered_client: Client, token: str, hint: str | None = None
) -> None:
    """RFC 7009 revocation by a confidential client, which answers 200 with `{}` whatever the
    token (its own, another client's, or none at all)."""
    data = {"token": token} if hint is None else {"token": token, "token_type_hint": hint}
    response = await client.post("/oauth/revoke", data=data, auth=registered_client.basic)
    assert response.status_code == 200, response.text
    assert response.json() == {}


def assert_oauth_error(response: httpx.Response, error: str, status: int = 400) -> None:
    """An RFC 6749 error body, never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error


class TestClientRegistration:
    """What an administrator may register."""

    @pytest.mark.parametrize(
        "redirect_uri",
        [
            # RFC 6749 3.1.2: absolute, with a host for the web, no fragment for the code
            "https://partner.example/callback#done",
            "/callback",
            "partner.example/callback",
            "https:///callback",
            "http://[::1/callback",
            # plain http only on 127.0.0.1 or [::1] (RFC 8252 7.3, 8.3; RFC 9700 2.1): on any
            # other host the code would cross the network in clear
            "http://partner.example/callback",
            "HTTP://partner.example/callback",
            "http://localhost:8765/callback",  # a name, not a loopback literal (RFC 8252 8.3)
            "http://127.0.0.1.partner.example/callback",
            "http://127.1/callback",
            "http://10.0.0.1/callback",
            "http://[::ffff:127.0.0.1]/callback",
            "http://user@127.0.0.1:8765/callback",
            "http://127.0.0.1:99999/callback",
            # a private-use scheme is a reverse domain name (RFC 8252 7.1); a scheme a browser
            # acts on itself would run the code's page as script or read local files
            "javascript:alert(document.cookie)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "vbscript:msgbox(1)",
            "app://callback",
            # not a URI at all (RFC 3986): a host that is no host name or IP literal, text
            # outside the URI characters, a broken percent-escape
            "https://partner example/callback",
            "https://pärtner.example/callback",
            "https://partner_.example/callback",
            "https://[v1.partner]/callback",
            "https://partner.example/call back",
            "https://partner.example/callback?x=<script>",
            "https://partner.example/%zzcallback",
            "https://%70artner.example/callback",
            "com.example.app:/call back",
        ],
    )
    async def test_a_redirect_uri_outside_the_rules_is_refused(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        redirect_uri: str,
    ) -> None:
        """A redirect URI that is relative, a web URI without a host or with a fragment (where
        no code can be added), plain http off the loopback literals, a scheme that is no app's
        own, or text that is no RFC 3986 URI is refused, and no client is registered."""
        admin = await administrator(client, deps, clock)
        response = await client.post(
            "/api/v1/auth/oauth/clients",
            json={
                "name": "Broken",
                "redirect_uris": [REDIRECT, redirect_uri],
                "scopes": ["openid"],
            },
            headers=admin.bearer,
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "AUTH_OAUTH_ERROR"
        assert response.json()["details"]["error"] == "invalid_redirect_uri"
        async with deps.db.connection() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM oauth_clients WHERE $1 = ANY(redirect_uris)", redirect_uri
            )
        assert count == 0

    @pytest.mark.parametrize(
        "redirect_uri",
        [
            "http://127.0.0.1:8765/callback",
            "http://127.0.0.1/callback",
            "http://[::1]:8765/callback",
        ],
    )
    async def test_loopback_ip_literal_over_http_is_accepted(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        redirect_uri: str,
    ) -> None:
        """A native app's loopback redirect (RFC 8252 7.3) may use plain http, and the code
        reaches it."""
        admin = await administrator(client, deps, clock)
        app = await register(client, admin, redirect_uris=[redirect_uri], is_confidential=False)
        _, challenge = pkce()
        response = await authorize(
            client, admin, app, redirect_uri=redirect_uri, code_challenge=challenge
        )
        assert response.headers["location"].startswith(redirect_uri + "?")
        assert "code" in query_of(response)

    @pytest.mark.parametrize(
        ("registered", "requested"),
        [
            ("http://127.0.0.1:8765/callback", "http://127.0.0.1:50123/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:50123/callback"),
            ("http://[::1]:8765/callback", "http://[::1]:4000/callback"),
        ],
    )
    async def test_a_loopback_redirect_may_name_any_port(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        registered: str,
        requested: str,
    ) -> None:
        """A native app's loopback listener takes whatever port the system gives it, so the
        port of a loopback redirect is not matched (RFC 8252 7.3, a MUST); the code is bound to
        the URI asked with, port included, when it is exchanged."""
        admin = await administrator(client, deps, clock)
        app = await register(client, admin, redirect_uris=[registered], is_confidential=False)
        code, verifier = await code_for(client, admin, app, redirect_uri=requested)
        refused = await exchange(client, app, code, verifier, redirect_uri=registered)
        assert_oauth_error(refused, "invalid_grant")
        code, verifier = await code_for(client, admin, app, redirect_uri=requested)
        accepted = await exchange(client, app, code, verifier, redirect_uri=requested)
        assert accepted.status_code == 200, accepted.text

    @pytest.mark.parametrize(
        "requested",
        [
            "http://127.0.0.1:50123/other",  # another path
            "http://[::1]:50123/callback",  # another loopback address
            "http://127.0.0.1:50123/callback?x=1",  # another query
        ],
    )
    async def test_only_the_port_of_a_loopback_redirect_may_differ(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        requested: str,
    ) -> None:
        """Everything but the port is still matched exactly: no code is issued."""
        admin = await administrator(client, deps, clock)
        registered = "http://127.0.0.1:8765/callback"
        app = await register(client, admin, redirect_uris=[registered], is_confidential=False)
        _, challenge = pkce()
        response = await authorize(
            client, admin, app, redirect_uri=requested, code_challenge=challenge
        )
        assert response.status_code == 400, response.text
        assert "code" not in response.headers.get("location", "")

    async def test_native_app_scheme_is_accepted(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A native app's private-use scheme (RFC 8252) has no host and is a valid redirect,
        and the code reaches it."""
        admin = await administrator(client, deps, clock)
        native = "com.dwaybank.partner:/oauth2redirect"
        app = await register(client, admin, redirect_uris=[native], is_confidential=False)
        _, challenge = pkce()
        response = await authorize(
            client, admin, app, redirect_uri=native, code_challenge=challenge
        )
        assert response.headers["location"].startswith(native + "?")
        assert "code" in query_of(response)

    async def test_unknown_scope_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A scope we do not define cannot be granted to a client."""
        admin = await administrator(client, deps, clock)
        response = await client.post(
            "/api/v1/auth/oauth/clients",
            json={"name": "x", "redirect_uris": [REDIRECT], "scopes": ["openid", "admin"]},
            headers=admin.bearer,
        )
        assert response.status_code == 400, response.text
        assert response.json()["details"]["error"] == "invalid_scope"


class TestAuthorizeRedirect:
    """Where `/oauth/authorize` sends the user, and what it refuses to send anywhere."""

    @pytest.mark.parametrize(
        "redirect_uri",
        [
            "https://partner.example/call",  # a prefix of the registered URI
            "https://partner.example/callback/",  # a trailing slash
            "https://partner.example/callback/../callback",
            "https://Partner.example/callback",  # the host's case
            "https://partner.example/Callback",  # the path's case
            "https://partner.example:443/callback",  # the default port spelt out
            "https://partner.example:8443/callback",
            "http://partner.example/callback",  # the scheme
            "https://partner.example/callback?next=evil",
            "https://partner.example.evil/callback",
        ],
    )
    async def test_redirect_uri_must_match_exactly(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        redirect_uri: str,
    ) -> None:
        """A redirect URI that is not byte for byte a registered one is an error shown to the
        caller, never a redirect (an open redirector would leak the code)."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        _, challenge = pkce()
        response = await authorize(
            client, admin, partner, redirect_uri=redirect_uri, code_challenge=challenge
        )
        assert response.status_code == 400, response.text
        assert "location" not in response.headers
        assert response.json()["code"] == "AUTH_OAUTH_ERROR"

    async def test_plain_http_uri_registered_earlier_is_not_redirected_to(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A plain-http redirect URI on a public host stored before registration refused it
        is an error shown to the caller, never a redirect carrying a code."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        # A path of its own: the clients table is shared, and another test counts this host.
        plain = f"http://partner.example/{secrets.token_hex(8)}"
        async with deps.db.transaction() as conn:
            await conn.execute(
                "UPDATE oauth_clients SET redirect_uris = redirect_uris || $2::text"
                " WHERE client_id = $1",
                partner.client_id,
                plain,
            )
        _, challenge = pkce()
        response = await authorize(
            client, admin, partner, redirect_uri=plain, code_challenge=challenge
        )
        assert response.status_code == 400, response.text
        assert "location" not in response.headers
        assert response.json()["code"] == "AUTH_OAUTH_ERROR"
        async with deps.db.connection() as conn:
            codes = await conn.fetchval(
                "SELECT count(*) FROM oauth_authorization_codes WHERE client_id = $1",
                partner.client_id,
            )
        assert codes == 0

    async def test_unknown_client_is_not_redirected(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A client id nobody registered is an error, not a redirect."""
        admin = await administrator(client, deps, clock)
        _, challenge = pkce()
        response = await authorize(
            client, admin, Client("cl_unknown", None), code_challenge=challenge
        )
        assert response.status_code == 400
        assert "location" not in response.headers

    async def test_registered_query_is_kept(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A registered redirect URI with a query keeps it, and the response parameters are
        added to it (RFC 6749 section 3.1.2), not glued on with a second `?`."""
        admin = await administrator(client, deps, clock)
        with_query = "https://partner.example/callback?tenant=7"
        partner = await register(client, admin, redirect_uris=[with_query])
        verifier, challenge = pkce()
        response = await authorize(
            client,
            admin,
            partner,
            redirect_uri=with_query,
            code_challenge=challenge,
            state="s-1",
        )
        location = urlsplit(response.headers["location"])
        assert location.path == "/callback"
        query = parse_qs(location.query)
        assert query["tenant"] == ["7"]
        assert query["state"] == ["s-1"]
        assert query["iss"] == [ISSUER]
        token = await exchange(client, partner, query["code"][0], verifier, redirect_uri=with_query)
        assert token.status_code == 200, token.text

    async def test_state_is_echoed_with_a_code_and_with_an_error(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """`state` comes back unchanged, with the issuer (RFC 9207), whether the answer is a
        code or an error."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        state = "a b&c=d/é"
        _, challenge = pkce()
        granted = query_of(
            await authorize(client, admin, partner, code_challenge=challenge, state=state)
        )
        assert granted["state"] == [state]
        assert granted["iss"] == [ISSUER]
        assert "error" not in granted
        refused = query_of(
            await authorize(client, admin, partner, code_challenge=challenge[:-1], state=state)
        )
        assert refused["state"] == [state]
        assert refused["iss"] == [ISSUER]
        assert refused["error"] == ["invalid_request"]
        assert "code" not in refused

    @pytest.mark.parametrize(
        ("params", "error"),
        [
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"code_challenge_method": ""}, "invalid_request"),
            ({"code_challenge_method": "s256"}, "invalid_request"),
            ({"code_challenge": "A" * 42}, "invalid_request"),
            ({"code_challenge": "A" * 44}, "invalid_request"),
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"response_type": "code id_token"}, "unsupported_response_type"),
            ({"scope": "openid payments"}, "invalid_scope"),
            ({"scope": "openid admin"}, "invalid_scope"),
            ({"scope": " "}, "invalid_scope"),
        ],
    )
    async def test_refusals_are_redirected_without_a_code(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        params: dict[str, str],
        error: str,
    ) -> None:
        """`plain` or missing PKCE, a malformed challenge, an implicit or hybrid response type
        and a scope the client may not ask for come back to the client as its error, and no
        code is stored."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        _, challenge = pkce()
        query = query_of(
            await authorize(client, admin, partner, **{"code_challenge": challenge, **params})
        )
        assert query["error"] == [error]
        assert "code" not in query
        async with deps.db.connection() as conn:
            codes = await conn.fetchval(
                "SELECT count(*) FROM oauth_authorization_codes WHERE client_id = $1",
                partner.client_id,
            )
        assert codes == 0

    async def test_a_partner_token_cannot_authorize(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An access token issued to a client cannot mint codes (for itself or any other
        client): only the user's own app may, or a partner could widen what it was granted."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin, scopes=["openid", "wallet", "payments"])
        tokens = await issued(client, admin, partner, scope="wallet")
        _, challenge = pkce()
        as_partner = Account(email=admin.email, access_token=tokens.access_token)
        response = await authorize(
            client, as_partner, partner, scope="wallet payments", code_challenge=challenge
        )
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "GEN_FORBIDDEN"

    async def test_a_session_without_a_second_factor_cannot_authorize(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A password-only session is asked for a step-up instead of getting a code."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        user = await registered(client)
        _, challenge = pkce()
        response = await authorize(client, user, partner, code_challenge=challenge)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "AUTH_MFA_STEP_UP_REQUIRED"


class TestCodeExchange:
    """`grant_type=authorization_code`: a code is one client's, once, within its lifetime."""

    async def test_replayed_code_revokes_the_access_token_too(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A second exchange of a code fails and ends everything the first one issued: the
        refresh token and the access token (RFC 6749 section 4.1.2)."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        first = await exchange(client, partner, code, verifier)
        assert first.status_code == 200, first.text
        access = first.json()["access_token"]
        assert (await introspect(client, partner, access))["active"] is True

        replay = await exchange(client, partner, code, verifier)
        assert_oauth_error(replay, "invalid_grant")
        assert await introspect(client, partner, access) == {"active": False}
        userinfo = await client.get(
            "/oauth/userinfo", headers={"Authorization": f"Bearer {access}"}
        )
        assert userinfo.status_code == 401
        assert_oauth_error(
            await refresh_with(client, partner, first.json()["refresh_token"]), "invalid_grant"
        )

    async def test_concurrent_exchanges_of_one_code(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Two exchanges of one code at the same time: one gets tokens, the other is
        invalid_grant, and the winner's tokens are ended as for any replay."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        answers = await asyncio.gather(
            exchange(client, partner, code, verifier), exchange(client, partner, code, verifier)
        )
        assert sorted(a.status_code for a in answers) == [200, 400]
        won = next(a for a in answers if a.status_code == 200).json()
        assert_oauth_error(next(a for a in answers if a.status_code == 400), "invalid_grant")
        assert await introspect(client, partner, won["access_token"]) == {"active": False}
        assert await introspect(client, partner, won["refresh_token"]) == {"active": False}

    async def test_an_account_locked_during_an_exchange_keeps_no_session(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """An administrator's lock that arrives while a code is being exchanged leaves the
        account without a live session or a working refresh token, whichever commits first.
        The exchange is held just before it writes its session (a share lock on
        user_sessions) until the lock has either committed or come to wait on the exchange."""
        owner = await administrator(client, deps, clock)
        partner = await register(client, owner)
        code, verifier = await code_for(client, owner, partner)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, owner.email)
            assert user is not None
            # Signed out everywhere first, so the lock has no session of its own to end.
            await end_other_sessions(
                conn, deps, user_id=user.id, keep_session=None, reason=RevokeReason.LOGOUT
            )

        async def lock() -> None:
            async with deps.db.transaction() as conn:
                await admin_service.lock_account(conn, deps, user_id=user.id, admin_id=uuid4())

        async with deps.db.transaction() as holder:
            await holder.execute("LOCK TABLE user_sessions IN SHARE MODE")
            holder_pid = holder.get_server_pid()
            exchanging = asyncio.create_task(exchange(client, partner, code, verifier))
            assert await until_waiting(deps, lambda blockers: holder_pid in blockers)
            locking = asyncio.create_task(lock())
            assert await until_waiting(
                deps, lambda blockers: holder_pid not in blockers, done=locking
            )
        exchanged, _ = await asyncio.gather(exchanging, locking)
        assert await deps.sessions.list_for(user.id) == []
        if exchanged.status_code == 200:
            refreshed = await refresh_with(client, partner, exchanged.json()["refresh_token"])
            assert_oauth_error(refreshed, "invalid_grant")

    async def test_replay_after_expiry_still_revokes(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A code replayed after its lifetime is still recognised as a replay."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        first = await exchange(client, partner, code, verifier)
        assert first.status_code == 200, first.text
        clock.advance(AUTHORIZATION_CODE_TTL_S + 1)
        assert_oauth_error(await exchange(client, partner, code, verifier), "invalid_grant")
        assert_oauth_error(
            await refresh_with(client, partner, first.json()["refresh_token"]), "invalid_grant"
        )

    async def test_code_expires_after_its_lifetime(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A code is good for its lifetime and refused from its last second on."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        clock.advance(AUTHORIZATION_CODE_TTL_S)
        assert_oauth_error(await exchange(client, partner, code, verifier), "invalid_grant")
        fresh, fresh_verifier = await code_for(client, admin, partner)
        clock.advance(AUTHORIZATION_CODE_TTL_S - 1)
        assert (await exchange(client, partner, fresh, fresh_verifier)).status_code == 200

    async def test_code_of_another_client_is_invalid_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A code (with its verifier) presented by another, authenticated client is refused,
        and the client it was issued to can still redeem it."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        thief = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        assert_oauth_error(await exchange(client, thief, code, verifier), "invalid_grant")
        assert (await exchange(client, partner, code, verifier)).status_code == 200

    @pytest.mark.parametrize("redirect_uri", [None, OTHER_REDIRECT, REDIRECT + "/"])
    async def test_redirect_uri_must_be_the_authorized_one(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        redirect_uri: str | None,
    ) -> None:
        """The exchange names the redirect URI of the authorization request: omitted, another
        registered one or a variant of it is invalid_grant."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            **partner.post,
        }
        if redirect_uri is not None:
            data["redirect_uri"] = redirect_uri
        assert_oauth_error(await client.post("/oauth/token", data=data), "invalid_grant")

    async def test_verifier_must_match(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Without a verifier, or with another one, the code is refused (RFC 7636 4.6)."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        missing = await client.post("/oauth/token", data={**data, **partner.post})
        assert_oauth_error(missing, "invalid_grant")
        other, _ = pkce()
        assert_oauth_error(await exchange(client, partner, code, other), "invalid_grant")
        assert_oauth_error(await exchange(client, partner, code, verifier[:-1]), "invalid_grant")

    async def test_verifier_shorter_than_43_is_refused_even_when_it_hashes_right(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A 42-character verifier is not a PKCE verifier (RFC 7636 4.1), whatever its hash."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        verifier, challenge = pkce(42)
        response = await authorize(client, admin, partner, code_challenge=challenge)
        code = query_of(response)["code"][0]
        assert_oauth_error(await exchange(client, partner, code, verifier), "invalid_grant")

    async def test_unknown_or_missing_code_is_invalid_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A code nobody issued, or none at all, is invalid_grant."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        verifier, _ = pkce()
        assert_oauth_error(
            await exchange(client, partner, secrets.token_urlsafe(32), verifier), "invalid_grant"
        )
        data = {"grant_type": "authorization_code", "redirect_uri": REDIRECT, **partner.post}
        assert_oauth_error(await client.post("/oauth/token", data=data), "invalid_grant")

    async def test_code_of_a_deactivated_user_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A user deactivated between authorization and exchange gets no tokens."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        async with deps.db.transaction() as conn:
            user = await users.find_by_email(conn, admin.email)
            assert user is not None
            await users.lock(conn, user.id, at=deps.clock.now())
        assert_oauth_error(await exchange(client, partner, code, verifier), "invalid_grant")

    async def test_public_client_redeems_with_pkce_alone(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A public client sends its id and the verifier, no secret."""
        admin = await administrator(client, deps, clock)
        app = await register(client, admin, is_confidential=False)
        assert app.client_secret is None
        tokens = await issued(client, admin, app)
        assert deps.verifier.verify(tokens.access_token).client_id == app.client_id

    async def test_id_token_only_with_openid_and_carries_the_nonce(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """`openid` brings an ID token for this client with the request's nonce; without it
        there is none."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        with_openid = await issued(client, admin, partner, nonce="n-0S6_WzA2Mj")
        id_token = jwt.decode(
            with_openid.body["id_token"],
            options={"verify_signature": False},
            audience=partner.client_id,
        )
        assert id_token["nonce"] == "n-0S6_WzA2Mj"
        assert id_token["iss"] == ISSUER
        without = await issued(client, admin, partner, scope="wallet")
        assert "id_token" not in without.body
        assert without.body["scope"] == "wallet"

    @pytest.mark.parametrize(
        "grant_type", ["client_credentials", "password", "implicit", "urn:x:unknown"]
    )
    async def test_unsupported_grant_type(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        clock: FrozenClock,
        grant_type: str,
    ) -> None:
        """A grant we do not offer is unsupported_grant_type, even for a valid client."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        response = await client.post(
            "/oauth/token",
            data={"grant_type": grant_type, "username": admin.email, "password": "x"},
            auth=partner.basic,
        )
        assert_oauth_error(response, "unsupported_grant_type")


class TestClientAuthentication:
    """`client_secret_basic`, `client_secret_post`, `none`: one method per request."""

    async def test_basic_and_post_both_work(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The same client authenticates with HTTP Basic or with the form."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        basic = await client.post("/oauth/token", data=form, auth=partner.basic)
        assert basic.status_code == 200, basic.text
        posted = await refresh_with(client, partner, basic.json()["refresh_token"])
        assert posted.status_code == 200, posted.text

    async def test_basic_with_the_same_client_id_in_the_form_works(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Libraries that repeat `client_id` in the body beside Basic are accepted."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        response = await client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh_token,
                "client_id": partner.client_id,
            },
            auth=partner.basic,
        )
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
    async def test_two_methods_at_once_are_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock, path: str
    ) -> None:
        """Basic and a form secret together, or Basic for one client and the form naming
        another, is invalid_request (RFC 6749 section 2.3): nothing is granted or revoked."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        other = await register(client, admin)
        tokens = await issued(client, admin, partner)
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        if path != "/oauth/token":
            form = {"token": tokens.refresh_token}
        both = await client.post(path, data={**form, **partner.post}, auth=partner.basic)
        assert_oauth_error(both, "invalid_request")
        crossed = await client.post(
            path, data={**form, "client_id": other.client_id}, auth=partner.basic
        )
        assert_oauth_error(crossed, "invalid_request")
        assert (await introspect(client, partner, tokens.refresh_token))["active"] is True

    @pytest.mark.parametrize(
        "authorization",
        ["Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"\xff\xfe:x").decode()],
    )
    async def test_malformed_basic_is_invalid_client(
        self, client: httpx.AsyncClient, authorization: str
    ) -> None:
        """Basic credentials that do not decode fail client authentication: 401 with a Basic
        challenge."""
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            headers={"Authorization": authorization},
        )
        assert_oauth_error(response, "invalid_client", status=401)
        assert response.headers["www-authenticate"] == 'Basic realm="oauth"'

    async def test_confidential_client_without_its_secret_is_invalid_client(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A confidential client cannot pass as public by leaving its secret out."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        code, verifier = await code_for(client, admin, partner)
        response = await exchange(client, Client(partner.client_id, None), code, verifier)
        assert_oauth_error(response, "invalid_client", status=401)
        assert (await exchange(client, partner, code, verifier)).status_code == 200

    @pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
    async def test_no_client_at_all_is_invalid_client(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        """A request without any client authentication is 401 invalid_client."""
        response = await client.post(
            path, data={"grant_type": "refresh_token", "refresh_token": "x", "token": "x"}
        )
        assert_oauth_error(response, "invalid_client", status=401)

    async def test_unknown_or_disabled_client_is_invalid_client(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A client id nobody registered fails authentication, and so does a client an
        operator disabled (`disabled_at`), even with its right secret: it refreshes no more."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        unknown = await refresh_with(client, Client("cl_unknown", "secret"), tokens.refresh_token)
        assert_oauth_error(unknown, "invalid_client", status=401)
        async with deps.db.transaction() as conn:
            await conn.execute(
                "UPDATE oauth_clients SET disabled_at = now() WHERE client_id = $1",
                partner.client_id,
            )
        disabled = await refresh_with(client, partner, tokens.refresh_token)
        assert_oauth_error(disabled, "invalid_client", status=401)


class TestRefreshGrant:
    """`grant_type=refresh_token` for OAuth clients."""

    async def test_token_revoked_through_revoke_is_invalid_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A refresh token revoked by its client (RFC 7009) cannot be used afterwards."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        await revoke(client, partner, tokens.refresh_token, "refresh_token")
        assert_oauth_error(
            await refresh_with(client, partner, tokens.refresh_token), "invalid_grant"
        )

    async def test_token_of_another_client_is_invalid_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A refresh token works only for its own client, which can still use it after
        another client tried."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        thief = await register(client, admin)
        tokens = await issued(client, admin, partner)
        assert_oauth_error(await refresh_with(client, thief, tokens.refresh_token), "invalid_grant")
        assert (await refresh_with(client, partner, tokens.refresh_token)).status_code == 200

    async def test_first_party_and_oauth_refresh_tokens_do_not_cross(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The app's own refresh token is refused at /oauth/token, and a client's refresh
        token is refused at the app's /api/v1/auth/refresh."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        assert_oauth_error(
            await refresh_with(client, partner, admin.refresh_token), "invalid_grant"
        )
        tokens = await issued(client, admin, partner)
        first_party = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens.refresh_token}
        )
        assert first_party.status_code == 401
        assert (await refresh_with(client, partner, tokens.refresh_token)).status_code == 200

    async def test_narrower_scope_at_refresh_is_honoured(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A subset of the granted scope at refresh (RFC 6749 section 6) yields an access token
        with only that subset, as introspection says too; the new refresh token keeps the
        original grant, so a later refresh without `scope` gets all of it back."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner, scope="openid wallet")
        response = await refresh_with(client, partner, tokens.refresh_token, scope="wallet")
        assert response.status_code == 200, response.text
        narrowed = response.json()
        assert narrowed["scope"] == "wallet"
        assert deps.verifier.verify(narrowed["access_token"]).scope == ("wallet",)
        answer = await introspect(client, partner, narrowed["access_token"])
        assert answer["active"] is True
        assert answer["scope"] == "wallet"
        kept = await introspect(client, partner, narrowed["refresh_token"])
        assert kept["scope"] == "openid wallet"
        again = await refresh_with(client, partner, narrowed["refresh_token"])
        assert again.status_code == 200, again.text
        assert again.json()["scope"] == "openid wallet"
        assert deps.verifier.verify(again.json()["access_token"]).scope == ("openid", "wallet")

    async def test_the_whole_grant_at_refresh_is_the_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Asking at refresh for exactly what was granted, in another order and with a
        repeat, is the same as omitting `scope`."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner, scope="openid wallet")
        response = await refresh_with(
            client, partner, tokens.refresh_token, scope="wallet openid wallet"
        )
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "openid wallet"
        assert deps.verifier.verify(response.json()["access_token"]).scope == ("openid", "wallet")

    @pytest.mark.parametrize(
        "scope",
        [
            "wallet openid profile",  # more than granted, though the client is registered for it
            "profile",  # registered for the client, never granted
            "wallet payments",  # not even registered for the client
            "wallet admin",  # no such scope
            " ",  # no scope at all
        ],
    )
    async def test_scope_beyond_the_grant_is_invalid_scope_and_consumes_nothing(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock, scope: str
    ) -> None:
        """A scope the user did not grant is 400 invalid_scope (RFC 6749 sections 5.2, 6), and
        the refused request rotates nothing: the presented token is still live and refreshes
        afterwards with the original grant."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner, scope="wallet")
        refused = await refresh_with(client, partner, tokens.refresh_token, scope=scope)
        assert_oauth_error(refused, "invalid_scope")
        async with deps.db.connection() as conn:
            minted = await conn.fetchval(
                "SELECT count(*) FROM auth_refresh_tokens t"
                " JOIN auth_refresh_families f ON f.id = t.family_id WHERE f.client_id = $1",
                partner.client_id,
            )
        assert minted == 1
        assert (await introspect(client, partner, tokens.refresh_token))["active"] is True
        assert (await introspect(client, partner, tokens.access_token))["active"] is True
        response = await refresh_with(client, partner, tokens.refresh_token)
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "wallet"

    async def test_retry_within_the_grace_is_judged_on_scope_too(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A retry of a just-rotated token (which receives the same child) is held to the
        grant as well: beyond it is invalid_scope, a subset narrows the access token, and
        the child it hands back is still unused."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner, scope="openid wallet")
        child = await refresh_with(client, partner, tokens.refresh_token)
        assert child.status_code == 200, child.text
        assert_oauth_error(
            await refresh_with(client, partner, tokens.refresh_token, scope="profile"),
            "invalid_scope",
        )
        retry = await refresh_with(client, partner, tokens.refresh_token, scope="wallet")
        assert retry.status_code == 200, retry.text
        assert retry.json()["refresh_token"] == child.json()["refresh_token"]
        assert retry.json()["scope"] == "wallet"
        assert deps.verifier.verify(retry.json()["access_token"]).scope == ("wallet",)
        assert (await introspect(client, partner, child.json()["refresh_token"]))["active"]

    async def test_scope_check_comes_after_the_token_check(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Another client's token with a foreign scope is invalid_grant, not invalid_scope
        (nothing is told about a grant that is not the caller's), and a used token presented
        again with a foreign scope is still a replay that ends its family."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        thief = await register(client, admin)
        tokens = await issued(client, admin, partner, scope="wallet")
        assert_oauth_error(
            await refresh_with(client, thief, tokens.refresh_token, scope="profile"),
            "invalid_grant",
        )
        child = await refresh_with(client, partner, tokens.refresh_token)
        assert child.status_code == 200, child.text
        clock.advance(REFRESH_GRACE_S + 1)  # past the grace for a retry of the parent
        assert_oauth_error(
            await refresh_with(client, partner, tokens.refresh_token, scope="profile"),
            "invalid_grant",
        )
        replayed_family = await introspect(client, partner, child.json()["refresh_token"])
        assert replayed_family == {"active": False}

    async def test_missing_refresh_token_is_invalid_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The refresh grant without a token is invalid_grant."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        response = await client.post(
            "/oauth/token", data={"grant_type": "refresh_token"}, auth=partner.basic
        )
        assert_oauth_error(response, "invalid_grant")


class TestRevocation:
    """RFC 7009: a client ends its own grants, and only its own."""

    async def test_revoking_the_access_token_ends_the_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Revoking an access token ends its session: the refresh token dies with it."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        await revoke(client, partner, tokens.access_token, "access_token")
        assert await introspect(client, partner, tokens.access_token) == {"active": False}
        assert await introspect(client, partner, tokens.refresh_token) == {"active": False}
        assert_oauth_error(
            await refresh_with(client, partner, tokens.refresh_token), "invalid_grant"
        )

    async def test_another_clients_tokens_are_not_revoked(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A client revoking tokens it was not issued answers 200 and changes nothing, as does
        a client revoking the user's own first-party tokens."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        other = await register(client, admin)
        tokens = await issued(client, admin, partner)
        for token in (tokens.refresh_token, tokens.access_token, admin.access_token):
            await revoke(client, other, token)
        assert (await introspect(client, partner, tokens.access_token))["active"] is True
        assert (await introspect(client, partner, tokens.refresh_token))["active"] is True
        assert (await client.get("/oauth/userinfo", headers=admin.bearer)).status_code == 200

    async def test_public_client_revokes_its_own_token(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A public client identifies itself with client_id alone to revoke."""
        admin = await administrator(client, deps, clock)
        resource_server = await register(client, admin, scopes=["openid", INTROSPECT])
        app = await register(client, admin, is_confidential=False)
        tokens = await issued(client, admin, app)
        assert (await introspect(client, resource_server, tokens.access_token))["active"] is True
        response = await client.post(
            "/oauth/revoke", data={"token": tokens.refresh_token, **app.post}
        )
        assert response.status_code == 200
        assert await introspect(client, resource_server, tokens.access_token) == {"active": False}

    async def test_wrong_secret_cannot_revoke(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Revocation authenticates the client first: a wrong secret is 401 and the token
        lives on."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        response = await client.post(
            "/oauth/revoke",
            data={"token": tokens.refresh_token},
            auth=(partner.client_id, "wrong"),
        )
        assert_oauth_error(response, "invalid_client", status=401)
        assert (await introspect(client, partner, tokens.refresh_token))["active"] is True


class TestIntrospection:
    """RFC 7662: `active: false` and nothing else for any token that grants nothing."""

    async def test_expired_tokens_are_inactive(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """From its `exp` on an access token is inactive (the skew the verifier tolerates
        between replicas does not stretch it here); so is an idle refresh token."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        answer = await introspect(client, partner, tokens.access_token)
        assert answer["active"] is True
        assert answer["exp"] == answer["iat"] + tokens.body["expires_in"]
        clock.advance(tokens.body["expires_in"] - 1)
        assert (await introspect(client, partner, tokens.access_token))["active"] is True
        clock.advance(1)
        assert await introspect(client, partner, tokens.access_token) == {"active": False}
        clock.advance(deps.settings.auth_session_idle_s)
        assert await introspect(client, partner, tokens.refresh_token) == {"active": False}

    async def test_rotated_refresh_token_is_inactive(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """After a refresh, the used token is inactive and its child is active."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        child = (await refresh_with(client, partner, tokens.refresh_token)).json()
        assert await introspect(client, partner, tokens.refresh_token) == {"active": False}
        answer = await introspect(client, partner, child["refresh_token"])
        assert answer["active"] is True
        assert answer["client_id"] == partner.client_id
        assert answer["scope"] == "openid wallet"

    async def test_garbage_is_inactive(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A token we never issued, or a forged JWT, is simply inactive."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        header, payload, _ = tokens.access_token.split(".")
        forged = f"{header}.{payload}.{base64.urlsafe_b64encode(b'x' * 256).decode().rstrip('=')}"
        for token in ("nothing-we-issued", forged):
            assert await introspect(client, partner, token) == {"active": False}

    async def test_another_clients_tokens_are_inactive(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A client introspecting tokens issued to another client, or the user's first-party
        tokens, hears `{"active": false}` and nothing more (RFC 7662 section 4), while the
        client they were issued to sees them active."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        other = await register(client, admin)
        tokens = await issued(client, admin, partner)
        for token in (tokens.access_token, tokens.refresh_token):
            assert await introspect(client, other, token) == {"active": False}
            assert (await introspect(client, partner, token))["active"] is True
        for token in (admin.access_token, admin.refresh_token):
            assert await introspect(client, other, token) == {"active": False}

    async def test_introspect_permission_sees_every_clients_tokens(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A client registered with the `introspect` scope (a resource server) introspects
        tokens issued to any client, and the user's first-party tokens."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        resource_server = await register(client, admin, scopes=["openid", INTROSPECT])
        tokens = await issued(client, admin, partner)
        answer = await introspect(client, resource_server, tokens.access_token)
        assert answer["active"] is True
        assert answer["client_id"] == partner.client_id
        assert answer["scope"] == "openid wallet"
        refresh = await introspect(client, resource_server, tokens.refresh_token)
        assert refresh["active"] is True
        assert refresh["client_id"] == partner.client_id
        first_party = await introspect(client, resource_server, admin.access_token)
        assert first_party["active"] is True
        assert first_party["client_id"] is None

    async def test_introspect_permission_is_not_a_user_grant(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """`introspect` is the client's own permission: a user cannot grant it through
        authorization (invalid_scope, no code), so no access token ever carries it."""
        admin = await administrator(client, deps, clock)
        resource_server = await register(client, admin, scopes=["openid", INTROSPECT])
        _, challenge = pkce()
        query = query_of(
            await authorize(
                client,
                admin,
                resource_server,
                scope=f"openid {INTROSPECT}",
                code_challenge=challenge,
            )
        )
        assert query["error"] == ["invalid_scope"]
        assert "code" not in query

    async def test_public_client_may_not_introspect(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Introspection needs a confidential client: a public one is invalid_client."""
        admin = await administrator(client, deps, clock)
        app = await register(client, admin, is_confidential=False)
        tokens = await issued(client, admin, app)
        response = await client.post(
            "/oauth/introspect", data={"token": tokens.access_token, **app.post}
        )
        assert_oauth_error(response, "invalid_client", status=401)


class TestUserinfo:
    async def test_userinfo_answers_for_a_client_token(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """UserInfo names the subject of the ID token, with the verified email."""
        admin = await administrator(client, deps, clock)
        partner = await register(client, admin)
        tokens = await issued(client, admin, partner)
        response = await client.get(
            "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens.access_token}"}
        )
        assert response.status_code == 200, response.text
        id_token = jwt.decode(
            tokens.body["id_token"],
            options={"verify_signature": False},
            audience=partner.client_id,
        )
        assert response.json() == {
            "sub": id_token["sub"],
            "email": admin.email,
            "email_verified": True,
        }


class TestTokenEndpointRateLimit:
    async def test_the_limited_token_endpoint_documents_its_429(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Past the refresh policy's requests from one address `/oauth/token` answers 429
        problem+json with `Retry-After`, and its OpenAPI operation lists that 429 (it listed
        only 200, 400, 401 and the edge's answers, so a generated client misread it)."""
        form = {"grant_type": "refresh_token", "refresh_token": "r", "client_id": "unknown"}
        limit = deps.limits.refresh.windows[0].limit
        answers = [await client.post("/oauth/token", data=form) for _ in range(limit + 1)]
        assert {a.status_code for a in answers[:limit]} == {401}
        refused = answers[limit]
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "AUTH_RATE_LIMITED"
        assert int(refused.headers["retry-after"]) >= 1
        schema = (await client.get("/openapi.json")).json()
        responses = schema["paths"]["/oauth/token"]["post"]["responses"]
        assert "429" in responses
        assert "application/problem+json" in responses["429"]["content"]
