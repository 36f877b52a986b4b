"""The error tree shared by every package.

```
AppError            code, status, message, details; never raised itself
  DomainError       an expected outcome -> 4xx, logged at info
    ValidationError        GEN_VALIDATION             422
    NotFoundError          GEN_NOT_FOUND              404
    ConflictError          GEN_CONFLICT               409
    UnauthorizedError      GEN_UNAUTHORIZED           401
    ForbiddenError         GEN_FORBIDDEN              403
    PayloadTooLargeError   GEN_PAYLOAD_TOO_LARGE      413
    RateLimitedError       GEN_RATE_LIMITED           429
  DependencyError   PostgreSQL / Redis / Ray / a provider unavailable -> 503 + Retry-After
    DatabaseUnavailableError  GEN_DATABASE_UNAVAILABLE
    CacheUnavailableError     GEN_CACHE_UNAVAILABLE
    ClusterUnavailableError   GEN_CLUSTER_UNAVAILABLE
    ProviderUnavailableError  GEN_PROVIDER_UNAVAILABLE
  InvariantError    a bug or corrupt state -> 500, generic message to clients, detail in logs
  ConfigurationError  the process cannot start as configured -> exit with one line
```

Every exception takes the same constructor, `(message=None, **details)`, and pickles through
`__reduce__`, so Ray can ship any of them between processes whatever a subclass adds. Domains
subclass these with their own `code` (SCREAMING_SNAKE with a domain prefix) and `status`;
nothing else in the tree needs changing. `public_message` is what a client may read: for an
`InvariantError` it is generic, the detail stays in the logs.

`body_variant` names a historical body shape that a compatibility ingress keeps for some of its
paths (on `/ledger`, a `ledger.errors.BlnkBody`); None is the ingress's standard shape. A class
sets it for every instance, or the code that raises an error sets it on the instance; either
way it survives pickling and `with_details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn, Self


def _restore(
    cls: type[AppError], message: str, details: dict[str, Any], body_variant: str | None = None
) -> AppError:
    error = cls.__new__(cls)
    error._set(message, details)
    if body_variant is not None:
        error.body_variant = body_variant
    return error


class AppError(Exception):
    """Base of every error we raise on purpose; carries a stable code and an HTTP status."""

    code: ClassVar[str] = "GEN_ERROR"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Application error"
    default_message: ClassVar[str] = "The request could not be completed."

    message: str
    details: dict[str, Any]
    body_variant: str | None = None

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self._set(message or self.default_message, details)

    def _set(self, message: str, details: Mapping[str, Any]) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.details = dict(details)

    def __reduce__(self) -> tuple[Any, ...]:
        own_variant = vars(self).get("body_variant")
        return (_restore, (type(self), self.message, self.details, own_variant))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    @property
    def public_message(self) -> str:
        """The message a client may see."""
        return self.message

    @property
    def public_details(self) -> dict[str, Any]:
        """The details a client may see."""
        return self.details

    def with_details(self, **details: Any) -> Self:
        """Return a copy with more details (the original is left untouched)."""
        copy = type(self)(self.message, **{**self.details, **details})
        if "body_variant" in vars(self):
            copy.body_variant = self.body_variant
        return copy


class DomainError(AppError):
    """An expected outcome a client can act on; a 4xx."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "GEN_BAD_REQUEST"
    title: ClassVar[str] = "Bad request"


class ValidationError(DomainError):
    """The request is well-formed but a field breaks a rule."""

    code: ClassVar[str] = "GEN_VALIDATION"
    status: ClassVar[int] = 422
    title: ClassVar[str] = "Validation failed"
    default_message: ClassVar[str] = "The request did not pass validation."


class NotFoundError(DomainError):
    """The addressed resource does not exist (or is not visible to the caller)."""

    code: ClassVar[str] = "GEN_NOT_FOUND"
    status: ClassVar[int] = 404
    title: ClassVar[str] = "Not found"
    default_message: ClassVar[str] = "The resource was not found."


class ConflictError(DomainError):
    """The request conflicts with the current state (a duplicate, a finished workflow)."""

    code: ClassVar[str] = "GEN_CONFLICT"
    status: ClassVar[int] = 409
    title: ClassVar[str] = "Conflict"
    default_message: ClassVar[str] = "The request conflicts with the current state."


