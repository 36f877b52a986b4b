"""Second factors (`/api/v1/auth/mfa`): enrol, challenge, verify, list, remove."""

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request, status

from auth.endpoints.account import token_out
from auth.endpoints.common import Edge, Principal, problem_responses, request_context
from auth.errors import (
    AccountDisabledError,
    AuthRateLimitedError,
    FactorAlreadyEnrolledError,
    FactorNotFoundError,
    InvalidCodeError,
    InvalidMfaCodeError,
    MessageDeliveryError,
    MfaNotEnrolledError,
    MfaStepUpRequiredError,
    SessionRevokedError,
    WebAuthnVerificationError,
)
from auth.models import MfaMethod, Outcome
from auth.schemas import (
    AuthTokenOut,
    BackupCodesOut,
    CodeIn,
    FactorOut,
    FactorsOut,
    MfaChallengeOut,
    MfaSendIn,
    MfaVerifyIn,
    SentOut,
    SmsEnrollIn,
    TotpEnrollOut,
    WebAuthnAuthenticateIn,
    WebAuthnOptionsIn,
    WebAuthnRegisterIn,
)
from auth.service import mfa, webauthn
from auth.tokens import InvalidTokenError
from users import service as users
from users.errors import InvalidPhoneError

_AUTHENTICATED = (InvalidTokenError, SessionRevokedError)
# Adding a factor: once the account has one, only a session that verified one may.
_ENROLLING = (*_AUTHENTICATED, MfaStepUpRequiredError)


