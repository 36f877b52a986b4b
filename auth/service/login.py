"""Password login, with lockout, throttling, rehashing and the hand-off to a second factor.

Unknown email, wrong password and locked account answer identically (the same 401 and the same
body) and in similar time: every path runs one argon2 verification, against the user's hash or
a dummy one. Accounting is keyed by the email's hash whether or not the user exists, so an
unknown address is throttled and locked like a real one. The order:

`check_password` does steps 1-2 without holding a database connection; `login` does the rest
inside the edge's transaction.

1. admission (`LoginGuard.admit_login`): a locked account is refused as invalid credentials
   (after the dummy verification); a progressive delay answers `AUTH_LOGIN_THROTTLED` (429)
   with `Retry-After`;
2. the password is verified off the event loop, and the outcome reported to the guard (the
   fifth failure in the window locks for 30 minutes, audited as `auth.locked_out`);
3. a right password on an unverified account answers `AUTH_EMAIL_NOT_VERIFIED`; a hash made
   with other parameters is rehashed;
4. with factors enrolled, an `mfa_code` (TOTP or backup code) finishes the login at once;
   without one the answer is `AUTH_MFA_REQUIRED` with an `mfa_token` bound to this login (and
   to the password hash it proved: a later reset or change ends it) and the methods that can
   finish it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

from auth.audit import record_event, record_password_refusal
from auth.challenges import password_binding
from auth.constants import FIRST_PARTY_SCOPES
from auth.dependencies import AuthDependencies
from auth.errors import (
    AccountDisabledError,
    EmailNotVerifiedError,
    InvalidCredentialsError,
    InvalidMfaCodeError,
    LoginThrottledError,
    MfaRequiredError,
)
from auth.lockout import account_key
from auth.models import AuthEvent, AuthGrant, IssuedTokens, MfaMethod, Outcome, RequestContext
from auth.passwords import normalise_password
from auth.service.mfa import enabled_methods, verify_code_factor
from auth.service.sessions import issue_tokens
from kit.errors import AppError, fail_invariant
from users import service as users
from users.errors import InvalidEmailError
from users.models import User


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The first half of a login, done before any transaction is opened."""

    user: User | None
    is_right: bool
    refusal: AppError | None = None  # refused before the password was checked
    reason: str | None = None  # why a failure failed, for the audit row
    failures: int = 0
    is_newly_locked: bool = False


async def check_password(deps: AuthDependencies, *, email: str, password: str) -> PasswordCheck:
    """Admission, user lookup and the argon2 verification, holding no connection while hashing.

    A pooled connection is borrowed only for the lookup: a login must never pin one of the
    pool's few connections for the tens of milliseconds a hash (and its queue) takes.
    """
    try:
        normalised = users.normalise_email(email)
    except InvalidEmailError:
        await deps.hasher.verify_dummy(password)
        return PasswordCheck(user=None, is_right=False, refusal=InvalidCredentialsError())
    account = account_key(normalised)
    admission = await deps.guard.admit_login(account)
    async with deps.db.connection() as conn:
        user = await users.find_by_email(conn, normalised)
    if not admission.is_admitted:
        if admission.is_locked:
            await deps.hasher.verify_dummy(password)
            return PasswordCheck(
                user=user, is_right=False, refusal=InvalidCredentialsError(), reason="locked"
            )
        retry_s = max(1, math.ceil(admission.retry_after_s))
        return PasswordCheck(
            user=user, is_right=False, refusal=LoginThrottledError(retry_after_s=retry_s)
        )
    if user is None:
        await deps.hasher.verify_dummy(password)
        is_right = False
    else:
        is_right = await deps.hasher.verify(user.password_hash, password)
    if admission.ticket is None:
        fail_invariant("an admitted login carries no ticket")
    result = await deps.guard.report_login(account, ticket=admission.ticket, is_success=is_right)
    return PasswordCheck(
        user=user,
        is_right=is_right,
        reason=None if is_right else ("unknown_user" if user is None else "wrong_password"),
        failures=result.failures,
        is_newly_locked=result.is_newly_locked,
    )


