"""Errors of the identity domain.

```
UnauthorizedError (401)
  InvalidCredentialsError     AUTH_INVALID_CREDENTIALS   unknown email, wrong password, locked
  InvalidTokenError           AUTH_INVALID_TOKEN         (auth/tokens.py) an access token failed
  MfaRequiredError            AUTH_MFA_REQUIRED          details: mfa_token, methods
  InvalidMfaCodeError         AUTH_INVALID_MFA_CODE
  InvalidRefreshTokenError    AUTH_INVALID_REFRESH_TOKEN unknown, used, expired or revoked
  SessionRevokedError         AUTH_SESSION_REVOKED       the token's session is gone
  MfaStepUpRequiredError      AUTH_MFA_STEP_UP_REQUIRED  a fresh second factor is needed (RFC 9470)
ForbiddenError (403)
  EmailNotVerifiedError       AUTH_EMAIL_NOT_VERIFIED
  AccountDisabledError        AUTH_ACCOUNT_DISABLED      an administrator disabled sign-in
  AdminRequiredError          AUTH_ADMIN_REQUIRED
ValidationError (422)
  WeakPasswordError           AUTH_WEAK_PASSWORD         details: rule
  InvalidCodeError            AUTH_INVALID_CODE          a verification or reset code failed
  MfaNotEnrolledError         AUTH_MFA_NOT_ENROLLED
  WebAuthnVerificationError   AUTH_WEBAUTHN_FAILED
NotFoundError (404)
  FactorNotFoundError         AUTH_FACTOR_NOT_FOUND
  SessionNotFoundError        AUTH_SESSION_NOT_FOUND
ConflictError (409)
  FactorAlreadyEnrolledError  AUTH_FACTOR_ALREADY_ENROLLED
RateLimitedError (429)
  AuthRateLimitedError        AUTH_RATE_LIMITED          details: retry_after_s, policy
  LoginThrottledError         AUTH_LOGIN_THROTTLED       a progressive delay after failures
DomainError (400)
  OAuthError                  AUTH_OAUTH_ERROR           details: error (RFC 6749 code)
DependencyError (503)
  PasswordHasherBusyError     AUTH_HASHER_BUSY
  MessageDeliveryError        AUTH_MESSAGE_UNDELIVERED   a provider refused or failed
```

Messages never say which of email and password was wrong, nor whether an account exists.
"""

from __future__ import annotations

from typing import ClassVar

from kit.errors import (
    ConflictError,
    DependencyError,
    DomainError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)


class InvalidCredentialsError(UnauthorizedError):
    """The email and password do not match an active account (or it is locked)."""

    code: ClassVar[str] = "AUTH_INVALID_CREDENTIALS"
    default_message: ClassVar[str] = "The email or password is incorrect."


class MfaRequiredError(UnauthorizedError):
    """The password was right; a second factor must follow (`details.mfa_token`)."""

    code: ClassVar[str] = "AUTH_MFA_REQUIRED"
    default_message: ClassVar[str] = "A second factor is required to finish signing in."


class InvalidMfaCodeError(UnauthorizedError):
    """The second factor did not verify."""

    code: ClassVar[str] = "AUTH_INVALID_MFA_CODE"
    default_message: ClassVar[str] = "The second factor could not be verified."


class InvalidRefreshTokenError(UnauthorizedError):
    """The refresh token is unknown, already used, expired or revoked."""

    code: ClassVar[str] = "AUTH_INVALID_REFRESH_TOKEN"
    default_message: ClassVar[str] = "The refresh token is not valid."


class SessionRevokedError(UnauthorizedError):
    """The access token's session has ended (logout, revocation, idle timeout)."""

    code: ClassVar[str] = "AUTH_SESSION_REVOKED"
    default_message: ClassVar[str] = "The session has ended; sign in again."


class EmailNotVerifiedError(ForbiddenError):
    """The account exists and the password is right, but the email is not verified yet."""

    code: ClassVar[str] = "AUTH_EMAIL_NOT_VERIFIED"
    default_message: ClassVar[str] = "Verify your email address before signing in."


class AccountDisabledError(ForbiddenError):
    """The password is right, but an administrator disabled sign-in for this account."""

    code: ClassVar[str] = "AUTH_ACCOUNT_DISABLED"
    default_message: ClassVar[str] = "This account is disabled; contact support."


