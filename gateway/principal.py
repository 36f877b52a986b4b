"""Who is calling: the typed context the authentication policy hands to handlers.

The seed passed `X-User-ID`, `X-User-Role` and `X-KYC-Status` headers upstream; inside one
process a typed object is safer (a client cannot forge it) and cheaper. The edge stores a
`Principal` in the request state (`request.state.principal`); handlers read it through the
`CurrentPrincipal` dependency, which answers 401 if a route that needs it was reached without
one (a public route, or a replica whose authentication slot is empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Protocol
from uuid import UUID

from fastapi import Depends, Request

from gateway.errors import InvalidTokenError
from gateway.policy import Tier
from kit.errors import UnauthorizedError

PRINCIPAL_STATE_KEY: Final = "principal"


class Role(StrEnum):
    """What a token lets its holder do beyond their own data."""

    USER = "user"
    ADMIN = "admin"


class TokenClaims(Protocol):
    """The verified claims of an access token, as the identity area's verifier returns them."""

    @property
    def sub(self) -> UUID:
        """The user id."""
        ...

    @property
    def sid(self) -> str:
        """The session id."""
        ...

    @property
    def scope(self) -> str | Sequence[str]:
        """Granted scopes, space separated (RFC 6749) or as a sequence."""
        ...

    @property
    def amr(self) -> Sequence[str]:
        """Authentication methods (RFC 8176); contains "mfa" after a second factor."""
        ...

    @property
    def acr(self) -> str | None:
        """Authentication context class reached."""
        ...

    @property
    def auth_time(self) -> datetime:
        """When the user last authenticated (timezone-aware)."""
        ...

    @property
    def role(self) -> str:
        """ "user" or "admin"."""
        ...

    @property
    def tier(self) -> str:
        """ "basic", "premium" or "enterprise"."""
        ...

    @property
    def kyc_status(self) -> str:
        """The user's KYC state when the token was minted."""
        ...


class TokenVerifier(Protocol):
    """Verifies an access token (signature, `exp`, `nbf`, `iss`, `aud`) and returns its claims.

    Synchronous on purpose: verification is CPU-only (keys are cached; refreshing the key set
    is the verifier's own background concern) and costs well under a millisecond.

    Raises:
        UnauthorizedError: a subclass, for any token that must not be accepted.
    """

    def verify(self, token: str) -> TokenClaims:
        """The claims of `token`, or an `UnauthorizedError`."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of this request."""

    user_id: UUID
    session_id: str
    role: Role
    tier: Tier
    kyc_status: str
    scopes: frozenset[str]
    amr: tuple[str, ...]
    acr: str | None
    auth_time: datetime
    # `user_id` as text, made once per token: every request's audit line and rate-limit key
    # would otherwise format the UUID again.
    user_text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_text", str(self.user_id))

    @classmethod
    def from_claims(cls, claims: TokenClaims) -> Principal:
        """The principal of verified `claims`; an unknown role or tier makes the token invalid."""
        try:
            role, tier = Role(claims.role), Tier(claims.tier)
        except ValueError as exc:
            raise InvalidTokenError("The access token carries an unknown role or tier.") from exc
        if claims.auth_time.tzinfo is None:
            raise InvalidTokenError("The access token's auth_time has no timezone.")
        scope = claims.scope
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        return cls(
            user_id=claims.sub,
            session_id=claims.sid,
            role=role,
            tier=tier,
            kyc_status=claims.kyc_status,
            scopes=scopes,
            amr=tuple(claims.amr),
            acr=claims.acr,
            auth_time=claims.auth_time,
        )

    def has_recent_factor(self, method: str, *, now: datetime, max_age_s: int) -> bool:
        """True when `method` is among the token's `amr` and it authenticated within the window."""
        return method in self.amr and now - self.auth_time <= timedelta(seconds=max_age_s)


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if not isinstance(principal, Principal):
        raise UnauthorizedError("This route needs an authenticated caller.")
    return principal


def optional_principal(request: Request) -> Principal | None:
    """FastAPI dependency: the authenticated caller when there is one (public routes)."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    return principal if isinstance(principal, Principal) else None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
