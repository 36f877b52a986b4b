"""API keys: create (the secret shown once), list by owner, revoke."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ledger import apikeys
from ledger.apikeys import KeyVerifier
from ledger.endpoints.common import LedgerDeps, error_responses, json_body, json_response, read_json
from ledger.endpoints.secure_mode import principal_of
from ledger.errors import MalformedRequestError
from ledger.schemas import validate_body
from ledger.surface_errors import (
    ApiKeyInvalidError,
    ApiKeyNotFoundError,
    ApiKeyOwnerRequiredError,
    CrossOwnerAccessError,
    MissingPrincipalError,
    ScopeEscalationError,
)

OWNER_PARAM = "owner"


class ApiKeyIn(BaseModel):
    """POST /api-keys: every field is required, as in Blnk."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=apikeys.NAME_LENGTH_MAX)
    owner: str = Field(max_length=apikeys.OWNER_LENGTH_MAX)
    scopes: list[str] = Field(max_length=apikeys.SCOPES_MAX)
    expires_at: datetime


def api_keys_router(deps: LedgerDeps, verifier: KeyVerifier | None) -> APIRouter:
    """API key routes (the master key, or a key managing its own owner's keys)."""
    router = APIRouter(tags=["api-keys"])
    errors = error_responses(
        ApiKeyInvalidError,
        ApiKeyOwnerRequiredError,
        MalformedRequestError,
        MissingPrincipalError,
        CrossOwnerAccessError,
        ScopeEscalationError,
        ApiKeyNotFoundError,
    )

    @router.post(
        "/api-keys",
        status_code=201,
        responses=errors,
        summary="Create an API key",
        openapi_extra=json_body(ApiKeyIn),
    )
    async def create(request: Request) -> Response:
        body = validate_body(ApiKeyIn, await read_json(request))
        async with deps.db.transaction() as conn:
            created = await apikeys.create_api_key(
                conn,
                principal=principal_of(request),
                name=body.name,
                owner=body.owner,
                scopes=body.scopes,
                expires_at=body.expires_at,
                now=deps.clock.now(),
            )
        return json_response(created, 201)

    @router.get("/api-keys", responses=errors, summary="List an owner's API keys")
    async def listing(request: Request) -> Response:
        async with deps.db.connection() as conn:
            keys = await apikeys.list_api_keys(
                conn,
                principal=principal_of(request),
                owner=request.query_params.get(OWNER_PARAM, ""),
            )
        return json_response(keys)

    @router.delete(
        "/api-keys/{api_key_id}", status_code=204, responses=errors, summary="Revoke an API key"
    )
    async def revoke(api_key_id: str, request: Request) -> Response:
        async with deps.db.transaction() as conn:
            await apikeys.revoke_api_key(
                conn,
                principal=principal_of(request),
                api_key_id=api_key_id,
                owner=request.query_params.get(OWNER_PARAM, ""),
                now=deps.clock.now(),
            )
        if verifier is not None:
            verifier.forget(api_key_id)
        return Response(status_code=204)

    return router
