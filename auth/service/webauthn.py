"""WebAuthn / passkeys: the "biometric" factor, with the `webauthn` (py_webauthn) package.

A mobile app's Face ID / Touch ID unlocks a platform authenticator's private key; the server
sees only signatures. Registration needs a signed-in user; the challenge is kept in Redis for
`WEBAUTHN_CHALLENGE_TTL_S` and used once. An assertion finishes a login's MFA challenge: the
WebAuthn challenge is attached to that `mfa_token`, user verification is required (the
biometric itself), and the signature counter must advance when the authenticator keeps one.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from auth.audit import record_event
from auth.challenges import Attempt
from auth.constants import WEBAUTHN_CHALLENGE_TTL_S, WEBAUTHN_CREDENTIALS_MAX, WEBAUTHN_TIMEOUT_MS
from auth.dependencies import AuthDependencies
from auth.errors import AccountDisabledError, InvalidMfaCodeError, WebAuthnVerificationError
from auth.models import AuthEvent, IssuedTokens, MfaMethod, Outcome, RequestContext
from auth.repository import mfa as repository
from auth.service.mfa import (
    active_account,
    attempt_refusal,
    complete_challenge,
    open_challenge,
    upgraded_tokens,
)
from users.models import User


def _origins(deps: AuthDependencies) -> list[str]:
    return [o.strip() for o in deps.settings.auth_webauthn_origins.split(",") if o.strip()]


async def registration_options(
    conn: asyncpg.Connection, deps: AuthDependencies, *, user: User
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions for the browser or app."""
    existing = await repository.list_credentials(conn, user.id)
    if len(existing) >= WEBAUTHN_CREDENTIALS_MAX:
        raise WebAuthnVerificationError("too many security keys are registered")
    options = generate_registration_options(
        rp_id=deps.settings.auth_webauthn_rp_id,
        rp_name=deps.settings.auth_webauthn_rp_name,
        user_name=user.email,
        user_id=user.id.bytes,
        timeout=WEBAUTHN_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=bytes(row["credential_id"])) for row in existing
        ],
    )
    await deps.challenges.remember_webauthn(user.id, options.challenge, WEBAUTHN_CHALLENGE_TTL_S)
    parsed: dict[str, Any] = orjson.loads(options_to_json(options))
    return parsed


async def verify_registration(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user: User,
    credential: dict[str, Any],
    name: str,
    session_id: str,
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Store a new credential and enable the biometric factor; an upgraded session."""
    account = await active_account(conn, user.id)
    if account is None:
        return Outcome(error=AccountDisabledError())
    user = account
    challenge = await deps.challenges.take_webauthn(user.id)
    if challenge is None:
        return Outcome(error=WebAuthnVerificationError("the registration challenge expired"))
    try:
        parsed = parse_registration_credential_json(credential)
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=deps.settings.auth_webauthn_rp_id,
            expected_origin=_origins(deps),
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise WebAuthnVerificationError() from exc
    # The transports are the client's hint, outside the signature: only the values WebAuthn
    # names are kept (the parser drops the rest), once each, in the order given.
    transports = list(dict.fromkeys(t.value for t in parsed.response.transports or ()))
    try:
        await repository.insert_credential(
            conn,
            user_id=user.id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            name=name,
        )
    except asyncpg.UniqueViolationError as exc:
        # A credential id names one key of one account (the column is unique); the browser's
        # excludeCredentials is only advice, so a repeated registration ends here, as a refusal.
        raise WebAuthnVerificationError("this security key is already registered") from exc
    await repository.upsert_pending_factor(
        conn,
        user_id=user.id,
        method=MfaMethod.BIOMETRIC.value,
        secret_key=None,
        phone_number=None,
        email_address=None,
    )
    await repository.enable_factor(
        conn, user_id=user.id, method=MfaMethod.BIOMETRIC.value, now=deps.clock.now()
    )
    await record_event(
        conn,
        AuthEvent.MFA_ENROLLED,
        user_id=user.id,
        factor="biometric",
        credential=bytes_to_base64url(verified.credential_id)[:16],
    )
    tokens = await upgraded_tokens(
        conn, deps, user=user, method=MfaMethod.BIOMETRIC, ctx=ctx, replaces_session=session_id
    )
    return Outcome(value=tokens)


async def authentication_options(
    conn: asyncpg.Connection, deps: AuthDependencies, *, mfa_token: str
) -> Outcome[dict[str, Any]]:
    """PublicKeyCredentialRequestOptions for a pending login's challenge."""
    challenge = await open_challenge(conn, deps, mfa_token)
    if challenge is None or MfaMethod.BIOMETRIC.value not in challenge.methods:
        return Outcome(error=InvalidMfaCodeError())
    rows = await repository.list_credentials(conn, challenge.user_id)
    options = generate_authentication_options(
        rp_id=deps.settings.auth_webauthn_rp_id,
        timeout=WEBAUTHN_TIMEOUT_MS,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=bytes(r["credential_id"])) for r in rows
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    if not await deps.challenges.remember(
        challenge, "webauthn", bytes_to_base64url(options.challenge)
    ):
        return Outcome(error=InvalidMfaCodeError())  # consumed meanwhile
    parsed: dict[str, Any] = orjson.loads(options_to_json(options))
    return Outcome(value=parsed)


async def verify_authentication(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    mfa_token: str,
    credential: dict[str, Any],
    ctx: RequestContext,
) -> Outcome[IssuedTokens]:
    """Finish a login with a WebAuthn assertion."""
    challenge = await open_challenge(conn, deps, mfa_token)
    if (
        challenge is None
        or MfaMethod.BIOMETRIC.value not in challenge.methods
        or challenge.webauthn_challenge is None
    ):
        return Outcome(error=InvalidMfaCodeError())
    attempt = await deps.challenges.count_attempt(challenge)
    if attempt is not Attempt.COUNTED:
        return Outcome(error=attempt_refusal(attempt))
    is_valid = await _check_assertion(
        conn,
        deps,
        user_id=challenge.user_id,
        credential=credential,
        expected_challenge=base64url_to_bytes(challenge.webauthn_challenge),
    )
    return await complete_challenge(
        conn, deps, challenge=challenge, method=MfaMethod.BIOMETRIC, is_valid=is_valid, ctx=ctx
    )


async def _check_assertion(
    conn: asyncpg.Connection,
    deps: AuthDependencies,
    *,
    user_id: uuid.UUID,
    credential: dict[str, Any],
    expected_challenge: bytes,
) -> bool:
    try:
        raw_id = base64url_to_bytes(str(credential["rawId"]))
    except (KeyError, ValueError, TypeError):
        return False
    row = await repository.lock_credential(conn, user_id=user_id, credential_id=raw_id)
    if row is None:
        return False
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_rp_id=deps.settings.auth_webauthn_rp_id,
            expected_origin=_origins(deps),
            credential_public_key=bytes(row["public_key"]),
            credential_current_sign_count=int(row["sign_count"]),
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        return False
    await repository.update_sign_count(
        conn, row["id"], sign_count=verified.new_sign_count, now=deps.clock.now()
    )
    return True
