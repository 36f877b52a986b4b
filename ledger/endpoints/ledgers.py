"""Ledgers: create, get, list, rename, filter."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ledger import service
from ledger.endpoints.common import (
    LedgerDeps,
    error_responses,
    json_body,
    json_response,
    page,
    read_json,
)
from ledger.errors import (
    BlnkBody,
    LedgerNotFoundError,
    LedgerValidationFailedError,
    MalformedRequestError,
    answered_as,
)
from ledger.filters import COLLECTIONS, FilterRequest, from_query_params
from ledger.schemas import validate_body

PAGING_PARAMS = {"limit", "offset"}


class LedgerIn(BaseModel):
    """POST /ledgers, PUT /ledgers/{id}."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    meta_data: dict[str, Any] = Field(default_factory=dict)


async def _ledger_body(request: Request) -> LedgerIn:
    # Blnk answers a ledger body that does not bind under "errors" too, unlike other bodies.
    with answered_as(BlnkBody.ERRORS, MalformedRequestError):
        return validate_body(LedgerIn, await read_json(request))


def ledgers_router(deps: LedgerDeps) -> APIRouter:
    """Ledger routes."""
    router = APIRouter(tags=["ledgers"])
    errors = error_responses(
        LedgerValidationFailedError, LedgerNotFoundError, MalformedRequestError
    )

    @router.post(
        "/ledgers",
        status_code=201,
        responses=errors,
        summary="Create a ledger",
        openapi_extra=json_body(LedgerIn),
    )
    async def create(request: Request) -> Response:
        body = await _ledger_body(request)
        async with deps.db.transaction() as conn:
            created = await service.create_ledger(
                conn, name=body.name, meta_data=body.meta_data, now=deps.clock.now()
            )
        return json_response(created, 201)

    @router.get("/ledgers/{ledger_id}", responses=errors, summary="Get a ledger")
    async def get(ledger_id: str) -> Response:
        async with deps.db.connection() as conn:
            return json_response(await service.get_ledger(conn, ledger_id))

    @router.put(
        "/ledgers/{ledger_id}",
        responses=errors,
        summary="Rename a ledger",
        openapi_extra=json_body(LedgerIn),
    )
    async def update(ledger_id: str, request: Request) -> Response:
        body = await _ledger_body(request)
        async with deps.db.transaction() as conn:
            return json_response(await service.rename_ledger(conn, ledger_id, body.name))

    @router.get(
        "/ledgers", responses=errors, summary="List ledgers (limit, offset, field_op filters)"
    )
    async def listing(request: Request) -> Response:
        limit, offset = page(request, default_limit=10, lenient=False)
        query = from_query_params(COLLECTIONS["ledgers"], request.query_params, skip=PAGING_PARAMS)
        async with deps.db.connection() as conn:
            return json_response(
                await service.list_collection(conn, "ledgers", query, limit=limit, offset=offset)
            )

    @router.post(
        "/ledgers/filter",
        responses=errors,
        summary="Filter ledgers",
        openapi_extra=json_body(FilterRequest),
    )
    async def filter_ledgers(request: Request) -> Response:
        body = validate_body(FilterRequest, await read_json(request))
        return await run_filter(deps, "ledgers", body)

    return router


async def run_filter(deps: LedgerDeps, name: str, body: FilterRequest) -> Response:
    """A FilterRequest against one collection."""
    query = service.filter_query(name, body.filters)
    async with deps.db.connection() as conn:
        result = await service.list_collection(
            conn,
            name,
            query,
            joiner="OR" if body.logical_operator.lower() == "or" else "AND",
            limit=body.limit,
            offset=body.offset,
            sort_by=body.sort_by,
            sort_order=body.sort_order,
            include_count=body.include_count,
        )
    return json_response(result)