class MfaStepUpRequiredError(UnauthorizedError):
    """The action needs a session with a recently verified second factor (RFC 9470: 401 with
    an `insufficient_user_authentication` challenge)."""

    code: ClassVar[str] = "AUTH_MFA_STEP_UP_REQUIRED"
    default_message: ClassVar[str] = "Verify a second factor to continue."

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value the renderer sends."""
        max_age = self.details.get("max_age_s")
        suffix = f", max_age={int(max_age)}" if isinstance(max_age, int) else ""
        return f'Bearer error="insufficient_user_authentication", acr_values="mfa"{suffix}'


class AdminRequiredError(ForbiddenError):
    """Only administrators may do this."""

    code: ClassVar[str] = "AUTH_ADMIN_REQUIRED"
    default_message: ClassVar[str] = "Administrator access is required."


class WeakPasswordError(ValidationError):
    """The password breaks a rule of the policy; `details.rule` names it."""

    code: ClassVar[str] = "AUTH_WEAK_PASSWORD"
    default_message: ClassVar[str] = "The password does not meet the password policy."


class InvalidCodeError(ValidationError):
    """A verification or reset code is wrong, used or expired."""

    code: ClassVar[str] = "AUTH_INVALID_CODE"
    default_message: ClassVar[str] = "The code is not valid."


class MfaNotEnrolledError(ValidationError):
    """The requested factor is not enrolled (or not confirmed) for this user."""

    code: ClassVar[str] = "AUTH_MFA_NOT_ENROLLED"
    default_message: ClassVar[str] = "This second factor is not set up."


class WebAuthnVerificationError(ValidationError):
    """A WebAuthn registration or assertion did not verify."""

    code: ClassVar[str] = "AUTH_WEBAUTHN_FAILED"
    default_message: ClassVar[str] = "The security key response could not be verified."


class FactorNotFoundError(NotFoundError):
    """No such factor for this user."""

    code: ClassVar[str] = "AUTH_FACTOR_NOT_FOUND"
    default_message: ClassVar[str] = "The factor was not found."


class SessionNotFoundError(NotFoundError):
    """No such session for this user."""

    code: ClassVar[str] = "AUTH_SESSION_NOT_FOUND"
    default_message: ClassVar[str] = "The session was not found."


class FactorAlreadyEnrolledError(ConflictError):
    """The factor is already set up; remove it first."""

    code: ClassVar[str] = "AUTH_FACTOR_ALREADY_ENROLLED"
    default_message: ClassVar[str] = "This second factor is already set up."


class SelfLockError(ConflictError):
    """An administrator asked to lock their own account."""

    code: ClassVar[str] = "AUTH_ADMIN_SELF_LOCK"
    default_message: ClassVar[str] = (
        "An administrator cannot lock their own account; another administrator can."
    )


class AuthRateLimitedError(RateLimitedError):
    """An authentication rate limit refused the request."""

    code: ClassVar[str] = "AUTH_RATE_LIMITED"
    default_message: ClassVar[str] = "Too many attempts; retry later."


class LoginThrottledError(RateLimitedError):
    """Recent failures on this account impose a short wait before the next attempt."""

    code: ClassVar[str] = "AUTH_LOGIN_THROTTLED"
    default_message: ClassVar[str] = "Too many failed attempts; wait before trying again."


class OAuthError(DomainError):
    """An OAuth 2.0 protocol error; `details.error` is the RFC 6749 error code."""

    code: ClassVar[str] = "AUTH_OAUTH_ERROR"
    status: ClassVar[int] = 400
    default_message: ClassVar[str] = "The OAuth request is not valid."


class PasswordHasherBusyError(DependencyError):
    """Too many password hashes are waiting for a worker."""

    code: ClassVar[str] = "AUTH_HASHER_BUSY"
    default_message: ClassVar[str] = "Too many sign-ins at once; retry in a moment."
    retry_after_s: ClassVar[int] = 1


class MessageDeliveryError(DependencyError):
    """An SMS or email provider failed or refused the message."""

    code: ClassVar[str] = "AUTH_MESSAGE_UNDELIVERED"
    default_message: ClassVar[str] = "The message could not be sent; retry later."
