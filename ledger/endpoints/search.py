"""Search: `/search/{collection}` and `/multi-search` in Typesense's shape, and the reindex."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ledger import search
from ledger.endpoints.common import (
    LedgerDeps,
    error_responses,
    json_body,
    json_response,
    read_json,
    read_optional_json,
)
from ledger.errors import MalformedRequestError
from ledger.schemas import validate_body
from ledger.search import MULTI_SEARCHES_MAX, ReindexIn, SearchIn
from ledger.surface_errors import (
    ReindexNotStartedError,
    SearchQueryInvalidError,
    SearchTimeoutError,
)


class MultiSearchIn(BaseModel):
    """POST /multi-search."""

    model_config = ConfigDict(extra="ignore")

    searches: list[dict[str, Any]] = Field(default_factory=list, max_length=MULTI_SEARCHES_MAX)


def search_router(deps: LedgerDeps) -> APIRouter:
    """Search routes (the reindex routes first: `/search/{collection}` would match them)."""
    router = APIRouter(tags=["search"])
    errors = error_responses(
        SearchQueryInvalidError, MalformedRequestError, ReindexNotStartedError, SearchTimeoutError
    )

    @router.post(
        "/search/reindex",
        status_code=202,
        responses=errors,
        summary="Reindex (nothing to rebuild)",
        openapi_extra=json_body(ReindexIn, required=False),
    )
    async def start_reindex(request: Request) -> Response:
        body = validate_body(ReindexIn, await read_optional_json(request))
        async with deps.db.transaction() as conn:
            started = await search.start_reindex(conn, body.batch_size, now=deps.clock.now())
        return json_response(started, 202)

    @router.get("/search/reindex", responses=errors, summary="Progress of the last reindex")
    async def reindex_progress() -> Response:
        async with deps.db.connection() as conn:
            return json_response(await search.reindex_progress(conn))

    @router.post(
        "/search/{collection}",
        status_code=201,
        responses=errors,
        summary="Search a collection (Typesense shape)",
        openapi_extra=json_body(SearchIn),
    )
    async def search_collection(collection: str, request: Request) -> Response:
        params = validate_body(SearchIn, await read_json(request))
        async with deps.db.connection() as conn:
            result = await search.search(conn, collection, params, clock=deps.clock)
        return json_response(result, 201)

    @router.post(
        "/multi-search",
        responses=errors,
        summary="Several searches in one request",
        openapi_extra=json_body(MultiSearchIn),
    )
    async def multi_search(request: Request) -> Response:
        body = validate_body(MultiSearchIn, await read_json(request))
        async with deps.db.connection() as conn:
            result = await search.multi_search(conn, body.searches, clock=deps.clock)
        return json_response(result)

    return router
