"""Second factors: enrolment, challenges, verification, backup codes, listing and removal.

* TOTP: a 160-bit secret, sealed in user_mfa.secret_key (context `user_mfa.secret_key:<user>`),
  confirmed by a first code; codes are accepted once (a replay guard per user).
* SMS and email: a 6-digit code to the enrolled number or address; at enrolment the code lives
  in auth_codes, during a login it lives (hashed) on the MFA challenge.
* Backup codes: 10 single-use codes, only their HMACs stored; regenerating replaces the set.
* WebAuthn ("biometric"): `auth/service/webauthn.py`.

Confirming a factor proves possession, so it answers with a new session (a new id, `amr`
with "mfa"), and the session it came from ends; so does a step-up.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from auth.audit import record_event
from auth.challenges import Attempt, Challenge, password_binding
from auth.constants import (
    BACKUP_CODE_COUNT,
    BACKUP_CODE_INPUT_LENGTH_MAX,
    FIRST_PARTY_SCOPES,
    MFA_CHALLENGE_SENDS_MAX,
)
from auth.dependencies import AuthDependencies
from auth.errors import (
    AccountDisabledError,
    FactorAlreadyEnrolledError,
    FactorNotFoundError,
    InvalidCodeError,
    InvalidMfaCodeError,
    MfaNotEnrolledError,
    SessionRevokedError,
)
from auth.models import (
    AMR_OF,
    AuthEvent,
    AuthGrant,
    CodePurpose,
    IssuedTokens,
    MfaMethod,
    OutboundMessage,
    Outcome,
    RequestContext,
    RevokeReason,
)
from auth.otp import (
    base32_secret,
    canonical_backup_code,
    code_digest,
    match_totp,
    new_backup_code,
    new_numeric_code,
    new_totp_secret,
    provisioning_uri,
)
from auth.repository import mfa as repository
from auth.service.codes import check_code, issue_code
from auth.service.sessions import end_session, issue_tokens
from kit.errors import fail_invariant
from users import service as users
from users.models import User


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """What an authenticator app needs."""

    secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class Factor:
    """One enrolled factor, as the user sees it."""

    method: str
    is_enabled: bool
    is_primary: bool
    created_at: datetime
    last_used_at: datetime | None
    destination: str | None = None  # masked phone or address


def _secret_context(user_id: uuid.UUID) -> str:
    return f"user_mfa.secret_key:{user_id}"


def _mask(value: str | None) -> str | None:
    if value is None:
        return None
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"***{value[-4:]}"


async def enabled_methods(conn: asyncpg.Connection, user_id: uuid.UUID) -> tuple[str, ...]:
    """The methods that can finish a login, in a stable order."""
    rows = await repository.list_factors(conn, user_id)
    methods = [row["method"] for row in rows if row["is_enabled"]]
    if methods and await repository.count_backup_codes(conn, user_id) > 0:
        methods.append(MfaMethod.BACKUP_CODE.value)
    return tuple(methods)


async def list_factors(conn: asyncpg.Connection, user_id: uuid.UUID) -> tuple[list[Factor], int]:
    """The user's factors and how many unused backup codes remain."""
    rows = await repository.list_factors(conn, user_id)
    factors = [
        Factor(
            method=row["method"],
            is_enabled=bool(row["is_enabled"]),
            is_primary=bool(row["is_primary"]),
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            destination=_mask(row["phone_number"] or row["email_address"]),
        )
        for row in rows
    ]
    return factors, await repository.count_backup_codes(conn, user_id)


async def enroll_totp(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user: User
) -> TotpEnrolment:
    """Start (or restart) TOTP enrolment: a new secret, unconfirmed until a code comes back."""
    existing = await repository.find_factor(conn, user.id, MfaMethod.TOTP.value)
    if existing is not None and existing["is_enabled"]:
        raise FactorAlreadyEnrolledError(method="totp")
    secret = new_totp_secret()
    sealed = deps.cipher.encrypt(secret, context=_secret_context(user.id))
    await repository.upsert_pending_factor(
        conn,
        user_id=user.id,
        method=MfaMethod.TOTP.value,
        secret_key=sealed,
        phone_number=None,
        email_address=None,
    )
    return TotpEnrolment(base32_secret(secret), provisioning_uri(secret, account=user.email))


async def _check_totp(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    code: str,
    is_enabled_required: bool,
) -> bool:
    row = await repository.find_factor(conn, user_id, MfaMethod.TOTP.value)
    if row is None or row["secret_key"] is None or bool(row["is_enabled"]) != is_enabled_required:
        return False
    secret = deps.cipher.decrypt(row["secret_key"], context=_secret_context(user_id))
    step = match_totp(secret, code.strip(), deps.clock.now())
    return step is not None and await deps.challenges.advance_totp_step(user_id, step)


