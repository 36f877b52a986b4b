"""OAuth 2.0 (`/oauth/*` at the root of the API host), discovery, JWKS and the dev outbox.

The OAuth endpoints answer in the protocol's own shapes: tokens as RFC 6749 JSON with
`Cache-Control: no-store`, errors as `{"error", "error_description"}` (400, or 401 for
`invalid_client`), as OAuth client libraries expect; every other route answers problem+json.
They live at the root (`/oauth/authorize`, `/oauth/token`, ...) beside `/.well-known`, where
OAuth clients and the discovery document look for them.
"""

import base64
import binascii
from typing import Annotated, Any, Final

import asyncpg
from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.responses import JSONResponse, RedirectResponse

from auth.constants import OAUTH_SCOPES, OUTBOX_PAGE_MAX
from auth.endpoints.common import Edge, Principal, problem_responses, request_context
from auth.errors import (
    AdminRequiredError,
    AuthRateLimitedError,
    MfaStepUpRequiredError,
    OAuthError,
    SessionRevokedError,
)
from auth.models import IssuedTokens, Outcome
from auth.repository import outbox as outbox_repository
from auth.schemas import NO_NUL, ClientIn, ClientOut, OutboxMessageOut, OutboxOut
from auth.service import oauth
from auth.tokens import InvalidTokenError
from users import service as users

CLIENT_ID_MAX: Final = 64
CLIENT_SECRET_MAX: Final = 200
SCOPE_FIELD_MAX: Final = 500  # far above every scope we define, spelt out together
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "RFC 6749 error: `{error, error_description}`"},
    401: {"description": "`invalid_client`: client authentication failed"},
}


def _oauth_json(error: OAuthError) -> JSONResponse:
    body = {
        "error": error.details.get("error", "invalid_request"),
        "error_description": error.message,
    }
    headers = dict(_NO_STORE)
    if error.status == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return JSONResponse(body, status_code=error.status, headers=headers)


