"""Identities: create, get, update, delete, list, filter, and field tokenization."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ledger import identities, service
from ledger.endpoints.common import (
    LedgerDeps,
    error_responses,
    json_body,
    json_response,
    page,
    read_json,
    read_optional_json,
)
from ledger.endpoints.ledgers import PAGING_PARAMS, run_filter
from ledger.errors import IdentityNotFoundError, LedgerValidationError, MalformedRequestError
from ledger.filters import COLLECTIONS, FilterRequest, from_query_params
from ledger.identities import FIELDS_PER_REQUEST_MAX, IdentityIn
from ledger.schemas import validate_body
from ledger.surface_errors import (
    FieldAlreadyTokenizedError,
    FieldNotTokenizableError,
    FieldNotTokenizedError,
    IdentityInUseError,
    IdentityValidationError,
    TokenizationDisabledError,
)

IDENTITIES_PAGE_DEFAULT = 20  # Blnk's default page of identities


class FieldsIn(BaseModel):
    """POST .../tokenize and .../detokenize."""

    model_config = ConfigDict(extra="ignore")

    fields: list[str] = Field(default_factory=list, max_length=FIELDS_PER_REQUEST_MAX)


def identities_router(deps: LedgerDeps) -> APIRouter:
    """Identity routes."""
    router = APIRouter(tags=["identities"])
    errors = error_responses(
        IdentityValidationError,
        FieldNotTokenizableError,
        FieldNotTokenizedError,
        MalformedRequestError,
        TokenizationDisabledError,
        IdentityNotFoundError,
        FieldAlreadyTokenizedError,
        IdentityInUseError,
    )

    @router.post(
        "/identities",
        status_code=201,
        responses=errors,
        summary="Create an identity",
        openapi_extra=json_body(IdentityIn),
    )
    async def create(request: Request) -> Response:
        body = validate_body(IdentityIn, await read_json(request))
        async with deps.db.transaction() as conn:
            created = await identities.create_identity(conn, body, now=deps.clock.now())
        return json_response(created, 201)

    @router.get("/identities", responses=errors, summary="List identities (limit, offset, filters)")
    async def listing(request: Request) -> Response:
        limit, offset = page(request, default_limit=IDENTITIES_PAGE_DEFAULT, lenient=True)
        query = from_query_params(
            COLLECTIONS["identities"], request.query_params, skip=PAGING_PARAMS
        )
        async with deps.db.connection() as conn:
            found = await service.list_collection(
                conn, "identities", query, limit=limit, offset=offset
            )
        return json_response(found)

    @router.post(
        "/identities/filter",
        responses=errors,
        summary="Filter identities",
        openapi_extra=json_body(FilterRequest),
    )
    async def filter_identities(request: Request) -> Response:
        return await run_filter(
            deps, "identities", validate_body(FilterRequest, await read_json(request))
        )

    @router.get("/identities/{identity_id}", responses=errors, summary="Get an identity")
    async def get(identity_id: str) -> Response:
        async with deps.db.connection() as conn:
            return json_response(await identities.get_identity(conn, identity_id))

    @router.put(
        "/identities/{identity_id}",
        responses=errors,
        summary="Replace an identity's fields",
        openapi_extra=json_body(IdentityIn),
    )
    async def update(identity_id: str, request: Request) -> Response:
        body = validate_body(IdentityIn, await read_json(request))
        async with deps.db.transaction() as conn:
            await identities.update_identity(conn, identity_id, body, cipher=deps.cipher)
        return json_response({"message": "Identity updated successfully"})

    @router.delete("/identities/{identity_id}", responses=errors, summary="Delete an identity")
    async def delete(identity_id: str) -> Response:
        async with deps.db.transaction() as conn:
            await identities.delete_identity(conn, identity_id)
        return json_response({"message": "Identity deleted successfully"})

    @router.get(
        "/identities/{identity_id}/tokenized-fields",
        responses=errors,
        summary="Which fields are sealed",
    )
    async def tokenized(identity_id: str) -> Response:
        async with deps.db.connection() as conn:
            names = await identities.tokenized_fields(conn, identity_id)
        return json_response({"tokenized_fields": names})

    @router.post(
        "/identities/{identity_id}/tokenize/{field}", responses=errors, summary="Seal one field"
    )
    async def tokenize_one(identity_id: str, field: str) -> Response:
        async with deps.db.transaction() as conn:
            await identities.tokenize_fields(conn, identity_id, [field], cipher=deps.cipher)
        return json_response({"message": "Field tokenized successfully"})

    @router.get(
        "/identities/{identity_id}/detokenize/{field}", responses=errors, summary="Open one field"
    )
    async def detokenize_one(identity_id: str, field: str) -> Response:
        async with deps.db.connection() as conn:
            values = await identities.detokenize_fields(
                conn, identity_id, [field], cipher=deps.cipher
            )
        return json_response({"field": field, "value": values[field]})

    @router.post(
        "/identities/{identity_id}/tokenize",
        responses=errors,
        summary="Seal fields",
        openapi_extra=json_body(FieldsIn),
    )
    async def tokenize_many(identity_id: str, request: Request) -> Response:
        body = validate_body(FieldsIn, await read_json(request))
        if not body.fields:
            raise LedgerValidationError("at least one field must be specified")
        async with deps.db.transaction() as conn:
            await identities.tokenize_fields(conn, identity_id, body.fields, cipher=deps.cipher)
        return json_response({"message": "Fields tokenized successfully"})

    @router.post(
        "/identities/{identity_id}/detokenize",
        responses=errors,
        summary="Open fields (all sealed fields when none are named)",
        openapi_extra=json_body(FieldsIn, required=False),
    )
    async def detokenize_many(identity_id: str, request: Request) -> Response:
        body = validate_body(FieldsIn, await read_optional_json(request))
        async with deps.db.connection() as conn:
            values = await identities.detokenize_fields(
                conn, identity_id, body.fields, cipher=deps.cipher
            )
        return json_response({"fields": values})

    return router
