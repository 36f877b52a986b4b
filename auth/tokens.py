"""Access tokens: RS256 JWTs, their claims, a signer and the verifier the gateway calls.

The verifier is the contract with the edge: `TokenVerifier.verify(token, now=...)` is
synchronous and CPU-only (one RSA signature check, tens of microseconds); it never waits on
PostgreSQL. Its keys are held in memory and replaced by `await refresh()`, which the wiring
calls every `auth_key_refresh_interval_s`. A token is accepted only when:

* its header says `alg: RS256` and `typ: at+jwt` (RFC 9068) and names a `kid` we publish
  (`alg: none`, HS256 and every other algorithm are refused before any key is touched, and
  `jku` / `x5u` / `jwk` headers are never followed);
* the signature verifies under that key, and the key is still published (a retired key
  verifies only until `published_until`, when every token it signed has expired);
* `iss` and `aud` are ours, `exp` is in the future and `nbf` / `iat` are not (each with
  `TOKEN_LEEWAY_S` of skew), and every claim of `AccessClaims` is present and well-typed.

Claims: `sub` (user id), `sid` (session id), `scope` (space-separated on the wire), `amr`
(RFC 8176 methods; contains "mfa" when a second factor was verified), `acr` (`aal1`/`aal2`),
`auth_time`, `iat`, `exp`, `nbf`, `jti`, `iss`, `aud`, plus `role`, `tier` and `kyc_status`
from the user's row at issue time, and `client_id` for tokens issued to an OAuth client.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from auth.constants import (
    ACCESS_TOKEN_TYPE,
    TOKEN_LEEWAY_S,
    TOKEN_LENGTH_MAX,
    VERIFIED_TOKENS_MAX,
)
from kit.clock import Clock
from kit.errors import InvariantError, UnauthorizedError

ALGORITHM = "RS256"
_REQUIRED_CLAIMS = ["sub", "sid", "iat", "exp", "nbf", "iss", "aud", "jti", "auth_time"]


class InvalidTokenError(UnauthorizedError):
    """The access token is malformed, forged, expired, not yet valid or not for us."""

    code: ClassVar[str] = "AUTH_INVALID_TOKEN"
    default_message: ClassVar[str] = "The access token is not valid."


class AccessClaims(BaseModel):
    """The verified claims of an access token."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: uuid.UUID
    sid: str = Field(min_length=1, max_length=64)
    scope: tuple[str, ...]  # sorted, de-duplicated (a Sequence, as the gateway expects)
    amr: tuple[str, ...]
    acr: str
    auth_time: datetime
    iat: datetime
    exp: datetime
    nbf: datetime
    jti: str
    iss: str
    aud: str
    role: Literal["user", "admin"]
    tier: Literal["basic", "premium", "enterprise"]
    kyc_status: str
    client_id: str | None = None

    @property
    def has_mfa(self) -> bool:
        """True when a second factor was verified for this session."""
        return "mfa" in self.amr

    def is_fresh(self, *, now: datetime, max_age_s: float) -> bool:
        """True when the user authenticated within `max_age_s` (for step-up)."""
        return now - self.auth_time <= timedelta(seconds=max_age_s)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published public key and until when tokens it signed may verify."""

    kid: str
    public_jwk: Mapping[str, Any]
    published_until: datetime | None  # None while the key is next or active


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active private key."""

    kid: str
    private_key: RSAPrivateKey


class KeySource(Protocol):
    """Where keys come from (PostgreSQL in production: `auth.keys.PostgresKeySource`)."""

    async def verification_keys(self) -> list[VerificationKey]:
        """Every published key (next, active, retired but not yet expired)."""
        ...

    async def signing_key(self) -> SigningKey | None:
        """The active key, or None before the first rotation."""
        ...


@dataclass(frozen=True, slots=True)
class _LoadedKey:
    public_key: RSAPublicKey
    published_until: datetime | None


