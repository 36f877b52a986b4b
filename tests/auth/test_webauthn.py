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
from tests.auth.conftest import NEW_PASSWORD, PASSWORD, Account, outbox_code, registered

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


async def _options(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": token}
    )
    assert response.status_code == 200, response.text
    options: dict[str, Any] = response.json()
    return options


async def _assert(
    client: httpx.AsyncClient, token: str, credential: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/mfa/webauthn/authenticate/verify",
        json={"mfa_token": token, "credential": credential},
    )


class TestAssertionRules:
    async def test_a_counter_going_backwards_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A cloned authenticator (its counter behind the stored one) cannot finish a login."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        assert (
            await _assert(client, token, authenticator.assertion(await _options(client, token)))
        ).status_code == 200
        authenticator.counter = 0  # the clone still counts from where the original was copied
        token = await _challenge(client, account)
        clone = await _assert(client, token, authenticator.assertion(await _options(client, token)))
        assert clone.status_code == 401
        assert clone.json()["code"] == "AUTH_INVALID_MFA_CODE"

    async def test_a_sign_in_ended_by_a_password_change_offers_no_options(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A waiting passkey sign-in ends with a password change: asking it for options or
        finishing it answers as an unknown sign-in, and a new one on the new password works."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        options = await _options(client, token)
        changed = await client.post(
            "/api/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.bearer,
        )
        assert changed.status_code == 200, changed.text
        again = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": token}
        )
        assert (again.status_code, again.json()["code"]) == (401, "AUTH_INVALID_MFA_CODE")
        finished = await _assert(client, token, authenticator.assertion(options))
        assert (finished.status_code, finished.json()["code"]) == (401, "AUTH_INVALID_MFA_CODE")

    async def test_another_users_credential_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A valid assertion by a passkey of another account does not finish this login."""
        victim, _ = await _enrol(client, deps)
        _, intruder = await _enrol(client, deps)
        token = await _challenge(client, victim)
        response = await _assert(client, token, intruder.assertion(await _options(client, token)))
        assert response.status_code == 401

    async def test_a_malformed_credential_id_is_a_wrong_guess(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """An assertion without a usable rawId answers 401; the right one still passes."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        options = await _options(client, token)
        good = authenticator.assertion(options)
        unnamed = {k: v for k, v in good.items() if k != "rawId"}
        for broken in (unnamed, {**good, "rawId": "%%%"}):
            assert (await _assert(client, token, broken)).status_code == 401
        assert (await _assert(client, token, authenticator.assertion(options))).status_code == 200

    async def test_three_wrong_assertions_end_the_challenge(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """After three refused assertions even a right one is refused: sign in again."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        options = await _options(client, token)
        for _ in range(3):
            refused = authenticator.assertion(options, flags=FLAG_UP)
            assert (await _assert(client, token, refused)).status_code == 401
        last = await _assert(client, token, authenticator.assertion(options))
        assert last.status_code == 401
        assert last.json()["detail"] == "too many attempts; sign in again"

    async def test_an_assertion_needs_the_options_of_its_challenge(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """An assertion before any options were asked for, or for a dead mfa_token, is refused."""
        account, authenticator = await _enrol(client, deps)
        token = await _challenge(client, account)
        unasked = authenticator.assertion({"challenge": bytes_to_base64url(b"guessed")})
        assert (await _assert(client, token, unasked)).status_code == 401
        dead = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": "x" * 43}
        )
        assert dead.status_code == 401
        assert dead.json()["code"] == "AUTH_INVALID_MFA_CODE"

    async def test_a_challenge_without_passkeys_gives_no_options(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """A login whose factors do not include a passkey cannot ask for assertion options."""
        account = await registered(client)
        await client.post("/api/v1/auth/mfa/email/enroll", headers=account.bearer)
        code = await outbox_code(client, account.email)
        confirmed = await client.post(
            "/api/v1/auth/mfa/email/confirm", json={"code": code}, headers=account.bearer
        )
        assert confirmed.status_code == 200, confirmed.text
        response = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        token = response.json()["details"]["mfa_token"]
        options = await client.post(
            "/api/v1/auth/mfa/webauthn/authenticate/options", json={"mfa_token": token}
        )
        assert options.status_code == 401


class TestRegistrationRules:
    async def test_a_registration_response_is_accepted_once(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Replaying a registration response (its challenge is spent) answers 422."""
        account = await registered(client)
        authenticator = SoftAuthenticator("localhost", deps.settings.auth_webauthn_origins)
        options = (
            await client.post("/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer)
        ).json()
        attestation = authenticator.register(options)
        first = await client.post(
            "/api/v1/auth/mfa/webauthn/register/verify",
            json={"credential": attestation},
            headers=account.bearer,
        )
        assert first.status_code == 200, first.text
        account.access_token = first.json()["access_token"]
        replay = await client.post(
            "/api/v1/auth/mfa/webauthn/register/verify",
            json={"credential": attestation},
            headers=account.bearer,
        )
        assert replay.status_code == 422
        assert replay.json()["code"] == "AUTH_WEBAUTHN_FAILED"
        assert replay.json()["detail"] == "the registration challenge expired"

    async def test_a_response_to_another_challenge_is_refused(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Options were asked for, but the response signs another challenge: 422, no factor."""
        account = await registered(client)
        authenticator = SoftAuthenticator("localhost", deps.settings.auth_webauthn_origins)
        asked = await client.post(
            "/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer
        )
        assert asked.status_code == 200
        forged = authenticator.register({"challenge": bytes_to_base64url(b"not-our-challenge")})
        response = await client.post(
            "/api/v1/auth/mfa/webauthn/register/verify",
            json={"credential": forged},
            headers=account.bearer,
        )
        assert response.status_code == 422
        assert response.json()["code"] == "AUTH_WEBAUTHN_FAILED"
        factors = await client.get("/api/v1/auth/mfa/factors", headers=account.bearer)
        assert factors.json()["factors"] == []

    async def test_removing_the_factor_removes_its_passkeys(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Deleting the biometric factor deletes every registered credential with it."""
        account, authenticator = await _enrol(client, deps)
        removed = await client.delete("/api/v1/auth/mfa/factors/biometric", headers=account.bearer)
        assert removed.status_code == 204, removed.text
        async with deps.db.connection() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM webauthn_credentials WHERE credential_id = $1",
                authenticator.credential_id,
            )
        assert left == 0
        login = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert login.status_code == 200  # no second factor is left to ask for

    async def test_a_credential_is_registered_once(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """The same credential registered again, by its owner or by another account, is a 422."""
        account, authenticator = await _enrol(client, deps)
        other = await registered(client)
        for holder in (account, other):
            options = (
                await client.post(
                    "/api/v1/auth/mfa/webauthn/register/options", headers=holder.bearer
                )
            ).json()
            again = await client.post(
                "/api/v1/auth/mfa/webauthn/register/verify",
                json={"credential": authenticator.register(options)},
                headers=holder.bearer,
            )
            assert again.status_code == 422, again.text
            assert again.json()["code"] == "AUTH_WEBAUTHN_FAILED"
        async with deps.db.connection() as conn:
            owners = await conn.fetchval(
                "SELECT count(*) FROM webauthn_credentials WHERE credential_id = $1",
                authenticator.credential_id,
            )
        assert owners == 1

    async def test_registered_passkeys_are_bounded(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """Past the tenth passkey, registration options are refused."""
        account = await registered(client)
        for _ in range(10):
            authenticator = SoftAuthenticator("localhost", deps.settings.auth_webauthn_origins)
            options = (
                await client.post(
                    "/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer
                )
            ).json()
            response = await client.post(
                "/api/v1/auth/mfa/webauthn/register/verify",
                json={"credential": authenticator.register(options)},
                headers=account.bearer,
            )
            assert response.status_code == 200, response.text
            account.access_token = response.json()["access_token"]
        refused = await client.post(
            "/api/v1/auth/mfa/webauthn/register/options", headers=account.bearer
        )
        assert refused.status_code == 422
        assert refused.json()["detail"] == "too many security keys are registered"