def _client_credentials(
    request: Request, client_id: str | None, client_secret: str | None
) -> tuple[str | None, str | None]:
    """The client's id and secret, from HTTP Basic or from the form (one method per request)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return client_id, client_secret
    try:
        decoded = base64.b64decode(value.strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    basic_id, _, basic_secret = decoded.partition(":")
    if client_secret is not None or client_id not in (None, basic_id):
        # RFC 6749 section 2.3: one method per request. A form `client_id` naming the same
        # client is tolerated, as some libraries repeat it beside Basic.
        raise OAuthError("use one client authentication method", error="invalid_request")
    if "\x00" in decoded or len(basic_id) > CLIENT_ID_MAX or len(basic_secret) > CLIENT_SECRET_MAX:
        return None, None  # no client has such credentials: invalid_client, as a bad secret
    return basic_id, basic_secret


def _token_json(tokens: IssuedTokens) -> JSONResponse:
    body: dict[str, Any] = {
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "refresh_token": tokens.refresh_token,
        "scope": " ".join(tokens.scope),
    }
    if tokens.id_token is not None:
        body["id_token"] = tokens.id_token
    return JSONResponse(body, headers=_NO_STORE)


def oauth_router(edge: Edge) -> APIRouter:
    """`/oauth/*` and `/api/v1/auth/oauth/clients`."""
    deps = edge.deps
    router = APIRouter(tags=["oauth"])

    @router.get(
        "/oauth/authorize",
        status_code=status.HTTP_302_FOUND,
        summary="Authorization endpoint (code + PKCE S256); the user's bearer token authorises",
        responses={
            302: {"description": "Redirect to the client's redirect_uri with `code` or `error`"},
            **problem_responses(
                InvalidTokenError, SessionRevokedError, MfaStepUpRequiredError, OAuthError
            ),
        },
        response_class=RedirectResponse,
    )
    async def authorize(
        *,
        principal: Annotated[Principal, Depends(edge.with_mfa)],
        request: Request,
        response_type: Annotated[str, Query(max_length=20)],
        client_id: Annotated[str, Query(max_length=CLIENT_ID_MAX)],
        redirect_uri: Annotated[str, Query(max_length=2000)],
        scope: Annotated[str, Query(max_length=SCOPE_FIELD_MAX)] = "openid",
        state: Annotated[str | None, Query(max_length=500)] = None,
        code_challenge: Annotated[str | None, Query(max_length=128)] = None,
        code_challenge_method: Annotated[str | None, Query(max_length=10)] = None,
        nonce: Annotated[str | None, Query(max_length=255)] = None,
    ) -> RedirectResponse:
        authorization = oauth.AuthorizationRequest(
            response_type=response_type,
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            nonce=nonce,
        )
        location = await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: oauth.authorize(
                conn, deps, request=authorization, claims=principal.claims
            ),
        )
        return RedirectResponse(location, status_code=status.HTTP_302_FOUND, headers=_NO_STORE)

    @router.post(
        "/oauth/token",
        summary="Token endpoint: authorization_code (with PKCE) and refresh_token grants",
        # The refresh policy's 429 is a problem document like every other rate limit: RFC 6749
        # defines no error for it.
        responses={**_OAUTH_ERRORS, **problem_responses(AuthRateLimitedError)},
    )
    async def token(
        *,
        request: Request,
        grant_type: Annotated[str, Form(min_length=1, max_length=50), NO_NUL],
        code: Annotated[str | None, Form(max_length=200), NO_NUL] = None,
        redirect_uri: Annotated[str | None, Form(max_length=2000), NO_NUL] = None,
        code_verifier: Annotated[str | None, Form(max_length=128), NO_NUL] = None,
        refresh_token: Annotated[str | None, Form(max_length=200), NO_NUL] = None,
        scope: Annotated[str | None, Form(max_length=SCOPE_FIELD_MAX), NO_NUL] = None,
        client_id: Annotated[str | None, Form(max_length=CLIENT_ID_MAX), NO_NUL] = None,
        client_secret: Annotated[str | None, Form(max_length=CLIENT_SECRET_MAX), NO_NUL] = None,
    ) -> JSONResponse:
        ctx = request_context(request)

        async def grant(conn: asyncpg.Connection) -> Outcome[IssuedTokens]:
            client = await oauth.authenticate_client(
                conn, client_id=given_id, client_secret=given_secret
            )
            if grant_type == "authorization_code":
                return await oauth.exchange_code(
                    conn,
                    deps,
                    client=client,
                    code=code or "",
                    redirect_uri=redirect_uri,
                    code_verifier=code_verifier,
                    ctx=ctx,
                )
            if grant_type == "refresh_token":
                return await oauth.refresh_grant(
                    conn, deps, client=client, token=refresh_token or "", scope=scope
                )
            return Outcome(
                error=OAuthError("unsupported grant_type", error="unsupported_grant_type")
            )

        try:
            given_id, given_secret = _client_credentials(request, client_id, client_secret)
            await edge.limit(deps.limits.refresh, [f"ip-{ctx.ip}"])
            tokens = await edge.run(ctx, None, grant)
        except OAuthError as exc:
            return _oauth_json(exc)
        return _token_json(tokens)

    @router.post(
        "/oauth/revoke",
        summary="RFC 7009 token revocation (answers 200 whatever the token was)",
        responses=_OAUTH_ERRORS,
    )
    async def revoke(
        *,
        request: Request,
        token: Annotated[str, Form(min_length=1, max_length=4096), NO_NUL],
        token_type_hint: Annotated[str | None, Form(max_length=50), NO_NUL] = None,
        client_id: Annotated[str | None, Form(max_length=CLIENT_ID_MAX), NO_NUL] = None,
        client_secret: Annotated[str | None, Form(max_length=CLIENT_SECRET_MAX), NO_NUL] = None,
    ) -> JSONResponse:
        del token_type_hint  # both kinds are looked up; the hint only orders the search

        async def run(conn: asyncpg.Connection) -> None:
            client = await oauth.authenticate_client(
                conn, client_id=given_id, client_secret=given_secret
            )
            await oauth.revoke(conn, deps, client=client, token=token)

        try:
            given_id, given_secret = _client_credentials(request, client_id, client_secret)
            await edge.run_plain(request_context(request), None, run)
        except OAuthError as exc:
            return _oauth_json(exc)
        return JSONResponse({}, headers=_NO_STORE)

    @router.post(
        "/oauth/introspect",
        summary="RFC 7662 token introspection for resource servers (client authentication)",
        responses=_OAUTH_ERRORS,
    )
    async def introspect(
        *,
        request: Request,
        token: Annotated[str, Form(min_length=1, max_length=4096), NO_NUL],
        token_type_hint: Annotated[str | None, Form(max_length=50), NO_NUL] = None,
        client_id: Annotated[str | None, Form(max_length=CLIENT_ID_MAX), NO_NUL] = None,
        client_secret: Annotated[str | None, Form(max_length=CLIENT_SECRET_MAX), NO_NUL] = None,
    ) -> JSONResponse:
        del token_type_hint

        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            client = await oauth.authenticate_client(
                conn, client_id=given_id, client_secret=given_secret
            )
            if client["client_secret_hash"] is None:
                raise oauth.OAuthClientError(
                    "public clients may not introspect", error="invalid_client"
                )
            return await oauth.introspect(conn, deps, client=client, token=token)

        try:
            given_id, given_secret = _client_credentials(request, client_id, client_secret)
            answer = await edge.run_plain(request_context(request), None, run)
        except OAuthError as exc:
            return _oauth_json(exc)
        return JSONResponse(answer, headers=_NO_STORE)

    @router.get(
        "/oauth/userinfo",
        summary="OpenID Connect UserInfo",
        responses=problem_responses(InvalidTokenError, SessionRevokedError),
    )
    async def userinfo(principal: Annotated[Principal, Depends(edge.principal)]) -> dict[str, Any]:
        async with deps.db.connection() as conn:
            user = await users.get_user(conn, principal.user_id)
        return {"sub": str(user.id), "email": user.email, "email_verified": user.is_verified}

    @router.post(
        "/api/v1/auth/oauth/clients",
        status_code=status.HTTP_201_CREATED,
        tags=["admin"],
        summary="Register an OAuth client (administrators); the secret is shown once",
        responses=problem_responses(
            InvalidTokenError, MfaStepUpRequiredError, AdminRequiredError, OAuthError
        ),
    )
    async def register_client(
        body: ClientIn, principal: Annotated[Principal, Depends(edge.admin)], request: Request
    ) -> ClientOut:
        registered = await edge.run_plain(
            request_context(request),
            principal.user_id,
            lambda conn: oauth.register_client(
                conn,
                name=body.name,
                redirect_uris=body.redirect_uris,
                scopes=body.scopes,
                is_confidential=body.is_confidential,
                is_first_party=body.is_first_party,
                admin_id=principal.user_id,
            ),
        )
        return ClientOut(client_id=registered.client_id, client_secret=registered.client_secret)

    return router


def well_known_router(edge: Edge) -> APIRouter:
    """`/.well-known/jwks.json` and `/.well-known/openid-configuration`."""
    deps = edge.deps
    router = APIRouter(prefix="/.well-known", tags=["discovery"])
    issuer = deps.settings.auth_issuer

    @router.get("/jwks.json", summary="The published signing keys (RFC 7517)")
    async def jwks() -> JSONResponse:
        return JSONResponse(deps.verifier.jwks(), headers={"Cache-Control": "public, max-age=60"})

    @router.get("/openid-configuration", summary="OpenID Connect discovery")
    async def openid_configuration() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth/authorize",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "userinfo_endpoint": f"{issuer}/oauth/userinfo",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(OAUTH_SCOPES),
            "claims_supported": ["sub", "email", "email_verified", "auth_time", "amr", "acr"],
            "authorization_response_iss_parameter_supported": True,
        }

    return router


def dev_router(edge: Edge) -> APIRouter:
    """`GET /api/v1/dev/outbox` (mounted in development mode only)."""
    deps = edge.deps
    router = APIRouter(prefix="/api/v1/dev", tags=["development"])

    @router.get("/outbox", summary="Messages the local SMS/email provider recorded (development)")
    async def outbox(
        to: Annotated[str | None, Query(max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=OUTBOX_PAGE_MAX)] = OUTBOX_PAGE_MAX,
    ) -> OutboxOut:
        async with deps.db.connection() as conn:
            rows = await outbox_repository.list_messages(conn, recipient=to, limit=limit)
        return OutboxOut(
            messages=[
                OutboxMessageOut(
                    id=str(r["id"]),
                    channel=r["channel"],
                    recipient=r["recipient"],
                    subject=r["subject"],
                    body=r["body"],
                    created_at=r["created_at"],
                )
                for r in rows
            ]
        )

    return router