def mfa_router(edge: Edge) -> APIRouter:  # noqa: PLR0915 - one closure per route
    """The MFA routes."""
    deps = edge.deps
    router = APIRouter(prefix="/api/v1/auth/mfa", tags=["mfa"])

    async def mfa_limit(request: Request, key: str) -> None:
        ctx = request_context(request)
        await edge.limit(deps.limits.mfa_verify, [f"ip-{ctx.ip}", key])

    async def challenge_limit(request: Request, mfa_token: str) -> None:
        # Per account, as the seed asks: the challenge names the user it was issued for.
        challenge = await deps.challenges.find(mfa_token)
        key = f"user-{challenge.user_id}" if challenge else "user-unknown-challenge"
        await mfa_limit(request, key)

    @router.post(
        "/verify",
        summary="Finish a login (or step-up) with a TOTP, SMS, email or backup code",
        responses=problem_responses(
            InvalidMfaCodeError, AuthRateLimitedError, AccountDisabledError, SessionRevokedError
        ),
    )
    async def verify(body: MfaVerifyIn, request: Request) -> AuthTokenOut:
        await challenge_limit(request, body.mfa_token)
        ctx = request_context(request)
        tokens = await edge.run(
            ctx,
            None,
            lambda conn: mfa.finish_challenge(
                conn,
                deps,
                mfa_token=body.mfa_token,
                method=MfaMethod(body.method),
                code=body.code,
                ctx=ctx,
            ),
        )
        return token_out(tokens)

    @router.post(
        "/challenge",
        summary="Start a step-up: a new mfa_token for the signed-in user",
        responses=problem_responses(*_AUTHENTICATED, MfaNotEnrolledError),
    )
    async def challenge(
        principal: Annotated[Principal, Depends(edge.account_holder)], request: Request
    ) -> MfaChallengeOut:
        async def start(conn: asyncpg.Connection) -> Outcome[MfaChallengeOut]:
            methods = await mfa.enabled_methods(conn, principal.user_id)
            if not methods:
                return Outcome(error=MfaNotEnrolledError())
            token = await deps.challenges.create(
                user_id=principal.user_id, methods=methods, replaces_session=principal.claims.sid
            )
            return Outcome(value=MfaChallengeOut(mfa_token=token, methods=list(methods)))

        return await edge.run(request_context(request), principal.user_id, start)

    for method in (MfaMethod.SMS, MfaMethod.EMAIL):
        _add_send_route(router, edge, method)

    @router.post(
        "/totp/enroll",
        summary="Start TOTP enrolment: a secret and an otpauth:// URI for the app",
        responses=problem_responses(*_ENROLLING, FactorAlreadyEnrolledError),
    )
    async def totp_enroll(
        principal: Annotated[Principal, Depends(edge.enroller)], request: Request
    ) -> TotpEnrollOut:
        async def start(conn: asyncpg.Connection) -> TotpEnrollOut:
            user = await users.get_user(conn, principal.user_id)
            enrolment = await mfa.enroll_totp(conn, deps, user=user)
            return TotpEnrollOut(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)

        return await edge.run_plain(request_context(request), principal.user_id, start)

    @router.post(
        "/totp/confirm",
        summary="Confirm TOTP with a first code; answers with an upgraded session",
        responses=problem_responses(
            *_ENROLLING, InvalidMfaCodeError, AuthRateLimitedError, AccountDisabledError
        ),
    )
    async def totp_confirm(
        body: CodeIn,
        principal: Annotated[Principal, Depends(edge.enroller)],
        request: Request,
    ) -> AuthTokenOut:
        await mfa_limit(request, f"user-{principal.user_id}")
        ctx = request_context(request)

        async def confirm(conn: asyncpg.Connection) -> Outcome[Any]:
            user = await users.get_user(conn, principal.user_id)
            return await mfa.confirm_totp(
                conn, deps, user=user, code=body.code, session_id=principal.claims.sid, ctx=ctx
            )

        return token_out(await edge.run(ctx, principal.user_id, confirm))

    @router.post(
        "/sms/enroll",
        summary="Start SMS enrolment: a code goes to the number",
        responses=problem_responses(
            *_ENROLLING, InvalidPhoneError, FactorAlreadyEnrolledError, MessageDeliveryError
        ),
    )
    async def sms_enroll(
        body: SmsEnrollIn,
        principal: Annotated[Principal, Depends(edge.enroller)],
        request: Request,
    ) -> SentOut:
        return await _enroll(edge, principal, request, MfaMethod.SMS, body.phone_number)

    @router.post(
        "/email/enroll",
        summary="Start email-code enrolment: a code goes to the account's address",
        responses=problem_responses(*_ENROLLING, FactorAlreadyEnrolledError, MessageDeliveryError),
    )
    async def email_enroll(
        principal: Annotated[Principal, Depends(edge.enroller)], request: Request
    ) -> SentOut:
        return await _enroll(edge, principal, request, MfaMethod.EMAIL, None)

    for method in (MfaMethod.SMS, MfaMethod.EMAIL):
        _add_confirm_route(router, edge, method)

    @router.post(
        "/backup-codes",
        summary="Issue 10 single-use backup codes (the previous set stops working)",
        responses=problem_responses(*_AUTHENTICATED, MfaStepUpRequiredError),
    )
    async def backup_codes(
        principal: Annotated[Principal, Depends(edge.with_mfa)], request: Request
    ) -> BackupCodesOut:
        codes = await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: mfa.regenerate_backup_codes(conn, deps, user_id=principal.user_id),
        )
        return BackupCodesOut(codes=codes)

    @router.get(
        "/factors",
        summary="The caller's second factors",
        responses=problem_responses(*_AUTHENTICATED),
    )
    async def factors(principal: Annotated[Principal, Depends(edge.account_holder)]) -> FactorsOut:
        async with deps.db.connection() as conn:
            found, remaining = await mfa.list_factors(conn, principal.user_id)
        return FactorsOut(
            factors=[
                FactorOut(
                    method=f.method,
                    is_enabled=f.is_enabled,
                    is_primary=f.is_primary,
                    created_at=f.created_at,
                    last_used_at=f.last_used_at,
                    destination=f.destination,
                )
                for f in found
            ],
            backup_codes_remaining=remaining,
        )

    @router.delete(
        "/factors/{method}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove a factor (needs a second factor verified in the last 5 minutes)",
        responses=problem_responses(*_AUTHENTICATED, MfaStepUpRequiredError, FactorNotFoundError),
    )
    async def remove(
        method: MfaMethod,
        principal: Annotated[Principal, Depends(edge.with_fresh_mfa)],
        request: Request,
    ) -> None:
        await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: mfa.remove_factor(conn, deps, user_id=principal.user_id, method=method),
        )

    @router.post(
        "/webauthn/register/options",
        summary="WebAuthn registration options (a passkey or platform biometric)",
        responses=problem_responses(*_ENROLLING, WebAuthnVerificationError),
    )
    async def webauthn_register_options(
        principal: Annotated[Principal, Depends(edge.enroller)],
    ) -> dict[str, Any]:
        async with deps.db.connection() as conn:
            user = await users.get_user(conn, principal.user_id)
            return await webauthn.registration_options(conn, deps, user=user)

    @router.post(
        "/webauthn/register/verify",
        summary="Register the credential; answers with an upgraded session",
        responses=problem_responses(*_ENROLLING, WebAuthnVerificationError, AccountDisabledError),
    )
    async def webauthn_register_verify(
        body: WebAuthnRegisterIn,
        principal: Annotated[Principal, Depends(edge.enroller)],
        request: Request,
    ) -> AuthTokenOut:
        ctx = request_context(request)

        async def register(conn: asyncpg.Connection) -> Outcome[Any]:
            user = await users.get_user(conn, principal.user_id)
            return await webauthn.verify_registration(
                conn,
                deps,
                user=user,
                credential=body.credential,
                name=body.name,
                session_id=principal.claims.sid,
                ctx=ctx,
            )

        return token_out(await edge.run(ctx, principal.user_id, register))

    @router.post(
        "/webauthn/authenticate/options",
        summary="WebAuthn assertion options for a pending login",
        responses=problem_responses(InvalidMfaCodeError),
    )
    async def webauthn_authenticate_options(
        body: WebAuthnOptionsIn, request: Request
    ) -> dict[str, Any]:
        return await edge.run(
            request_context(request),
            None,
            lambda conn: webauthn.authentication_options(conn, deps, mfa_token=body.mfa_token),
        )

    @router.post(
        "/webauthn/authenticate/verify",
        summary="Finish a login with a WebAuthn assertion",
        responses=problem_responses(
            InvalidMfaCodeError, AuthRateLimitedError, AccountDisabledError, SessionRevokedError
        ),
    )
    async def webauthn_authenticate_verify(
        body: WebAuthnAuthenticateIn, request: Request
    ) -> AuthTokenOut:
        await challenge_limit(request, body.mfa_token)
        ctx = request_context(request)
        tokens = await edge.run(
            ctx,
            None,
            lambda conn: webauthn.verify_authentication(
                conn, deps, mfa_token=body.mfa_token, credential=body.credential, ctx=ctx
            ),
        )
        return token_out(tokens)

    return router


