"""Internal types of the identity domain: frozen records and the enums they use."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from kit.errors import AppError, fail_invariant

T = TypeVar("T")


class MfaMethod(StrEnum):
    """Second factors; `biometric` is WebAuthn (a platform authenticator unlocked by a face or
    fingerprint), `backup_code` a single-use recovery code."""

    TOTP = "totp"
    SMS = "sms"
    EMAIL = "email"
    BIOMETRIC = "biometric"
    BACKUP_CODE = "backup_code"


# RFC 8176 authentication method references for each factor.
AMR_OF: dict[MfaMethod, str] = {
    MfaMethod.TOTP: "otp",
    MfaMethod.SMS: "sms",
    MfaMethod.EMAIL: "otp",
    MfaMethod.BIOMETRIC: "hwk",
    MfaMethod.BACKUP_CODE: "otp",
}


class AuthEvent(StrEnum):
    """Every audited authentication event (audit_log.new_values.event)."""

    REGISTERED = "auth.registered"
    EMAIL_VERIFIED = "auth.email_verified"
    LOGIN_SUCCEEDED = "auth.login_succeeded"
    LOGIN_FAILED = "auth.login_failed"
    LOCKED_OUT = "auth.locked_out"
    MFA_CHALLENGED = "auth.mfa_challenged"
    MFA_FAILED = "auth.mfa_failed"
    MFA_ENROLLED = "auth.mfa_enrolled"
    MFA_REMOVED = "auth.mfa_removed"
    BACKUP_CODES_ISSUED = "auth.backup_codes_issued"
    BACKUP_CODE_USED = "auth.backup_code_used"
    STEP_UP = "auth.step_up"
    REFRESHED = "auth.refreshed"
    REFRESH_REUSE_DETECTED = "auth.refresh_reuse_detected"
    LOGOUT = "auth.logout"
    SESSION_REVOKED = "auth.session_revoked"
    PASSWORD_RESET_REQUESTED = "auth.password_reset_requested"  # noqa: S105 - an event name, not a secret
    PASSWORD_RESET = "auth.password_reset"  # noqa: S105 - an event name, not a secret
    PASSWORD_CHANGED = "auth.password_changed"  # noqa: S105 - an event name, not a secret
    PASSWORD_REHASHED = "auth.password_rehashed"  # noqa: S105 - an event name, not a secret
    KEY_ROTATED = "auth.key_rotated"
    OAUTH_CLIENT_REGISTERED = "auth.oauth_client_registered"
    OAUTH_CODE_ISSUED = "auth.oauth_code_issued"
    OAUTH_TOKEN_REVOKED = "auth.oauth_token_revoked"  # noqa: S105 - an event name, not a secret
    ACCOUNT_LOCKED = "auth.account_locked"
    ACCOUNT_UNLOCKED = "auth.account_unlocked"


class CodePurpose(StrEnum):
    """What a one-time code proves (auth_codes.purpose)."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - an event name, not a secret
    ENROLL_SMS = "enroll_sms"
    ENROLL_EMAIL = "enroll_email"


class RevokeReason(StrEnum):
    """Why a refresh family ended (auth_refresh_families.revoked_reason)."""

    LOGOUT = "logout"
    REUSE_DETECTED = "reuse_detected"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an event name, not a secret
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an event name, not a secret
    SESSION_REVOKED = "session_revoked"
    CLIENT_REVOKED = "client_revoked"
    STEP_UP = "step_up"
    CODE_REPLAYED = "code_replayed"
    ADMIN = "admin"
    SESSION_CAP = "session_cap"  # the oldest session ended to keep its user within the cap


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where a request comes from, for audit rows, sessions and rate limits."""

    ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class AuthGrant:
    """What a successful authentication establishes, before tokens are minted."""

    user_id: uuid.UUID
    amr: tuple[str, ...]
    auth_time: datetime
    scope: tuple[str, ...]
    client_id: str | None = None

    @property
    def has_mfa(self) -> bool:
        """True when a second factor was verified."""
        return "mfa" in self.amr

    @property
    def acr(self) -> str:
        """The assurance level: aal2 with a second factor, aal1 without."""
        return "aal2" if self.has_mfa else "aal1"


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """The seed's AuthToken, plus the session it belongs to."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: tuple[str, ...]
    session_id: str
    family_id: uuid.UUID | None = None
    id_token: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """An SMS or email to send once the transaction that produced it has committed."""

    channel: str  # "sms" | "email"
    recipient: str
    body: str
    subject: str | None = None


@dataclass(slots=True)
class Outcome(Generic[T]):
    """A service result whose refusal must still commit (audit rows, counters, revocations).

    The edge runs the service in a transaction, lets it commit, then calls `unwrap()`, which
    raises the refusal or returns the value; messages are sent after the commit.
    """

    value: T | None = None
    error: AppError | None = None
    messages: list[OutboundMessage] = field(default_factory=list)

    def unwrap(self) -> T:
        """The value, or raise the refusal."""
        if self.error is not None:
            raise self.error
        if self.value is None:
            fail_invariant("an Outcome holds neither a value nor an error")
        return self.value
