"""WebAuthn ("biometric") with a software authenticator: registration and a login's second step.

Method: a P-256 key pair plays the platform authenticator. It answers the options our API
returns exactly as a browser and authenticator would (clientDataJSON with the challenge and
origin, authenticator data with the RP id hash, user-present and user-verified flags and a
signature counter, a `none` attestation, an ES256 assertion signature), and the `webauthn`
package on the server verifies it. Nothing on the server side is faked.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from auth.dependencies import AuthDependencies
from tests.auth.conftest import Account, registered

pytestmark = pytest.mark.db

FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40


class SoftAuthenticator:
    """A platform authenticator in software (ES256, counter kept)."""

    def __init__(self, rp_id: str, origin: str) -> None:
        self.rp_id, self.origin = rp_id, origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(32)
        self.counter = 0

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin}).encode()

    def _auth_data(self, flags: int, extra: bytes = b"") -> bytes:
        self.counter += 1
        rp_hash = hashlib.sha256(self.rp_id.encode()).digest()
        return rp_hash + bytes([flags]) + struct.pack(">I", self.counter) + extra

    def register(self, options: dict[str, Any]) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = (
            bytes(16) + struct.pack(">H", len(self.credential_id)) + self.credential_id + cose
        )
        auth_data = self._auth_data(FLAG_UP | FLAG_UV | FLAG_AT, attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(
                    self._client_data("webauthn.create", options["challenge"])
                ),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["internal"],
            },
        }

    def assertion(
        self, options: dict[str, Any], *, flags: int = FLAG_UP | FLAG_UV
    ) -> dict[str, Any]:
        client_data = self._client_data("webauthn.get", options["challenge"])
        auth_data = self._auth_data(flags)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": bytes_to_base64url(self.credential_id),
            "rawId": bytes_to_base64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
            },
        }


async def _enrol(
    client: httpx.AsyncClient, deps: AuthDependencies
) -> tuple[Account, SoftAuthenticator]:
    account = await registered(client)
    authenticator = SoftAuthenticator(
        deps.settings.auth_webauthn_rp_id, deps.settings.auth_webauthn_origins
    )
    options = (
        await client.post("/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer)
    ).json()
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    response = await client.post(
        "/api/v1/auth/mfa/webauthn/register/verify",
        json={"credential": authenticator.register(options), "name": "Test phone"},
        headers=account.bearer,
    )
    assert response.status_code == 200, response.text
    account.access_token = response.json()["access_token"]
    return account, authenticator


async def _challenge(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": "Correct-Horse-Battery-9"}
    )
    assert response.json()["details"]["methods"] == ["biometric"]
    return str(response.json()["details"]["mfa_token"])


class TestWebAuthn:
    async def test_register_then_sign_in_with_a_passkey(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A registered platform credential finishes a login; the session's amr says so."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        options = (
            await client.post(
                "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": token}
            )
        ).json()
        assert [c["id"] for c in options["allowCredentials"]] == [
            bytes_to_base64url(authenticator.credential_id)
        ]
        response = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/verify",
            json={"mfa_token": token, "credential": authenticator.assertion(options)},
        )
        assert response.status_code == 200, response.text
        claims = deps.verifier.verify(response.json()["access_token"])
        assert claims.amr == ("pwd", "hwk", "mfa")
        assert claims.acr == "aal2"
        factors = (
            await client.get(
                "/api/v1/auth/mfa/factors",
                headers={"Authorization": f"Bearer {response.json()['access_token']}"},
            )
        ).json()
        assert [f["method"] for f in factors["factors"]] == ["biometric"]

    async def test_assertion_without_user_verification_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Presence alone (no biometric) does not pass; nor does a replayed assertion."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        options = (
            await client.post(
                "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": token}
            )
        ).json()
        no_uv = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/verify",
            json={
                "mfa_token": token,
                "credential": authenticator.assertion(options, flags=FLAG_UP),
            },
        )
        assert no_uv.status_code == 401
        good = authenticator.assertion(options)
        ok = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/verify",
            json={"mfa_token": token, "credential": good},
        )
        assert ok.status_code == 200
        replay = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/verify",
            json={"mfa_token": token, "credential": good},
        )
        assert replay.status_code == 401

    async def test_registration_challenge_is_single_use(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A registration response for a used or foreign challenge is refused."""
        account = await registered(client)
        authenticator = SoftAuthenticator("localhost", "http://localhost:8000")
        forged = authenticator.register({"challenge": bytes_to_base64url(b"not-our-challenge")})
        response = await client.post(
            "/api/v1/auth/mfa/webauthn/register/verify",
            json={"credential": forged},
            headers=account.bearer,
        )
        assert response.status_code == 422
        assert base64url_to_bytes(forged["rawId"]) == authenticator.credential_id