async def _enroll(
    edge: Edge, principal: Principal, request: Request, method: MfaMethod, phone: str | None
) -> SentOut:
    deps = edge.deps

    async def start(conn: asyncpg.Connection) -> Outcome[str]:
        user = await users.get_user(conn, principal.user_id)
        return await mfa.enroll_oob(conn, deps, user=user, method=method, phone_number=phone)

    sent_to = await edge.run(request_context(request), principal.user_id, start)
    return SentOut(sent_to=sent_to)


def _add_send_route(router: APIRouter, edge: Edge, method: MfaMethod) -> None:
    deps = edge.deps

    @router.post(
        f"/{method.value}/send",
        summary=f"Send a {method.value} code for a pending login or step-up",
        responses=problem_responses(InvalidMfaCodeError, MfaNotEnrolledError, MessageDeliveryError),
        name=f"send_{method.value}_code",
    )
    async def send(body: MfaSendIn, request: Request) -> SentOut:
        sent_to = await edge.run(
            request_context(request),
            None,
            lambda conn: mfa.send_challenge_code(
                conn, deps, mfa_token=body.mfa_token, method=method
            ),
        )
        return SentOut(sent_to=sent_to)


def _add_confirm_route(router: APIRouter, edge: Edge, method: MfaMethod) -> None:
    deps = edge.deps

    @router.post(
        f"/{method.value}/confirm",
        summary=f"Confirm {method.value} enrolment with the code; an upgraded session",
        responses=problem_responses(
            *_ENROLLING, InvalidCodeError, AuthRateLimitedError, AccountDisabledError
        ),
        name=f"confirm_{method.value}",
    )
    async def confirm(
        body: CodeIn,
        principal: Annotated[Principal, Depends(edge.enroller)],
        request: Request,
    ) -> AuthTokenOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.mfa_verify, [f"ip-{ctx.ip}", f"user-{principal.user_id}"])

        async def run(conn: asyncpg.Connection) -> Outcome[Any]:
            user = await users.get_user(conn, principal.user_id)
            return await mfa.confirm_oob(
                conn,
                deps,
                user=user,
                method=method,
                code=body.code,
                session_id=principal.claims.sid,
                ctx=ctx,
            )

        return token_out(await edge.run(ctx, principal.user_id, run))
