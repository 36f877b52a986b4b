"""Access tokens: a standard client verifies them from the JWKS alone; forgeries are refused.

Method: real RSA keys created in PostgreSQL by the same code the replicas run. PyJWT's
`PyJWKClient` fetches our JWKS from a real local HTTP server (a thread serving exactly what
`GET /.well-known/jwks.json` answered) and verifies a token issued by `POST /login`. Forged and
stale tokens are built with PyJWT by hand and must be refused by `TokenVerifier.verify`.
Rotation is driven with the frozen clock through a token's whole life.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata  # type: ignore[import-untyped]  # authlib ships no type information
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter
from jwt.utils import base64url_encode

from auth.assembly import key_timings, refresh_keys
from auth.constants import TOKEN_LEEWAY_S
from auth.dependencies import AuthDependencies
from auth.keys import KeyRotationTooSoonError, rotate_keys
from auth.tokens import AccessClaims, InvalidTokenError, TokenSubject
from gateway.app import create_app
from gateway.principal import CurrentPrincipal
from kit.clock import FrozenClock
from tests.auth.conftest import registered

pytestmark = pytest.mark.db


@pytest.fixture
def jwks_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """A local HTTP server answering one JWKS document; (its URL, the document holder)."""
    document: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            del args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", document
    finally:
        server.shutdown()
        server.server_close()


def _forge(deps: AuthDependencies, claims: dict[str, Any], **header: Any) -> str:
    key = deps.signer._key
    assert key is not None
    return jwt.encode(
        claims,
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "at+jwt", **header},
    )


def _claims(deps: AuthDependencies, **overrides: Any) -> dict[str, Any]:
    now = int(deps.clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": deps.settings.auth_issuer,
        "aud": deps.settings.auth_audience,
        "sub": str(uuid.uuid4()),
        "sid": "ses_x",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "j",
        "auth_time": now,
        "scope": "openid",
        "amr": ["pwd"],
        "acr": "aal1",
        "role": "user",
        "tier": "basic",
        "kyc_status": "pending",
    }
    claims.update(overrides)
    return claims


class TestStandardClient:
    async def test_pyjwkclient_verifies_a_login_token(
        self,
        client: httpx.AsyncClient,
        deps: AuthDependencies,
        jwks_server: tuple[str, dict[str, Any]],
    ) -> None:
        """PyJWT's PyJWKClient, given only our JWKS URL, verifies a token from /login."""
        url, document = jwks_server
        document.update((await client.get("/.well-known/jwks.json")).json())
        account = await registered(client)
        signing_key = jwt.PyJWKClient(url).get_signing_key_from_jwt(account.access_token)
        claims = jwt.decode(
            account.access_token,
            signing_key.key,
            algorithms=["RS256"],
            audience=deps.settings.auth_audience,
            issuer=deps.settings.auth_issuer,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["amr"] == ["pwd"]
        assert {
            "sub",
            "sid",
            "iat",
            "exp",
            "nbf",
            "iss",
            "aud",
            "scope",
            "amr",
            "acr",
            "auth_time",
        } <= set(claims)
        assert claims["exp"] - claims["iat"] == 900
        assert (claims["role"], claims["tier"], claims["kyc_status"]) == (
            "user",
            "basic",
            "pending",
        )
        assert jwt.get_unverified_header(account.access_token)["kid"] == signing_key.key_id

    async def test_jwks_publishes_no_private_member(self, client: httpx.AsyncClient) -> None:
        """Every published key is a public RSA signing key with a kid."""
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert len(keys) >= 2  # the active key and the next one
        for key in keys:
            assert key["kty"] == "RSA"
            assert key["use"] == "sig"
            assert key["alg"] == "RS256"
            assert key["kid"]
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)

    async def test_discovery_passes_authlib(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """authlib's OpenIDProviderMetadata validator accepts the discovery document."""
        document = (await client.get("/.well-known/openid-configuration")).json()
        OpenIDProviderMetadata(document).validate()
        assert document["issuer"] == deps.settings.auth_issuer
        assert document["jwks_uri"] == f"{deps.settings.auth_issuer}/.well-known/jwks.json"


class TestRefusals:
    def test_a_well_formed_token_verifies(self, deps: AuthDependencies) -> None:
        """The baseline: our own claims, our key, our header."""
        claims = deps.verifier.verify(_forge(deps, _claims(deps)))
        assert isinstance(claims, AccessClaims)
        assert claims.scope == ("openid",)

    def test_alg_none_is_refused(self, deps: AuthDependencies) -> None:
        """An unsigned token is refused before any key is touched."""
        token = jwt.encode(_claims(deps), None, algorithm="none", headers={"typ": "at+jwt"})  # type: ignore[arg-type]  # an unsigned token is the attack under test
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(token)

    def test_hs256_with_the_public_key_is_refused(self, deps: AuthDependencies) -> None:
        """The classic confusion: HS256 keyed with our public key's PEM."""
        key = deps.signer._key
        assert key is not None
        pem = key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}
        signing_input = b".".join(
            base64url_encode(json.dumps(part).encode()) for part in (header, _claims(deps))
        )
        signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
        token = (signing_input + b"." + base64url_encode(signature)).decode()
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(token)

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"aud": "someone-else"}, id="wrong-audience"),
            pytest.param({"iss": "https://evil.example"}, id="wrong-issuer"),
            pytest.param({"exp": -120}, id="expired"),
            pytest.param({"nbf": 3600}, id="not-yet-valid"),
        ],
    )
    def test_claims_are_checked(self, deps: AuthDependencies, overrides: dict[str, Any]) -> None:
        """Wrong aud/iss, an expired exp and a future nbf are refused."""
        now = int(deps.clock.now().timestamp())
        values = {k: (now + v if k in {"exp", "nbf"} else v) for k, v in overrides.items()}
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(_forge(deps, _claims(deps, **values)))

    def test_unknown_kid_and_wrong_type_are_refused(self, deps: AuthDependencies) -> None:
        """A kid we never published, or an ID token's type, is refused."""
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(_forge(deps, _claims(deps), kid="not-ours"))
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(_forge(deps, _claims(deps), typ="JWT"))

    def test_missing_claims_are_refused(self, deps: AuthDependencies) -> None:
        """A token without sid (or any required claim) is refused."""
        claims = _claims(deps)
        del claims["sid"]
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(_forge(deps, claims))


