"""Signing keys: creation, rotation, publication, and the pepper of one-time codes.

A key is `next` (published, not yet signing), `active` (signing), or `retired` (published until
`published_until`, its private half erased). Rotation, under a PostgreSQL advisory lock:

1. the first rotation creates an active key and a next key (no token exists yet);
2. later rotations retire the active key, activate the next one and create a new next one, but
   only once the next key has been published for `publish_lead_s` (two key-refresh intervals),
   so every verifier already holds it when the first token it signs arrives;
3. the retired key stays published for the access-token lifetime plus the refresh interval and
   the clock leeway: a token it signed a moment before rotation verifies until it expires.

Key ids are RFC 7638 JWK thumbprints. Private keys are PKCS#8 PEM sealed by `kit.crypto` with
the context `auth_signing_keys.private_key:<kid>`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.audit import record_event
from auth.constants import SIGNING_KEY_BITS, TOKEN_LEEWAY_S
from auth.models import AuthEvent
from auth.repository import keys as repository
from auth.tokens import SigningKey, VerificationKey
from kit.clock import Clock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.errors import ConflictError, check_invariant, fail_invariant

PEPPER_NAME = "code_pepper"
PEPPER_BYTES = 32
RSA_PUBLIC_EXPONENT = 65537


class KeyRotationTooSoonError(ConflictError):
    """The next key has not been published long enough for every verifier to hold it."""

    code: ClassVar[str] = "AUTH_KEY_ROTATION_TOO_SOON"
    default_message: ClassVar[str] = "The next key was published too recently to activate."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The public JWK (RFC 7517) with an RFC 7638 thumbprint as `kid`."""
    numbers = public_key.public_numbers()
    members = {"e": _b64(_int_bytes(numbers.e)), "kty": "RSA", "n": _b64(_int_bytes(numbers.n))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = _b64(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "use": "sig", "alg": "RS256"}


def _private_context(kid: str) -> str:
    return f"auth_signing_keys.private_key:{kid}"


def _new_key(cipher: EnvelopeCipher) -> tuple[str, dict[str, str], str]:
    private = rsa.generate_private_key(
        public_exponent=RSA_PUBLIC_EXPONENT, key_size=SIGNING_KEY_BITS
    )
    jwk = public_jwk(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jwk["kid"], jwk, cipher.encrypt(pem, context=_private_context(jwk["kid"]))


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What a rotation did."""

    activated: str | None
    retired: str | None
    published_next: str


@dataclass(frozen=True, slots=True)
class KeyTimings:
    """The durations rotation depends on."""

    access_ttl_s: int
    refresh_interval_s: float

    @property
    def publish_lead_s(self) -> float:
        """How long a next key is published before it may sign."""
        return 2 * self.refresh_interval_s

    @property
    def retired_publication_s(self) -> float:
        """How long a retired key stays published."""
        return self.access_ttl_s + self.refresh_interval_s + TOKEN_LEEWAY_S


async def rotate_keys(
    conn: asyncpg.Connection,
    *,
    cipher: EnvelopeCipher,
    now: datetime,
    timings: KeyTimings,
    is_forced: bool = False,
) -> RotationResult:
    """One rotation step (see the module docstring); audited as `auth.key_rotated`."""
    await repository.lock_keys(conn)
    rows = await repository.list_keys(conn)
    active = next((r for r in rows if r["status"] == "active"), None)
    waiting = next((r for r in rows if r["status"] == "next"), None)
    activated: str | None = None
    retired: str | None = None
    if active is None and waiting is None:
        kid, jwk, sealed = _new_key(cipher)
        await repository.insert_key(
            conn, kid=kid, status="active", public_jwk=jwk, private_key=sealed, created_at=now
        )
        activated = kid
    elif waiting is not None:
        published_s = (now - waiting["created_at"]).total_seconds()
        if active is not None and published_s < timings.publish_lead_s and not is_forced:
            raise KeyRotationTooSoonError(
                published_s=round(published_s), publish_lead_s=timings.publish_lead_s
            )
        if active is not None:
            until = now + timedelta(seconds=timings.retired_publication_s)
            await repository.retire_active(conn, at=now, published_until=until)
            retired = active["kid"]
        activated = await repository.activate_next(conn, at=now)
    kid, jwk, sealed = _new_key(cipher)
    await repository.insert_key(
        conn, kid=kid, status="next", public_jwk=jwk, private_key=sealed, created_at=now
    )
    await record_event(
        conn,
        AuthEvent.KEY_ROTATED,
        user_id=None,
        activated=activated,
        retired=retired,
        published_next=kid,
    )
    return RotationResult(activated=activated, retired=retired, published_next=kid)


async def ensure_keys(
    conn: asyncpg.Connection, *, cipher: EnvelopeCipher, now: datetime, timings: KeyTimings
) -> None:
    """Create the first keys if none is active (idempotent across replicas)."""
    await repository.lock_keys(conn)
    if await repository.active_key(conn) is None:
        await rotate_keys(conn, cipher=cipher, now=now, timings=timings)


async def list_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every key's public facts (for `dwaybank keys list`)."""
    return [
        {
            "kid": r["kid"],
            "status": r["status"],
            "created_at": r["created_at"],
            "activated_at": r["activated_at"],
            "retired_at": r["retired_at"],
            "published_until": r["published_until"],
        }
        for r in await repository.list_keys(conn)
    ]


class PostgresKeySource:
    """Reads published keys and the active private key from PostgreSQL."""

    def __init__(self, db: Database, cipher: EnvelopeCipher, *, clock: Clock) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock

    async def verification_keys(self) -> list[VerificationKey]:
        """Every published key."""
        async with self._db.connection() as conn:
            rows = await repository.published_keys(conn, self._clock.now())
        return [
            VerificationKey(r["kid"], dict(r["public_jwk"]), r["published_until"]) for r in rows
        ]

    async def signing_key(self) -> SigningKey | None:
        """The active key, decrypted."""
        async with self._db.connection() as conn:
            row = await repository.active_key(conn)
        if row is None:
            return None
        pem = self._cipher.decrypt(row["private_key"], context=_private_context(row["kid"]))
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            fail_invariant("a stored signing key is not an RSA key", kid=row["kid"])
        return SigningKey(row["kid"], private)


async def load_pepper(conn: asyncpg.Connection, cipher: EnvelopeCipher) -> bytes:
    """The HMAC pepper of one-time codes, created on first use."""
    context = f"auth_secrets.sealed:{PEPPER_NAME}"
    sealed = await repository.find_secret(conn, PEPPER_NAME)
    if sealed is None:
        await repository.insert_secret(
            conn, PEPPER_NAME, cipher.encrypt(secrets.token_bytes(PEPPER_BYTES), context=context)
        )
        sealed = await repository.find_secret(conn, PEPPER_NAME)
    check_invariant(sealed is not None, "the code pepper could not be stored")
    return cipher.decrypt(str(sealed), context=context)
