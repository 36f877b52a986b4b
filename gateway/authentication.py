"""The authentication slot: bearer JWTs on protected routes, admin role, MFA step-up.

Every route a request matches is protected unless the policy lists it as public. The token is
checked by a `TokenVerifier` (the identity area's, verifying signature, `exp`, `nbf`, `iss` and
`aud` against our JWKS); this module only extracts it, hands it over and acts on the claims:

- no bearer token: 401 with `WWW-Authenticate: Bearer realm="..."` (RFC 6750 §3.1: a request
  that carried no credentials gets no error code);
- a token the verifier refuses, two Authorization headers, or a malformed value: 401 with
  `Bearer realm="...", error="invalid_token", error_description="..."`;
- an admin route and a token without the admin role: 403; with it but without a second factor
  in `amr` (unless `admin.second_factor` is off): 401 `insufficient_user_authentication` with
  `acr_values` and no `max_age` (any sign-in with a second factor will do);
- a step-up route (configured, or marked `x-step-up`) and a token whose `amr` lacks the required
  method or whose `auth_time` is older than `max_age_s`: 401 with
  `Bearer ..., error="insufficient_user_authentication", acr_values="...", max_age=N` (RFC 9470).

On success the `Principal` goes into the request state for handlers (`CurrentPrincipal`) and
into the edge state for rate limiting and the audit line. Requests no route serves are not
authenticated (the router answers 404 or 405), so a probe learns nothing a 401 would not tell.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.types import Scope

from gateway.constants import BEARER_TOKEN_LENGTH_MAX, PRINCIPALS_MAX
from gateway.edge import Decision, EdgeState
from gateway.errors import (
    AdminRoleRequiredError,
    AdminSecondFactorRequiredError,
    InvalidTokenError,
    StepUpRequiredError,
    TokenMissingError,
)
from gateway.policy import AdminAccessPolicy, AuthPolicy
from gateway.principal import PRINCIPAL_STATE_KEY, Principal, Role, TokenClaims, TokenVerifier
from kit.clock import Clock
from kit.errors import AppError, UnauthorizedError

_TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_UNSAFE_IN_QUOTES: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # RFC 6750 §3 charset


def bearer_token(values: list[str]) -> str | None:
    """The bearer token in the Authorization header values; None when there is none.

    Raises:
        InvalidTokenError: more than one header, or a Bearer value that is not a token.
    """
    if not values:
        return None
    if len(values) > 1:
        raise InvalidTokenError("Only one Authorization header is allowed.")
    scheme, _, rest = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    if not token or len(token) > BEARER_TOKEN_LENGTH_MAX or _TOKEN.fullmatch(token) is None:
        raise InvalidTokenError("The Authorization header does not hold a bearer token.")
    return token


def _quoted(text: str) -> str:
    return _UNSAFE_IN_QUOTES.sub("", text)


class Authentication:
    """401/403 for protected routes without an acceptable token; the principal otherwise."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        policy: AuthPolicy,
        admin: AdminAccessPolicy,
        clock: Clock,
    ) -> None:
        self._verifier = verifier
        self._clock = clock
        self._required_role = None if admin.required_role is None else Role(admin.required_role)
        step_up = policy.step_up
        self._amr_required = step_up.amr_required
        self._max_age_s = step_up.max_age_s
        self._realm = f'Bearer realm="{policy.realm}"'
        # Authorization header value -> (token, claims, principal) of a verified token.
        self._seen: dict[str, tuple[str, TokenClaims, Principal]] = {}
        self._step_up_challenge = (
            f'{self._realm}, error="insufficient_user_authentication", '
            f'error_description="{_quoted(StepUpRequiredError.default_message)}", '
            f'acr_values="{" ".join(step_up.acr_values)}", max_age={step_up.max_age_s}'
        )
        self._admin_second_factor = admin.second_factor
        self._admin_challenge = (
            f'{self._realm}, error="insufficient_user_authentication", '
            f'error_description="{_quoted(AdminSecondFactorRequiredError.default_message)}", '
            f'acr_values="{" ".join(step_up.acr_values)}"'
        )

    def refusal(self, scope: Scope, edge: EdgeState) -> tuple[AppError, str | None] | None:
        """None when the request may proceed (the principal, if any, is then in the request
        state and the edge state); else the error and its `WWW-Authenticate` challenge."""
        route = edge.route
        if not route.is_matched or route.is_public:
            return None
        refusal = self._authenticate(edge)
        if refusal is None:
            scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = edge.principal
        return refusal

    def _verified(self, values: list[str]) -> Principal | None:
        """The principal of the bearer token in `values` (None when there is none), verified on
        every request; what does not change between requests with the same header (the
        token's parse and its principal) is kept per header value, for verified tokens only."""
        seen = self._seen.get(values[0]) if len(values) == 1 else None
        if seen is not None:
            token, claims, principal = seen
            verified = self._verifier.verify(token)  # times, and the key still published
            if verified is claims:
                return principal
        else:
            parsed = bearer_token(values)
            if parsed is None:
                return None
            token = parsed
            verified = self._verifier.verify(token)
        principal = Principal.from_claims(verified)
        if len(self._seen) >= PRINCIPALS_MAX:
            del self._seen[next(iter(self._seen))]
        self._seen[values[0]] = (token, verified, principal)
        return principal

    def _authenticate(self, edge: EdgeState) -> tuple[AppError, str | None] | None:
        """None when the request may proceed, else the error and its challenge."""
        try:
            principal = self._verified(edge.authorizations) if edge.authorizations else None
            if principal is None:
                edge.decision = Decision.DENY_TOKEN_MISSING
                return TokenMissingError(), self._realm
        except UnauthorizedError as exc:
            edge.decision = Decision.DENY_TOKEN_INVALID
            description = _quoted(exc.public_message)
            challenge = f'{self._realm}, error="invalid_token", error_description="{description}"'
            return exc, challenge
        except AppError as exc:  # the verifier's dependency (its key set) is unavailable
            edge.decision = Decision.ERROR
            return exc, None
        edge.principal = principal
        return self._authorize(edge, principal)

    def _authorize(
        self, edge: EdgeState, principal: Principal
    ) -> tuple[AppError, str | None] | None:
        """What the route asks of an authenticated caller: the admin role and a second factor
        on admin routes, a recent second factor on step-up routes."""
        route = edge.route
        if route.is_admin:
            if self._required_role and principal.role is not self._required_role:
                edge.decision = Decision.DENY_ADMIN_ROLE
                return AdminRoleRequiredError(), None
            if self._admin_second_factor and self._amr_required not in principal.amr:
                edge.decision = Decision.DENY_STEP_UP
                return AdminSecondFactorRequiredError(), self._admin_challenge
        if route.is_step_up and not principal.has_recent_factor(
            self._amr_required, now=self._clock.now(), max_age_s=self._max_age_s
        ):
            edge.decision = Decision.DENY_STEP_UP
            error = StepUpRequiredError(max_age_s=self._max_age_s)
            return error, self._step_up_challenge
        return None