class TestVerifiedTokenMemory:
    """A repeat of a verified token skips the RSA check but not the checks that can change."""

    def test_a_repeat_answers_the_same_claims(self, deps: AuthDependencies) -> None:
        token = _forge(deps, _claims(deps))
        first = deps.verifier.verify(token)
        assert deps.verifier.verify(token) is first  # remembered, not decoded again

    def test_a_remembered_token_still_expires(
        self, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        token = _forge(deps, _claims(deps))
        deps.verifier.verify(token)
        clock.advance(900 + TOKEN_LEEWAY_S)
        with pytest.raises(InvalidTokenError, match="expired"):
            deps.verifier.verify(token)

    def test_a_remembered_token_is_not_valid_before_nbf(self, deps: AuthDependencies) -> None:
        token = _forge(deps, _claims(deps))
        deps.verifier.verify(token)
        earlier = deps.clock.now() - timedelta(seconds=TOKEN_LEEWAY_S + 60)
        with pytest.raises(InvalidTokenError, match="not valid yet"):
            deps.verifier.verify(token, now=earlier)

    async def test_withdrawing_the_key_refuses_a_remembered_token(
        self, deps: AuthDependencies
    ) -> None:
        token = _forge(deps, _claims(deps))
        deps.verifier.verify(token)
        kept = [
            k for k in await deps.verifier._source.verification_keys() if k.kid != deps.signer.kid
        ]
        deps.verifier.install(kept)
        try:
            with pytest.raises(InvalidTokenError, match="unknown key"):
                deps.verifier.verify(token)
        finally:
            await refresh_keys(deps)

    def test_a_changed_signature_is_verified_afresh(self, deps: AuthDependencies) -> None:
        token = _forge(deps, _claims(deps))
        deps.verifier.verify(token)
        head, body, signature = token.split(".")
        tampered = f"{head}.{body}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
        with pytest.raises(InvalidTokenError, match="did not verify"):
            deps.verifier.verify(tampered)

    def test_memory_is_bounded(
        self, deps: AuthDependencies, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("auth.tokens.VERIFIED_TOKENS_MAX", 3)
        tokens = [_forge(deps, _claims(deps, jti=f"j{i}")) for i in range(5)]
        for token in tokens:
            deps.verifier.verify(token)
        assert len(deps.verifier._verified) == 3
        assert tokens[0] not in deps.verifier._verified  # the oldest went first
        assert tokens[4] in deps.verifier._verified


class TestEdgeWithRememberedTokens:
    """The edge keeps a verified token's principal per Authorization header, but every request
    still asks the verifier, so what can change (expiry, a withdrawn key) is never skipped."""

    @staticmethod
    def _app(deps: AuthDependencies, clock: FrozenClock) -> httpx.AsyncClient:
        router = APIRouter()

        @router.get("/api/v1/me")
        async def me(principal: CurrentPrincipal) -> dict[str, str]:
            return {"user_id": principal.user_text}

        app = create_app(
            title="edge",
            version="1",
            routers=[router],
            checks=list,
            verifier=deps.verifier,
            clock=clock,
        )
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://edge.test",
            headers={"User-Agent": "edge-test/1.0"},
        )

    async def test_repeats_answer_their_own_user_until_the_token_expires(
        self, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        first, second = (_claims(deps) for _ in range(2))
        tokens = [_forge(deps, claims) for claims in (first, second)]
        async with self._app(deps, clock) as client:
            for _ in range(3):
                for claims, token in zip((first, second), tokens, strict=True):
                    response = await client.get(
                        "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
                    )
                    assert response.status_code == 200
                    assert response.json() == {"user_id": claims["sub"]}
            clock.advance(900 + TOKEN_LEEWAY_S)
            response = await client.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"}
            )
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_a_withdrawn_key_refuses_a_token_the_edge_has_seen(
        self, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        header = {"Authorization": f"Bearer {_forge(deps, _claims(deps))}"}
        async with self._app(deps, clock) as client:
            assert (await client.get("/api/v1/me", headers=header)).status_code == 200
            kept = [
                k
                for k in await deps.verifier._source.verification_keys()
                if k.kid != deps.signer.kid
            ]
            deps.verifier.install(kept)
            try:
                response = await client.get("/api/v1/me", headers=header)
            finally:
                await refresh_keys(deps)
        assert response.status_code == 401


class TestRotation:
    async def test_retired_key_verifies_until_its_tokens_expire(
        self, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The next key is published before it signs; the old one stays until its tokens die."""
        subject = TokenSubject(
            user_id=uuid.uuid4(), role="user", tier="basic", kyc_status="pending"
        )
        old_kid = deps.signer.kid
        next_kid = {k["kid"] for k in deps.verifier.jwks()["keys"]} - {old_kid}
        token = deps.signer.sign_access(
            subject,
            session_id="ses_x",
            scope=("openid",),
            amr=("pwd",),
            acr="aal1",
            auth_time=clock.now(),
        )
        clock.advance(61)
        async with deps.db.transaction() as conn:
            result = await rotate_keys(
                conn,
                cipher=deps.cipher,
                now=clock.now(),
                timings=key_timings(deps.settings),
                is_forced=True,  # other tests' clocks may have published the next key "later"
            )
        await refresh_keys(deps)
        assert result.retired == old_kid
        assert result.activated in next_kid  # the key that signs now was published before
        assert deps.signer.kid == result.activated
        assert old_kid in deps.verifier.kids
        clock.advance(800)
        assert deps.verifier.verify(token).sub == subject.user_id  # still within its 15 minutes
        clock.advance(200)
        with pytest.raises(InvalidTokenError):
            deps.verifier.verify(token)  # expired; and the key is withdrawn soon after
        clock.advance(timedelta(minutes=2).total_seconds())
        await refresh_keys(deps)
        assert old_kid not in deps.verifier.kids

    async def test_rotation_waits_for_the_next_key_to_be_known(
        self, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """A rotation right after another is refused unless forced."""
        clock.advance(120)
        async with deps.db.transaction() as conn:
            await rotate_keys(
                conn,
                cipher=deps.cipher,
                now=clock.now(),
                timings=key_timings(deps.settings),
                is_forced=True,
            )
        with pytest.raises(KeyRotationTooSoonError):
            async with deps.db.transaction() as conn:
                await rotate_keys(
                    conn, cipher=deps.cipher, now=clock.now(), timings=key_timings(deps.settings)
                )
        async with deps.db.transaction() as conn:
            forced = await rotate_keys(
                conn,
                cipher=deps.cipher,
                now=clock.now(),
                timings=key_timings(deps.settings),
                is_forced=True,
            )
        assert forced.activated
        assert forced.retired
        await refresh_keys(deps)

    async def test_rotation_is_audited(self, deps: AuthDependencies, clock: FrozenClock) -> None:
        """Each rotation writes an auth.key_rotated row naming the keys, never key material."""
        clock.advance(120)
        async with deps.db.transaction() as conn:
            result = await rotate_keys(
                conn,
                cipher=deps.cipher,
                now=clock.now(),
                timings=key_timings(deps.settings),
                is_forced=True,
            )
            row = await conn.fetchrow(
                "SELECT new_values FROM audit_log WHERE table_name = 'auth_events'"
                " AND new_values->>'event' = 'auth.key_rotated' ORDER BY created_at DESC LIMIT 1"
            )
        await refresh_keys(deps)
        assert row is not None
        assert row["new_values"]["published_next"] == result.published_next
        assert "PRIVATE" not in str(row["new_values"])