async def login(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    check: PasswordCheck,
    password: str,
    mfa_code: str | None,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Finish a login whose password was checked: audit, then tokens or an MFA challenge."""
    user = check.user
    user_id = None if user is None else user.id
    if check.reason == "locked" or (check.refusal is None and not check.is_right):
        await record_event(
            conn,
            AuthEvent.LOGIN_FAILED,
            user_id=user_id,
            factor="password",
            reason=check.reason,
            failures=check.failures,
        )
        if check.is_newly_locked:
            await record_event(
                conn,
                AuthEvent.LOCKED_OUT,
                user_id=user_id,
                duration_s=deps.settings.auth_lockout_duration_s,
            )
        return Outcome(error=InvalidCredentialsError())
    if check.refusal is not None:
        return Outcome(error=check.refusal)
    if user is None:
        fail_invariant("a right password without a user")
    return await _after_password(
        conn, deps, user=user, password=password, mfa_code=mfa_code, ctx=ctx
    )


async def _after_password(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    password: str,
    mfa_code: str | None,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    # The hash the password was checked against must still be the account's: a reset or
    # change committed since the check means this password no longer signs in. The account is
    # read again under a share lock, so a reset or a lock arriving now waits for this login
    # (and then ends its session), and the rest is decided on the account as it is now: an
    # administrator's lock committed since the password check refuses this login.
    password_hash = user.password_hash
    current = await users.find_user_for_sign_in(conn, user.id)
    if current is None or current.password_hash != password_hash:
        await record_password_refusal(conn, user.id, reason="password_replaced")
        return Outcome(error=InvalidCredentialsError())
    user = current
    if deps.hasher.needs_rehash(password_hash):
        password_hash = await deps.hasher.hash(normalise_password(password))
        await users.set_password_hash(conn, user.id, password_hash)
        await record_event(conn, AuthEvent.PASSWORD_REHASHED, user_id=user.id)
    if not user.is_verified:
        return Outcome(error=EmailNotVerifiedError())
    if not user.is_active:
        return Outcome(error=AccountDisabledError())
    methods = await enabled_methods(conn, user.id)
    now = deps.clock.now()
    if not methods:
        grant = AuthGrant(user_id=user.id, amr=("pwd",), auth_time=now, scope=FIRST_PARTY_SCOPES)
        tokens = await issue_tokens(conn, deps, user=user, grant=grant, ctx=ctx)
        await record_event(
            conn,
            AuthEvent.LOGIN_SUCCEEDED,
            user_id=user.id,
            factor="password",
            session_id=tokens.session_id,
        )
        return Outcome(value=tokens)
    if mfa_code:
        return await _login_with_code(
            conn, deps, user=user, code=mfa_code, methods=methods, ctx=ctx
        )
    # Bound to the hash the password was checked against: a reset or change that wrote a new
    # one since (even while this login was being checked) leaves the challenge unfinishable.
    token = await deps.challenges.create(
        user_id=user.id,
        methods=methods,
        replaces_session=None,
        password_binding=password_binding(deps.pepper, user.id, password_hash),
    )
    await record_event(
        conn, AuthEvent.MFA_CHALLENGED, user_id=user.id, factor="password", methods=list(methods)
    )
    return Outcome(error=MfaRequiredError(mfa_token=token, methods=list(methods)))


async def _login_with_code(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    code: str,
    methods: tuple[str, ...],
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """The seed's one-step login: the code is a TOTP code, or else a backup code."""
    for method in (MfaMethod.TOTP, MfaMethod.BACKUP_CODE):
        if method.value in methods and await verify_code_factor(
            conn, deps, user_id=user.id, method=method, code=code, challenge=None
        ):
            amr = ("pwd", "otp", "mfa")
            grant = AuthGrant(
                user_id=user.id, amr=amr, auth_time=deps.clock.now(), scope=FIRST_PARTY_SCOPES
            )
            tokens = await issue_tokens(conn, deps, user=user, grant=grant, ctx=ctx)
            await record_event(
                conn,
                AuthEvent.LOGIN_SUCCEEDED,
                user_id=user.id,
                factor=method.value,
                session_id=tokens.session_id,
            )
            return Outcome(value=tokens)
    await record_event(conn, AuthEvent.MFA_FAILED, user_id=user.id, factor="mfa_code")
    return Outcome(error=InvalidMfaCodeError())
