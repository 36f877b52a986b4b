"""Registration, login, refresh, logout, sessions and passwords (`/api/v1/auth`)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from auth.endpoints.common import Edge, Principal, problem_responses, request_context
from auth.errors import (
    AuthRateLimitedError,
    EmailNotVerifiedError,
    InvalidCodeError,
    InvalidCredentialsError,
    InvalidMfaCodeError,
    InvalidRefreshTokenError,
    LoginThrottledError,
    MessageDeliveryError,
    MfaRequiredError,
    MfaStepUpRequiredError,
    SessionNotFoundError,
    SessionRevokedError,
    WeakPasswordError,
)
from auth.lockout import account_key
from auth.models import IssuedTokens, RevokeReason
from auth.schemas import (
    AcceptedOut,
    AuthTokenOut,
    EmailIn,
    LoginIn,
    PasswordChangeIn,
    RefreshIn,
    RegisteredOut,
    RegisterIn,
    ResetConfirmIn,
    RevokedOut,
    SessionOut,
    SessionsOut,
    VerifyEmailIn,
)
from auth.service import login as login_service
from auth.service import recovery, registration
from auth.service import sessions as session_service
from auth.tokens import InvalidTokenError
from users.errors import InvalidEmailError, InvalidPhoneError
from users.service import normalise_email


def token_out(tokens: IssuedTokens) -> AuthTokenOut:
    """The seed's AuthToken of issued tokens."""
    return AuthTokenOut(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        scope=list(tokens.scope),
    )


def _account(email: str) -> str:
    try:
        return account_key(normalise_email(email))
    except InvalidEmailError:
        return account_key(email.strip().lower()[:320])


