"""The refusals of the edge stack, each a code and a status in the shared error tree.

```
UnauthorizedError (kit)
  TokenMissingError            AUTH_TOKEN_MISSING           401  no bearer token, protected route
  InvalidTokenError            AUTH_INVALID_TOKEN           401  the verifier refused the token
  StepUpRequiredError          AUTH_STEP_UP_REQUIRED        401  RFC 9470: a recent 2nd factor
ForbiddenError (kit)
  AdminRoleRequiredError       AUTH_ADMIN_REQUIRED          403  admin route, non-admin token
  BotDeniedError               GW_BOT_DENIED                403  user agent on the deny list
  AddressNotAllowedError       GW_ADDRESS_NOT_ALLOWED       403  client outside the allow-list
DomainError (kit)
  AmbiguousUserAgentError      GW_USER_AGENT_AMBIGUOUS      400  two User-Agent headers
  NulInUrlError                GW_NUL_IN_URL                400  %00 in the path or query
RateLimitedError (kit)
  QuotaExceededError           GEN_RATE_LIMITED             429  the draft's quota-exceeded type
DependencyError (kit)
  RateLimiterUnavailableError  GW_RATE_LIMITER_UNAVAILABLE  503  money-moving route fails closed
  SystemPressureError          GW_SYSTEM_PRESSURE           503  readiness: memory or CPU high
```

The identity area's verifier raises its own `UnauthorizedError` subclasses (an expired token, an
unknown key); the authentication policy renders whichever it gets with the Bearer challenge.
`AUTH_INVALID_TOKEN` and `AUTH_ADMIN_REQUIRED` are the identity area's codes for the same
outcomes, so a client sees one code per meaning whichever layer refused.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from kit.errors import (
    DependencyError,
    DomainError,
    ForbiddenError,
    RateLimitedError,
    UnauthorizedError,
)

QUOTA_EXCEEDED_TYPE: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"


class TokenMissingError(UnauthorizedError):
    """A protected route was called without a bearer token."""

    code: ClassVar[str] = "AUTH_TOKEN_MISSING"
    default_message: ClassVar[str] = "This route needs a bearer access token."


class InvalidTokenError(UnauthorizedError):
    """The bearer token is malformed, forged, expired or meant for another audience."""

    code: ClassVar[str] = "AUTH_INVALID_TOKEN"
    default_message: ClassVar[str] = "The access token is invalid or expired."


class StepUpRequiredError(UnauthorizedError):
    """The route needs a second factor more recent than the token carries (RFC 9470)."""

    code: ClassVar[str] = "AUTH_STEP_UP_REQUIRED"
    title: ClassVar[str] = "Step-up authentication required"
    default_message: ClassVar[str] = "This route needs a recent multi-factor authentication."


class AdminSecondFactorRequiredError(StepUpRequiredError):
    """An admin route was called with a token whose sign-in had no second factor (RFC 9470)."""

    default_message: ClassVar[str] = "The admin surface needs a sign-in with a second factor."


class AdminRoleRequiredError(ForbiddenError):
    """An admin route was called with a token that does not carry the admin role."""

    code: ClassVar[str] = "AUTH_ADMIN_REQUIRED"
    default_message: ClassVar[str] = "This route is for administrators."


class BotDeniedError(ForbiddenError):
    """The user agent matches the deny list."""

    code: ClassVar[str] = "GW_BOT_DENIED"
    default_message: ClassVar[str] = "Automated clients of this kind are not allowed."


class AddressNotAllowedError(ForbiddenError):
    """The client address is outside the allow-list of the route."""

    code: ClassVar[str] = "GW_ADDRESS_NOT_ALLOWED"
    default_message: ClassVar[str] = "The client address is not allowed on this route."


class AmbiguousUserAgentError(DomainError):
    """The request carries more than one User-Agent header (Kong answers 400 too)."""

    code: ClassVar[str] = "GW_USER_AGENT_AMBIGUOUS"
    default_message: ClassVar[str] = "Only one User-Agent header is allowed."


class NulInUrlError(DomainError):
    """The path or the query string carries the NUL character (`%00`), which no route means
    and PostgreSQL's text cannot hold: refused before any handler sees it."""

    code: ClassVar[str] = "GW_NUL_IN_URL"
    default_message: ClassVar[str] = "The path or query string contains the NUL character (%00)."


class QuotaExceededError(RateLimitedError):
    """A rate-limit window is exhausted; `details` has `retry_after_s` and `violated_policies`.

    Rendered with the RateLimit draft's problem type and its `violated-policies` member.
    """

    problem_type: ClassVar[str] = QUOTA_EXCEEDED_TYPE

    @property
    def problem_members(self) -> dict[str, Any]:
        """Top-level members of the problem document (RFC 9457 extensions)."""
        return {"violated-policies": list(self.details.get("violated_policies", ()))}

    @property
    def public_details(self) -> dict[str, Any]:
        return {"retry_after_s": self.details.get("retry_after_s")}


class RateLimiterUnavailableError(DependencyError):
    """The limiter did not answer and the route moves money, so the request is refused."""

    code: ClassVar[str] = "GW_RATE_LIMITER_UNAVAILABLE"
    default_message: ClassVar[str] = "The service is briefly unavailable; retry shortly."
    retry_after_s: ClassVar[int] = 1


class SystemPressureError(DependencyError):
    """Memory or CPU of the node is above the readiness threshold."""

    code: ClassVar[str] = "GW_SYSTEM_PRESSURE"
    default_message: ClassVar[str] = "The node is under resource pressure."