async def _hold_backup_code(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, code: str
) -> uuid.UUID | None:
    """The id of the unused backup code `code`, locked for this transaction but not spent."""
    if len(code) > BACKUP_CODE_INPUT_LENGTH_MAX:
        return None
    digest = code_digest(
        deps.pepper, purpose="backup_code", subject=str(user_id), code=canonical_backup_code(code)
    )
    return await repository.lock_backup_code(conn, user_id=user_id, code_hash=digest)


async def _spend_backup_code(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, code_id: uuid.UUID
) -> None:
    """Use up a held backup code and record it."""
    if not await repository.spend_backup_code(conn, code_id, now=deps.clock.now()):
        fail_invariant("a held backup code was spent by another transaction")
    left = await repository.count_backup_codes(conn, user_id)
    await record_event(
        conn, AuthEvent.BACKUP_CODE_USED, user_id=user_id, factor="backup_code", remaining=left
    )


async def _check_backup_code(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, code: str
) -> bool:
    code_id = await _hold_backup_code(conn, deps, user_id=user_id, code=code)
    if code_id is None:
        return False
    await _spend_backup_code(conn, deps, user_id=user_id, code_id=code_id)
    return True


async def active_account(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The account, read under a share lock held until the transaction ends, or None when it
    may not sign in. A factor confirmation answers with a new session: an administrator's lock
    committed since its request was checked is read here, and one still to come waits for this
    transaction and then ends the session it opened."""
    user = await users.get_user_for_sign_in(conn, user_id)
    return user if user.is_active else None


async def upgraded_tokens(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    method: MfaMethod,
    ctx: RequestContext,
    replaces_session: str | None,
) -> IssuedTokens:
    """A new session with "mfa" in amr; the session it replaces ends."""
    if replaces_session is not None:
        await end_session(
            conn, deps, user_id=user.id, session_id=replaces_session, reason=RevokeReason.STEP_UP
        )
    grant = AuthGrant(
        user_id=user.id,
        amr=("pwd", AMR_OF[method], "mfa"),
        auth_time=deps.clock.now(),
        scope=FIRST_PARTY_SCOPES,
    )
    return await issue_tokens(conn, deps, user=user, grant=grant, ctx=ctx)


async def confirm_totp(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    code: str,
    session_id: str,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Confirm TOTP with a first code; answers with an upgraded session."""
    account = await active_account(conn, user.id)
    if account is None:
        return Outcome(error=AccountDisabledError())
    user = account
    if not await _check_totp(conn, deps, user_id=user.id, code=code, is_enabled_required=False):
        return Outcome(error=InvalidMfaCodeError())
    await _enable(conn, deps, user=user, method=MfaMethod.TOTP)
    tokens = await upgraded_tokens(
        conn, deps, user=user, method=MfaMethod.TOTP, ctx=ctx, replaces_session=session_id
    )
    return Outcome(value=tokens)


async def _enable(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user: User, method: MfaMethod
) -> None:
    await repository.enable_factor(conn, user_id=user.id, method=method.value, now=deps.clock.now())
    await record_event(conn, AuthEvent.MFA_ENROLLED, user_id=user.id, factor=method.value)


async def enroll_oob(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    method: MfaMethod,
    phone_number: str | None,
) -> Outcome[str]:
    """Start SMS or email enrolment: a code goes to the number or the account's address."""
    existing = await repository.find_factor(conn, user.id, method.value)
    if existing is not None and existing["is_enabled"]:
        raise FactorAlreadyEnrolledError(method=method.value)
    if method is MfaMethod.SMS:
        destination = users.normalise_phone(phone_number or user.phone_number or "")
        purpose = CodePurpose.ENROLL_SMS
    else:
        destination, purpose = user.email, CodePurpose.ENROLL_EMAIL
    await repository.upsert_pending_factor(
        conn,
        user_id=user.id,
        method=method.value,
        secret_key=None,
        phone_number=destination if method is MfaMethod.SMS else None,
        email_address=destination if method is MfaMethod.EMAIL else None,
    )
    code = await issue_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=purpose,
        destination=destination,
        now=deps.clock.now(),
    )
    message = _code_message(method, destination, code)
    return Outcome(value=_mask(destination) or "", messages=[message])


def _code_message(method: MfaMethod, destination: str, code: str) -> OutboundMessage:
    body = f"Your DwayBank security code is {code}. It expires in 10 minutes."
    if method is MfaMethod.SMS:
        return OutboundMessage(channel="sms", recipient=destination, body=body)
    return OutboundMessage(
        channel="email", recipient=destination, subject="Your DwayBank security code", body=body
    )