class UnauthorizedError(DomainError):
    """No valid credentials were presented."""

    code: ClassVar[str] = "GEN_UNAUTHORIZED"
    status: ClassVar[int] = 401
    title: ClassVar[str] = "Unauthorized"
    default_message: ClassVar[str] = "Authentication is required."


class ForbiddenError(DomainError):
    """The caller is known but may not do this."""

    code: ClassVar[str] = "GEN_FORBIDDEN"
    status: ClassVar[int] = 403
    title: ClassVar[str] = "Forbidden"
    default_message: ClassVar[str] = "The request is not allowed."


class PayloadTooLargeError(DomainError):
    """The request body exceeds the limit of its route."""

    code: ClassVar[str] = "GEN_PAYLOAD_TOO_LARGE"
    status: ClassVar[int] = 413
    title: ClassVar[str] = "Payload too large"
    default_message: ClassVar[str] = "The request body is too large."


class RateLimitedError(DomainError):
    """A rate limit refused the request; `details["retry_after_s"]` says when to retry."""

    code: ClassVar[str] = "GEN_RATE_LIMITED"
    status: ClassVar[int] = 429
    title: ClassVar[str] = "Too many requests"
    default_message: ClassVar[str] = "Too many requests; retry later."


class DependencyError(AppError):
    """A server or provider we depend on is unavailable; a 503 with Retry-After."""

    code: ClassVar[str] = "GEN_DEPENDENCY_UNAVAILABLE"
    status: ClassVar[int] = 503
    title: ClassVar[str] = "Service unavailable"
    default_message: ClassVar[str] = "A dependency is unavailable; retry later."
    retry_after_s: ClassVar[int] = 5


class DatabaseUnavailableError(DependencyError):
    """PostgreSQL could not be reached or answered with a server-side failure."""

    code: ClassVar[str] = "GEN_DATABASE_UNAVAILABLE"
    default_message: ClassVar[str] = "The database is unavailable; retry later."


class CacheUnavailableError(DependencyError):
    """Redis could not be reached."""

    code: ClassVar[str] = "GEN_CACHE_UNAVAILABLE"
    default_message: ClassVar[str] = "The cache is unavailable; retry later."


class ClusterUnavailableError(DependencyError):
    """A Ray actor or the cluster could not be reached."""

    code: ClassVar[str] = "GEN_CLUSTER_UNAVAILABLE"
    default_message: ClassVar[str] = "An internal service is unavailable; retry later."


class ProviderUnavailableError(DependencyError):
    """A third-party provider (SMS, email, KYC) could not be reached."""

    code: ClassVar[str] = "GEN_PROVIDER_UNAVAILABLE"
    default_message: ClassVar[str] = "An external provider is unavailable; retry later."


class InvariantError(AppError):
    """A bug or corrupt state. The client sees a generic message; the logs see everything."""

    code: ClassVar[str] = "GEN_INTERNAL"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    default_message: ClassVar[str] = "An invariant was violated."

    @property
    def public_message(self) -> str:
        return "An internal error occurred."

    @property
    def public_details(self) -> dict[str, Any]:
        return {}


class ConfigurationError(AppError):
    """The process cannot start as configured; the CLI prints the message as one line."""

    code: ClassVar[str] = "GEN_CONFIGURATION"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Configuration error"
    default_message: ClassVar[str] = "The configuration is invalid."

    @property
    def public_message(self) -> str:
        return "An internal error occurred."

    @property
    def public_details(self) -> dict[str, Any]:
        return {}


def check_invariant(condition: bool, message: str, **details: Any) -> None:
    """Raise `InvariantError` when `condition` is false; the house replacement for `assert`."""
    if not condition:
        raise InvariantError(message, **details)


def fail_invariant(message: str, **details: Any) -> NoReturn:
    """Raise `InvariantError` unconditionally (for unreachable branches)."""
    raise InvariantError(message, **details)


def iter_error_classes() -> list[type[AppError]]:
    """Every subclass of `AppError` currently imported, depth first (for tests and docs)."""
    found: list[type[AppError]] = []
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