def account_router(edge: Edge) -> APIRouter:
    """The account routes."""
    deps = edge.deps
    router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

    @router.post(
        "/register",
        status_code=status.HTTP_201_CREATED,
        summary="Open an account (inactive until the email is verified)",
        responses=problem_responses(
            WeakPasswordError,
            InvalidEmailError,
            InvalidPhoneError,
            AuthRateLimitedError,
            MessageDeliveryError,
        ),
    )
    async def register(body: RegisterIn, request: Request) -> RegisteredOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.register, [f"ip-{ctx.ip}"])
        application = await registration.prepare(
            deps, email=body.email, password=body.password, phone_number=body.phone_number
        )
        done = await edge.run(
            ctx, None, lambda conn: registration.register(conn, deps, application=application)
        )
        return RegisteredOut(email=done.email)

    @router.post(
        "/verify-email",
        summary="Activate the account with the emailed code",
        responses=problem_responses(InvalidCodeError, InvalidEmailError, AuthRateLimitedError),
    )
    async def verify_email(body: VerifyEmailIn, request: Request) -> AcceptedOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.verify_email, [f"ip-{ctx.ip}", _account(body.email)])
        await edge.run(
            ctx,
            None,
            lambda conn: registration.verify_email(conn, deps, email=body.email, code=body.code),
        )
        return AcceptedOut()

    @router.post(
        "/verify-email/resend",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Send a new verification code (answers the same for any address)",
        responses=problem_responses(InvalidEmailError, AuthRateLimitedError, MessageDeliveryError),
    )
    async def resend(body: EmailIn, request: Request) -> AcceptedOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.register, [f"ip-{ctx.ip}", _account(body.email)])
        await edge.run(
            ctx, None, lambda conn: registration.resend_verification(conn, deps, email=body.email)
        )
        return AcceptedOut()

    @router.post(
        "/login",
        summary="Sign in with email and password (and a TOTP or backup code)",
        responses=problem_responses(
            InvalidCredentialsError,
            MfaRequiredError,
            InvalidMfaCodeError,
            EmailNotVerifiedError,
            LoginThrottledError,
            AuthRateLimitedError,
        ),
    )
    async def login(body: LoginIn, request: Request) -> AuthTokenOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.login, [f"ip-{ctx.ip}", _account(body.email)])
        check = await login_service.check_password(deps, email=body.email, password=body.password)
        tokens = await edge.run(
            ctx,
            None,
            lambda conn: login_service.login(
                conn, deps, check=check, password=body.password, mfa_code=body.mfa_code, ctx=ctx
            ),
        )
        return token_out(tokens)

    @router.post(
        "/refresh",
        summary="Rotate a refresh token for a new access token",
        responses=problem_responses(InvalidRefreshTokenError, AuthRateLimitedError),
    )
    async def refresh(body: RefreshIn, request: Request) -> AuthTokenOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.refresh, [f"ip-{ctx.ip}"])
        tokens = await edge.run(
            ctx, None, lambda conn: session_service.refresh(conn, deps, token=body.refresh_token)
        )
        return token_out(tokens)

    async def end_session(
        request: Request, principal: Principal, session_id: str, reason: RevokeReason
    ) -> None:
        await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: session_service.end_session(
                conn, deps, user_id=principal.user_id, session_id=session_id, reason=reason
            ),
        )

    @router.post(
        "/logout",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="End this session and its refresh tokens",
        responses=problem_responses(InvalidTokenError, SessionRevokedError),
    )
    async def logout(
        principal: Annotated[Principal, Depends(edge.principal)], request: Request
    ) -> None:
        try:
            await end_session(request, principal, principal.claims.sid, RevokeReason.LOGOUT)
        except SessionNotFoundError as exc:
            # Ended by someone else since the check above (an administrator, another device's
            # "end the others"): answered as an ended session is, with no logout of its own.
            raise SessionRevokedError() from exc

    @router.get(
        "/sessions",
        summary="The caller's live sessions",
        responses=problem_responses(InvalidTokenError, SessionRevokedError),
    )
    async def sessions(
        principal: Annotated[Principal, Depends(edge.account_holder)],
    ) -> SessionsOut:
        found = await deps.sessions.list_for(principal.user_id)
        return SessionsOut(
            sessions=[
                SessionOut(
                    session_id=s.session_id,
                    user_id=s.user_id,
                    ip_address=s.ip_address,
                    user_agent=s.user_agent,
                    created_at=s.created_at,
                    expires_at=s.expires_at,
                    is_current=s.session_id == principal.claims.sid,
                    client_id=s.client_id,
                )
                for s in found
            ]
        )

    @router.delete(
        "/sessions/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="End one of the caller's sessions",
        responses=problem_responses(InvalidTokenError, SessionRevokedError, SessionNotFoundError),
    )
    async def revoke_session(
        session_id: str,
        principal: Annotated[Principal, Depends(edge.account_holder)],
        request: Request,
    ) -> None:
        await end_session(request, principal, session_id, RevokeReason.SESSION_REVOKED)

    @router.delete(
        "/sessions",
        summary="End every session of the caller but this one",
        responses=problem_responses(InvalidTokenError, SessionRevokedError),
    )
    async def revoke_others(
        principal: Annotated[Principal, Depends(edge.account_holder)], request: Request
    ) -> RevokedOut:
        ended = await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: session_service.end_other_sessions(
                conn,
                deps,
                user_id=principal.user_id,
                keep_session=principal.claims.sid,
                reason=RevokeReason.SESSION_REVOKED,
            ),
        )
        return RevokedOut(revoked=ended)

    @router.post(
        "/password/reset/request",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Email a reset code (answers the same for any address)",
        responses=problem_responses(InvalidEmailError, AuthRateLimitedError, MessageDeliveryError),
    )
    async def reset_request(body: EmailIn, request: Request) -> AcceptedOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.password_reset, [f"ip-{ctx.ip}", _account(body.email)])
        await edge.run(ctx, None, lambda conn: recovery.request_reset(conn, deps, email=body.email))
        return AcceptedOut()

    @router.post(
        "/password/reset/confirm",
        summary="Set a new password with the emailed code; every session ends",
        responses=problem_responses(InvalidCodeError, WeakPasswordError, AuthRateLimitedError),
    )
    async def reset_confirm(body: ResetConfirmIn, request: Request) -> RevokedOut:
        ctx = request_context(request)
        await edge.limit(deps.limits.verify_email, [f"ip-{ctx.ip}", _account(body.email)])
        done = await edge.run(
            ctx,
            None,
            lambda conn: recovery.confirm_reset(
                conn, deps, email=body.email, code=body.code, new_password=body.new_password
            ),
        )
        return RevokedOut(revoked=done.sessions_ended)

    @router.post(
        "/password/change",
        summary="Change the password; every other session ends",
        responses=problem_responses(
            InvalidTokenError,
            SessionRevokedError,
            MfaStepUpRequiredError,
            InvalidCredentialsError,
            WeakPasswordError,
        ),
    )
    async def change(
        body: PasswordChangeIn,
        principal: Annotated[Principal, Depends(edge.with_mfa)],
        request: Request,
    ) -> RevokedOut:
        done = await edge.run(
            request_context(request),
            principal.user_id,
            lambda conn: recovery.change_password(
                conn,
                deps,
                user_id=principal.user_id,
                session_id=principal.claims.sid,
                current_password=body.current_password,
                new_password=body.new_password,
            ),
        )
        return RevokedOut(revoked=done.sessions_ended)

    return router