def _as_datetime(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature and claims verified once: what a repeat needs re-checked."""

    kid: str
    claims: AccessClaims
    exp: float
    nbf: float
    iat: float


class TokenVerifier:
    """Verifies access tokens against the published keys held in memory.

    A client presents the same token on every request for up to 15 minutes, so a verified token
    is remembered (at most `VERIFIED_TOKENS_MAX`, the oldest dropped first): a repeat costs a
    dictionary lookup instead of parsing and an RSA check. Only what can change is checked again
    on a repeat: the signing key is still published, and the times against the clock. The memory
    is emptied whenever the key set is replaced.
    """

    def __init__(self, source: KeySource, *, issuer: str, audience: str, clock: Clock) -> None:
        self._source = source
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._keys: dict[str, _LoadedKey] = {}
        self._jwks: list[dict[str, Any]] = []
        self._verified: dict[str, _Verified] = {}

    @property
    def kids(self) -> frozenset[str]:
        """The key ids this verifier accepts."""
        return frozenset(self._keys)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the published keys (public members only)."""
        return {"keys": list(self._jwks)}

    async def refresh(self) -> None:
        """Replace the in-memory keys with the published set."""
        self.install(await self._source.verification_keys())

    def install(self, keys: list[VerificationKey]) -> None:
        """Use exactly these keys from now on."""
        loaded: dict[str, _LoadedKey] = {}
        published: list[dict[str, Any]] = []
        for key in keys:
            public = jwt.PyJWK(dict(key.public_jwk), algorithm=ALGORITHM).key
            if not isinstance(public, RSAPublicKey):
                raise InvalidTokenError("a published key is not an RSA public key")
            loaded[key.kid] = _LoadedKey(public, key.published_until)
            published.append(dict(key.public_jwk))
        self._keys, self._jwks = loaded, published
        self._verified = {}

    def verify(self, token: str, *, now: datetime | None = None) -> AccessClaims:
        """The claims of a valid access token; `InvalidTokenError` otherwise."""
        at = now or self._clock.now()
        seen = self._verified.get(token)
        if seen is not None:
            key = self._keys.get(seen.kid)
            if key is None or (key.published_until is not None and at >= key.published_until):
                del self._verified[token]  # the key was withdrawn: verify (and refuse) in full
            else:
                _check_times(seen.exp, seen.nbf, seen.iat, at.timestamp())
                return seen.claims
        if len(token) > TOKEN_LENGTH_MAX:
            raise InvalidTokenError("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the token is not a JWT") from exc
        if header.get("alg") != ALGORITHM or header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidTokenError("the token's algorithm or type is not accepted")
        kid = str(header.get("kid"))
        key = self._keys.get(kid)
        if key is None:
            raise InvalidTokenError("the token was signed by an unknown key")
        if key.published_until is not None and at >= key.published_until:
            raise InvalidTokenError("the token was signed by a withdrawn key")
        try:
            payload = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the token did not verify") from exc
        claims = _checked_claims(payload, at)
        if len(self._verified) >= VERIFIED_TOKENS_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = _Verified(
            kid, claims, payload["exp"], payload["nbf"], payload["iat"]
        )
        return claims


def _check_times(exp: float, nbf: float, iat: float, timestamp: float) -> None:
    if exp <= timestamp - TOKEN_LEEWAY_S:
        raise InvalidTokenError("the token has expired")
    if nbf > timestamp + TOKEN_LEEWAY_S or iat > timestamp + TOKEN_LEEWAY_S:
        raise InvalidTokenError("the token is not valid yet")


def _checked_claims(payload: dict[str, Any], at: datetime) -> AccessClaims:
    timestamp = at.timestamp()
    for name in ("exp", "nbf", "iat", "auth_time"):
        if not isinstance(payload.get(name), int):
            raise InvalidTokenError("a time claim is not an integer")
    _check_times(payload["exp"], payload["nbf"], payload["iat"], timestamp)
    scope = payload.get("scope", "")
    try:
        return AccessClaims.model_validate(
            {
                "sub": payload["sub"],
                "sid": payload["sid"],
                "scope": tuple(sorted(set(scope.split()))) if isinstance(scope, str) else (),
                "amr": tuple(payload.get("amr", ())),
                "acr": payload.get("acr", ""),
                "auth_time": _as_datetime(payload["auth_time"]),
                "iat": _as_datetime(payload["iat"]),
                "exp": _as_datetime(payload["exp"]),
                "nbf": _as_datetime(payload["nbf"]),
                "jti": payload["jti"],
                "iss": payload["iss"],
                "aud": payload["aud"],
                "role": payload.get("role"),
                "tier": payload.get("tier"),
                "kyc_status": payload.get("kyc_status"),
                "client_id": payload.get("client_id"),
            }
        )
    except (PydanticValidationError, TypeError) as exc:
        raise InvalidTokenError("the token's claims are not well-formed") from exc


@dataclass(frozen=True, slots=True)
class TokenSubject:
    """Who a token is for and what it carries besides the session."""

    user_id: uuid.UUID
    role: str
    tier: str
    kyc_status: str


class TokenSigner:
    """Signs access and ID tokens with the active key held in memory."""

    def __init__(
        self, source: KeySource, *, issuer: str, audience: str, access_ttl_s: int, clock: Clock
    ) -> None:
        self._source = source
        self._issuer = issuer
        self._audience = audience
        self.access_ttl_s = access_ttl_s
        self._clock = clock
        self._key: SigningKey | None = None

    @property
    def kid(self) -> str | None:
        """The key id tokens are signed with now."""
        return None if self._key is None else self._key.kid

    async def refresh(self) -> None:
        """Load the active key."""
        self._key = await self._source.signing_key()

    def _signing_key(self) -> SigningKey:
        if self._key is None:
            raise InvariantError("no signing key is active; run `dwaybank keys rotate`")
        return self._key

    def sign_access(
        self,
        subject: TokenSubject,
        *,
        session_id: str,
        scope: tuple[str, ...],
        amr: tuple[str, ...],
        acr: str,
        auth_time: datetime,
        client_id: str | None = None,
    ) -> str:
        """A fresh access token."""
        key = self._signing_key()
        now = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": str(subject.user_id),
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl_s,
            "jti": uuid.uuid4().hex,
            "sid": session_id,
            "scope": " ".join(scope),
            "amr": list(amr),
            "acr": acr,
            "auth_time": int(auth_time.timestamp()),
            "role": subject.role,
            "tier": subject.tier,
            "kyc_status": subject.kyc_status,
        }
        if client_id is not None:
            claims["client_id"] = client_id
        headers = {"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers=headers)

    def sign_id_token(
        self,
        user_id: uuid.UUID,
        *,
        client_id: str,
        auth_time: datetime,
        amr: tuple[str, ...],
        acr: str,
        nonce: str | None,
        email: str,
        is_email_verified: bool,
    ) -> str:
        """An OpenID Connect ID token for `client_id`."""
        key = self._signing_key()
        now = int(self._clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": str(user_id),
            "aud": client_id,
            "iat": now,
            "exp": now + self.access_ttl_s,
            "auth_time": int(auth_time.timestamp()),
            "amr": list(amr),
            "acr": acr,
            "email": email,
            "email_verified": is_email_verified,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
