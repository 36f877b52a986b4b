"""The authentication slot over real HTTP, with real RS256 tokens and a PyJWT verifier.

Tokens are signed in the test with a key pair generated for the test run; forged ones use
another key, `alg: none`, HMAC keyed with the public key, a wrong audience, a past `exp` or a
future `nbf`. Each must be refused with 401 and a Bearer `invalid_token` challenge; step-up
routes additionally need a second factor within the configured window (RFC 9470).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from ipaddress import ip_network

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from gateway.policy import ClientAddressPolicy, GatewayPolicy

ME = "/api/v1/me"


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    # Loopback is trusted as the balancer so the admin tests can come from a private address.
    policy = GatewayPolicy(
        client_address=ClientAddressPolicy(trusted_proxies=(ip_network("127.0.0.1/32"),))
    )
    return serve(edge_app(policy=policy))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(signing_key: rsa.RSAPrivateKey, mint: Callable[..., str]) -> str:
    """The algorithm-confusion forgery: HMAC over a real payload, keyed with the public PEM."""
    payload_b64 = mint().split(".")[1]
    header_b64 = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header_b64}.{payload_b64}".encode()
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{_b64(signature)}"


class TestMissingToken:
    def test_protected_route_without_token_is_401(self, http: httpx.Client) -> None:
        """No token: 401 problem with a bare Bearer challenge (RFC 6750 §3.1: no error code)."""
        response = http.get(ME)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="dwaybank"'
        assert response.json()["code"] == "AUTH_TOKEN_MISSING"

    def test_other_scheme_counts_as_missing(self, http: httpx.Client) -> None:
        """A Basic header is not a bearer token."""
        response = http.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_TOKEN_MISSING"

    def test_public_route_needs_no_token(self, http: httpx.Client) -> None:
        """Routes listed as public in the policy answer without a token."""
        assert http.get("/health/live").status_code == 200
        assert http.post("/api/v1/auth/login").status_code == 200

    def test_unknown_path_is_404_not_401(self, http: httpx.Client) -> None:
        """A path no route serves is not authenticated: the router's 404 answers."""
        response = http.get("/api/v1/nothing-here")
        assert response.status_code == 404


class TestInvalidTokens:
    @pytest.mark.parametrize(
        "case",
        ["garbage", "wrong_key", "none_alg", "expired", "not_yet_valid", "wrong_audience", "hs256"],
    )
    def test_refused_with_invalid_token_challenge(
        self,
        http: httpx.Client,
        mint: Callable[..., str],
        signing_key: rsa.RSAPrivateKey,
        case: str,
    ) -> None:
        """Every forged, expired or misdirected token is 401 with error="invalid_token"."""
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a forger's
        tokens: dict[str, Callable[[], str]] = {
            "garbage": lambda: "abc.def.ghi",
            "wrong_key": lambda: mint(key=other_key),
            "none_alg": lambda: mint(alg="none"),
            "expired": lambda: mint(expires_in_s=-120),
            "not_yet_valid": lambda: mint(not_before_in_s=600),
            "wrong_audience": lambda: mint(audience="another-api"),
            "hs256": lambda: _hs256_with_public_key(signing_key, mint),
        }
        response = http.get(ME, headers=_bearer(tokens[case]()))
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="dwaybank", error="invalid_token"')
        assert 'error_description="' in challenge
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "AUTH_INVALID_TOKEN"

    def test_two_authorization_headers_are_refused(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """Two Authorization headers are ambiguous: invalid_token."""
        token = mint()
        response = http.get(
            ME, headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
        )
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    def test_unknown_tier_is_refused(self, http: httpx.Client, mint: Callable[..., str]) -> None:
        """A verified token with a tier we do not know is not trusted."""
        response = http.get(ME, headers=_bearer(mint(tier="platinum")))
        assert response.status_code == 401
        assert response.json()["code"] == "AUTH_INVALID_TOKEN"


class TestPrincipal:
    def test_handler_reads_the_typed_context(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """The user id, role, tier and KYC status reach the handler through CurrentPrincipal."""
        user_id = uuid.uuid4()
        response = http.get(ME, headers=_bearer(mint(user_id=user_id, tier="premium")))
        assert response.status_code == 200
        assert response.json() == {
            "user_id": str(user_id),
            "role": "user",
            "tier": "premium",
            "kyc_status": "approved",
        }

    def test_admin_route_needs_the_admin_role(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """From an allowed address, a user token is 403 and an admin token with a second factor
        passes."""
        private = {"X-Forwarded-For": "10.0.0.8"}
        user = http.get("/api/v1/admin/users", headers={**private, **_bearer(mint())})
        admin_token = mint(role="admin", amr=("pwd", "mfa"))
        admin = http.get("/api/v1/admin/users", headers={**private, **_bearer(admin_token)})
        assert user.status_code == 403
        assert user.json()["code"] == "AUTH_ADMIN_REQUIRED"
        assert admin.status_code == 200

    def test_admin_route_needs_a_second_factor(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """An admin token from a password-only sign-in is asked to step up (RFC 9470, no
        max_age: any sign-in with a second factor will do, however long ago)."""
        private = {"X-Forwarded-For": "10.0.0.8"}
        token = mint(role="admin", amr=("pwd",))
        response = http.get("/api/v1/admin/users", headers={**private, **_bearer(token)})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer realm="dwaybank", error="insufficient_user_authentication", '
            'error_description="The admin surface needs a sign-in with a second factor.", '
            'acr_values="mfa"'
        )
        assert response.json()["code"] == "AUTH_STEP_UP_REQUIRED"
        old_factor = mint(role="admin", amr=("pwd", "mfa"), auth_age_s=86_400)
        assert http.get(
            "/api/v1/admin/users", headers={**private, **_bearer(old_factor)}
        ).is_success


class TestStepUp:
    def test_password_only_token_is_asked_to_step_up(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """A transfer with a password-only token is 401 with the RFC 9470 challenge."""
        response = http.post("/api/v1/transfers", headers=_bearer(mint(amr=("pwd",))))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer realm="dwaybank", error="insufficient_user_authentication", '
            'error_description="This route needs a recent multi-factor authentication.", '
            'acr_values="mfa", max_age=300'
        )
        body = response.json()
        assert body["code"] == "AUTH_STEP_UP_REQUIRED"
        assert body["details"] == {"max_age_s": 300}

    def test_stale_second_factor_is_asked_to_step_up(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """An MFA older than max_age (300 s) no longer counts."""
        token = mint(amr=("pwd", "mfa", "otp"), auth_age_s=301)
        response = http.post("/api/v1/transfers", headers=_bearer(token))
        assert response.status_code == 401
        assert "insufficient_user_authentication" in response.headers["www-authenticate"]

    def test_recent_second_factor_passes(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """A token with a fresh MFA reaches the transfer handler."""
        token = mint(amr=("pwd", "mfa", "otp"), auth_age_s=30)
        assert http.post("/api/v1/transfers", headers=_bearer(token)).status_code == 200

    def test_route_marked_sensitive_steps_up(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """A route marked `x-step-up` needs MFA although no configured path names it."""
        refused = http.post("/api/v1/cards/freeze", headers=_bearer(mint()))
        allowed = http.post("/api/v1/cards/freeze", headers=_bearer(mint(amr=("pwd", "mfa"))))
        assert refused.status_code == 401
        assert allowed.status_code == 200

    def test_other_routes_do_not_step_up(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """Reading one's own profile needs a token, not a second factor."""
        assert http.get(ME, headers=_bearer(mint())).status_code == 200
