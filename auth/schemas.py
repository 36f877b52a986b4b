"""Wire models of the identity API (requests and answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from auth.constants import PASSWORD_LENGTH_MAX

EMAIL_FIELD_MAX = 320
CODE_FIELD_MAX = 32
TOKEN_FIELD_MAX = 4096


def refuse_nul(value: Any) -> Any:
    """Text with U+0000 is refused (422), in a field or a list of them: PostgreSQL's text
    cannot store or compare it, so a stored or looked-up field (a passkey's or a client's name,
    an OAuth client id) would otherwise fail in the database, after the handler had begun."""
    texts = value if isinstance(value, list) else (value,)
    if any(isinstance(text, str) and "\x00" in text for text in texts):
        raise ValueError("text may not contain the NUL character (U+0000)")
    return value


# For form and query parameters: `Annotated[str, Form(max_length=...), NO_NUL]`.
NO_NUL: Final = AfterValidator(refuse_nul)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)


class RegisterIn(_Request):
    """`POST /register`."""

    email: str = Field(max_length=EMAIL_FIELD_MAX)
    # A generous wire bound: the policy counts code points after NFKC and names the rule.
    password: str = Field(max_length=PASSWORD_LENGTH_MAX * 4)
    phone_number: str | None = Field(default=None, max_length=32)


class RegisteredOut(BaseModel):
    """The same answer whether the address was new or taken."""

    email: str
    status: Literal["verification_required"] = "verification_required"


class VerifyEmailIn(_Request):
    """`POST /verify-email`."""

    email: str = Field(max_length=EMAIL_FIELD_MAX)
    code: str = Field(min_length=1, max_length=CODE_FIELD_MAX)


class EmailIn(_Request):
    """A request naming only an address."""

    email: str = Field(max_length=EMAIL_FIELD_MAX)


class LoginIn(_Request):
    """`POST /login` (the seed's shape)."""

    email: str = Field(max_length=EMAIL_FIELD_MAX)
    password: str = Field(max_length=PASSWORD_LENGTH_MAX * 4)
    mfa_code: str | None = Field(default=None, max_length=CODE_FIELD_MAX)


class AuthTokenOut(BaseModel):
    """The seed's AuthToken."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6750 scheme name
    scope: list[str]


class RefreshIn(_Request):
    """`POST /refresh`."""

    refresh_token: str = Field(min_length=1, max_length=TOKEN_FIELD_MAX)


class MfaVerifyIn(_Request):
    """`POST /mfa/verify`."""

    mfa_token: str = Field(min_length=1, max_length=TOKEN_FIELD_MAX)
    method: Literal["totp", "sms", "email", "backup_code"]
    code: str = Field(min_length=1, max_length=CODE_FIELD_MAX)


class MfaSendIn(_Request):
    """`POST /mfa/sms/send` and `/mfa/email/send`."""

    mfa_token: str = Field(min_length=1, max_length=TOKEN_FIELD_MAX)


class SentOut(BaseModel):
    """Where a code went (masked)."""

    sent_to: str


class MfaChallengeOut(BaseModel):
    """A step-up challenge."""

    mfa_token: str
    methods: list[str]


class TotpEnrollOut(BaseModel):
    """What an authenticator app needs."""

    secret: str
    otpauth_uri: str


class CodeIn(_Request):
    """A code confirming an enrolment."""

    code: str = Field(min_length=1, max_length=CODE_FIELD_MAX)


class SmsEnrollIn(_Request):
    """`POST /mfa/sms/enroll`."""

    phone_number: str | None = Field(default=None, max_length=32)


class BackupCodesOut(BaseModel):
    """Ten single-use codes, shown once."""

    codes: list[str]


class FactorOut(BaseModel):
    """An enrolled factor."""

    method: str
    is_enabled: bool
    is_primary: bool
    created_at: datetime
    last_used_at: datetime | None
    destination: str | None


class FactorsOut(BaseModel):
    """The user's factors."""

    factors: list[FactorOut]
    backup_codes_remaining: int


class WebAuthnRegisterIn(_Request):
    """`POST /mfa/webauthn/register/verify`."""

    credential: dict[str, Any]
    name: str = Field(default="Passkey", min_length=1, max_length=100)


class WebAuthnOptionsIn(_Request):
    """`POST /mfa/webauthn/authenticate/options`."""

    mfa_token: str = Field(min_length=1, max_length=TOKEN_FIELD_MAX)


class WebAuthnAuthenticateIn(_Request):
    """`POST /mfa/webauthn/authenticate/verify`."""

    mfa_token: str = Field(min_length=1, max_length=TOKEN_FIELD_MAX)
    credential: dict[str, Any]


class SessionOut(BaseModel):
    """The seed's UserSession."""

    session_id: str
    user_id: str
    ip_address: str | None
    user_agent: str | None
    created_at: datetime
    expires_at: datetime
    is_current: bool
    client_id: str | None


class SessionsOut(BaseModel):
    """The user's live sessions."""

    sessions: list[SessionOut]


class RevokedOut(BaseModel):
    """How many sessions ended."""

    revoked: int


class ResetConfirmIn(_Request):
    """`POST /password/reset/confirm`."""

    email: str = Field(max_length=EMAIL_FIELD_MAX)
    code: str = Field(min_length=1, max_length=CODE_FIELD_MAX)
    new_password: str = Field(max_length=PASSWORD_LENGTH_MAX * 4)


class PasswordChangeIn(_Request):
    """`POST /password/change`."""

    current_password: str = Field(max_length=PASSWORD_LENGTH_MAX * 4)
    new_password: str = Field(max_length=PASSWORD_LENGTH_MAX * 4)


class AcceptedOut(BaseModel):
    """A request accepted with nothing to say (no enumeration)."""

    status: Literal["accepted"] = "accepted"


class ClientIn(_Request):
    """`POST /oauth/clients` (administrators)."""

    name: str = Field(min_length=1, max_length=100)
    redirect_uris: list[str] = Field(min_length=1, max_length=10)
    scopes: list[str] = Field(min_length=1, max_length=10)
    is_confidential: bool = True
    is_first_party: bool = False


class ClientOut(BaseModel):
    """A registered client; the secret appears only here, once."""

    client_id: str
    client_secret: str | None


class OutboxMessageOut(BaseModel):
    """A message the local provider recorded."""

    id: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    created_at: datetime


class OutboxOut(BaseModel):
    """Recorded messages, newest first."""

    messages: list[OutboxMessageOut]