async def confirm_oob(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    method: MfaMethod,
    code: str,
    session_id: str,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Confirm SMS or email enrolment with the code sent; answers with an upgraded session."""
    account = await active_account(conn, user.id)
    if account is None:
        return Outcome(error=AccountDisabledError())
    user = account
    purpose = CodePurpose.ENROLL_SMS if method is MfaMethod.SMS else CodePurpose.ENROLL_EMAIL
    now = deps.clock.now()
    result = await check_code(
        conn, pepper=deps.pepper, user_id=user.id, purpose=purpose, code=code, now=now
    )
    if not result.is_valid:
        return Outcome(error=InvalidCodeError())
    if method is MfaMethod.SMS and result.destination is not None:
        await users.mark_phone_verified(conn, user.id, result.destination, now)
    await _enable(conn, deps, user=user, method=method)
    tokens = await upgraded_tokens(
        conn, deps, user=user, method=method, ctx=ctx, replaces_session=session_id
    )
    return Outcome(value=tokens)


async def regenerate_backup_codes(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID
) -> list[str]:
    """A new set of backup codes (the old set stops working); shown once."""
    codes = [new_backup_code() for _ in range(BACKUP_CODE_COUNT)]
    digests = [
        code_digest(
            deps.pepper, purpose="backup_code", subject=str(user_id), code=canonical_backup_code(c)
        )
        for c in codes
    ]
    await repository.replace_backup_codes(
        conn, user_id=user_id, code_hashes=digests, now=deps.clock.now()
    )
    await record_event(conn, AuthEvent.BACKUP_CODES_ISSUED, user_id=user_id, count=len(codes))
    return codes


async def remove_factor(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user_id: uuid.UUID, method: MfaMethod
) -> None:
    """Remove a factor (the edge has checked for a fresh second factor)."""
    if method is MfaMethod.BACKUP_CODE:
        if await repository.count_backup_codes(conn, user_id) == 0:
            raise FactorNotFoundError(method=method.value)
        await repository.delete_backup_codes(conn, user_id)
    else:
        if not await repository.delete_factor(conn, user_id=user_id, method=method.value):
            raise FactorNotFoundError(method=method.value)
        if method is MfaMethod.BIOMETRIC:
            await repository.delete_credentials(conn, user_id)
    await record_event(conn, AuthEvent.MFA_REMOVED, user_id=user_id, factor=method.value)


async def verify_code_factor(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    method: MfaMethod,
    code: str,
    challenge: Challenge | None,
) -> bool:
    """Check a TOTP, backup, SMS or email code for a login or step-up.

    A backup code that matches is spent at once: this is for the one-step login, which has no
    challenge to lose; a challenge holds the code and spends it only once it has won
    (`finish_challenge`).
    """
    if method is MfaMethod.TOTP:
        return await _check_totp(conn, deps, user_id=user_id, code=code, is_enabled_required=True)
    if method is MfaMethod.BACKUP_CODE:
        return await _check_backup_code(conn, deps, user_id=user_id, code=code)
    if challenge is None:
        return False
    stored = challenge.sms_code if method is MfaMethod.SMS else challenge.email_code
    if stored is None:
        return False
    expected = code_digest(
        deps.pepper,
        purpose=f"challenge_{method.value}",
        subject=challenge.digest,
        code=code.strip(),
    ).hex()
    return hmac.compare_digest(stored, expected)


def _is_bound_to(deps: AuthDependencies, challenge: Challenge, password_hash: str | None) -> bool:
    """False for a login challenge issued against another password hash than `password_hash`
    (the password was reset or changed since); step-up challenges are bound to their session."""
    if challenge.password_binding is None:
        return True
    if password_hash is None:
        return False
    expected = password_binding(deps.pepper, challenge.user_id, password_hash)
    return hmac.compare_digest(challenge.password_binding, expected)


async def open_challenge(
    conn: asyncpg.Connection, deps: AuthDependencies, mfa_token: str
) -> Challenge | None:
    """The live challenge of `mfa_token`; None when it is gone, or when it is a login
    challenge of a password replaced since (it is ended here, answering as an unknown one)."""
    challenge = await deps.challenges.find(mfa_token)
    if challenge is None or challenge.password_binding is None:
        return challenge
    if _is_bound_to(deps, challenge, await repository.lock_password_hash(conn, challenge.user_id)):
        return challenge
    await deps.challenges.consume(challenge)
    return None


async def send_challenge_code(
    conn: asyncpg.Connection, deps: AuthDependencies, *, mfa_token: str, method: MfaMethod
) -> Outcome[str]:
    """Send an SMS or email code for a pending challenge; the masked destination."""
    challenge = await open_challenge(conn, deps, mfa_token)
    if challenge is None or method.value not in challenge.methods:
        return Outcome(error=InvalidMfaCodeError())
    sends = await deps.challenges.count_send(challenge)
    if sends is None:  # consumed meanwhile
        return Outcome(error=InvalidMfaCodeError())
    if sends > MFA_CHALLENGE_SENDS_MAX:
        return Outcome(error=InvalidMfaCodeError("too many codes were sent for this sign-in"))
    row = await repository.find_factor(conn, challenge.user_id, method.value)
    if row is None or not row["is_enabled"]:
        return Outcome(error=MfaNotEnrolledError())
    destination = str(row["phone_number"] if method is MfaMethod.SMS else row["email_address"])
    code = new_numeric_code()
    digest = code_digest(
        deps.pepper, purpose=f"challenge_{method.value}", subject=challenge.digest, code=code
    ).hex()
    field = "sms_code" if method is MfaMethod.SMS else "email_code"
    if not await deps.challenges.remember(challenge, field, digest):
        return Outcome(error=InvalidMfaCodeError())  # consumed meanwhile: nothing is sent
    return Outcome(
        value=_mask(destination) or "", messages=[_code_message(method, destination, code)]
    )


async def finish_challenge(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    mfa_token: str,
    method: MfaMethod,
    code: str,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Verify the second factor of a pending login or step-up and open its session."""
    challenge = await open_challenge(conn, deps, mfa_token)
    if challenge is None or method.value not in challenge.methods:
        return Outcome(error=InvalidMfaCodeError())
    attempt = await deps.challenges.count_attempt(challenge)
    if attempt is not Attempt.COUNTED:
        return Outcome(error=attempt_refusal(attempt))
    if method is MfaMethod.BACKUP_CODE:
        # Held, not spent: of two attempts racing on one challenge only the one that ends the
        # challenge spends its code; the other keeps it for a later sign-in.
        held = await _hold_backup_code(conn, deps, user_id=challenge.user_id, code=code)
        return await complete_challenge(
            conn,
            deps,
            challenge=challenge,
            method=method,
            is_valid=held is not None,
            ctx=ctx,
            backup_code_id=held,
        )
    is_valid = await verify_code_factor(
        conn, deps, user_id=challenge.user_id, method=method, code=code, challenge=challenge
    )
    return await complete_challenge(
        conn, deps, challenge=challenge, method=method, is_valid=is_valid, ctx=ctx
    )


def attempt_refusal(attempt: Attempt) -> InvalidMfaCodeError:
    """The answer to a guess at a challenge that cannot take it."""
    if attempt is Attempt.EXHAUSTED:
        return InvalidMfaCodeError("too many attempts; sign in again")
    return InvalidMfaCodeError()  # gone: answered as an unknown challenge


async def complete_challenge(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    challenge: Challenge,
    method: MfaMethod,
    is_valid: bool,
    ctx: RequestContext,
    backup_code_id: uuid.UUID | None = None,
) -> Outcome[IssuedTokens]:
    """Turn a verified (or refused) second factor into a session (or an audited refusal).

    A backup code arrives held (`backup_code_id`, its row locked) and is spent here, only by
    the attempt that ended the challenge and only when a session follows.
    """
    user_id = challenge.user_id
    if not is_valid:
        await record_event(conn, AuthEvent.MFA_FAILED, user_id=user_id, factor=method.value)
        return Outcome(error=InvalidMfaCodeError())
    if (method is MfaMethod.BACKUP_CODE) != (backup_code_id is not None):
        fail_invariant("a backup code must be held exactly when it finishes a challenge")
    if not await deps.challenges.consume(challenge):
        return Outcome(error=InvalidMfaCodeError())
    # The challenge may outlive what it was issued for: the password it proved can be reset or
    # changed, an administrator can lock the account, and the session to step up can end
    # (signed out, revoked) within its five minutes. The hash is read under a share lock, so a
    # reset committing meanwhile either waits for this session (and ends it) or is seen here.
    if not _is_bound_to(deps, challenge, await repository.lock_password_hash(conn, user_id)):
        return Outcome(error=InvalidMfaCodeError())
    user = await users.get_user(conn, user_id)
    if not user.is_active:
        return Outcome(error=AccountDisabledError())
    if challenge.replaces_session is not None:
        live = await deps.sessions.get_owned(challenge.replaces_session, str(user_id))
        if live is None:
            return Outcome(error=SessionRevokedError())
    if backup_code_id is not None:
        await _spend_backup_code(conn, deps, user_id=user_id, code_id=backup_code_id)
    else:
        await repository.touch_factor(
            conn, user_id=user_id, method=method.value, now=deps.clock.now()
        )
    tokens = await upgraded_tokens(
        conn, deps, user=user, method=method, ctx=ctx, replaces_session=challenge.replaces_session
    )
    event = AuthEvent.STEP_UP if challenge.replaces_session else AuthEvent.LOGIN_SUCCEEDED
    await record_event(
        conn, event, user_id=user_id, factor=method.value, session_id=tokens.session_id
    )
    return Outcome(value=tokens)
