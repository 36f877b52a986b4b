"""Balances: create, get (with_queued, include), list, filter, by indicator, at a time,
snapshots, identity, lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ledger import service
from ledger.endpoints.common import (
    LedgerDeps,
    error_responses,
    json_body,
    json_response,
    page,
    read_json,
)
from ledger.endpoints.ledgers import PAGING_PARAMS, run_filter
from ledger.errors import (
    BalanceNotFoundError,
    BalanceValidationError,
    InvalidTimestampError,
    MalformedRequestError,
)
from ledger.filters import COLLECTIONS, FilterRequest, from_query_params
from ledger.schemas import validate_body
from ledger.wire import balance_json, check_utc_years

TRUTHY = {"true", "1", "yes"}


class BalanceIn(BaseModel):
    """POST /balances."""

    model_config = ConfigDict(extra="ignore")

    ledger_id: str = Field(default="", max_length=255)
    currency: str = Field(default="", max_length=32)
    identity_id: str | None = Field(default=None, max_length=255)
    indicator: str | None = Field(default=None, max_length=255)
    track_fund_lineage: StrictBool = False
    allocation_strategy: str | None = Field(default=None, max_length=16)
    meta_data: dict[str, Any] = Field(default_factory=dict)


class IdentityLinkIn(BaseModel):
    """PUT /balances/{id}/identity."""

    model_config = ConfigDict(extra="ignore")

    identity_id: str = Field(default="", max_length=255)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in TRUTHY


def balances_router(deps: LedgerDeps) -> APIRouter:
    """Balance routes."""
    router = APIRouter(tags=["balances"])
    errors = error_responses(BalanceValidationError, BalanceNotFoundError, MalformedRequestError)

    @router.post(
        "/balances",
        status_code=201,
        responses=errors,
        summary="Create a balance",
        openapi_extra=json_body(BalanceIn),
    )
    async def create(request: Request) -> Response:
        body = validate_body(BalanceIn, await read_json(request))
        async with deps.db.transaction() as conn:
            record = await service.create_balance(
                conn,
                ledger_id=body.ledger_id,
                currency=body.currency,
                identity_id=body.identity_id,
                indicator=body.indicator,
                track_fund_lineage=body.track_fund_lineage,
                allocation_strategy=body.allocation_strategy,
                meta_data=body.meta_data,
                now=deps.clock.now(),
            )
        return json_response(balance_json(record), 201)

    @router.get(
        "/balances/{balance_id}", responses=errors, summary="Get a balance (with_queued, include)"
    )
    async def get(balance_id: str, request: Request) -> Response:
        include = set(request.query_params.getlist("include"))
        async with deps.db.connection() as conn:
            record = await service.get_balance(conn, balance_id)
            body = await service.balance_body(
                conn, record, with_queued=_flag(request, "with_queued"), include=include
            )
        return json_response(body)

    @router.get("/balances", responses=errors, summary="List balances")
    async def listing(request: Request) -> Response:
        limit, offset = page(request, default_limit=10, lenient=False)
        query = from_query_params(COLLECTIONS["balances"], request.query_params, skip=PAGING_PARAMS)
        async with deps.db.connection() as conn:
            return json_response(
                await service.list_collection(conn, "balances", query, limit=limit, offset=offset)
            )

    @router.post(
        "/balances/filter",
        responses=errors,
        summary="Filter balances",
        openapi_extra=json_body(FilterRequest),
    )
    async def filter_balances(request: Request) -> Response:
        return await run_filter(
            deps, "balances", validate_body(FilterRequest, await read_json(request))
        )

    @router.get(
        "/balances/indicator/{indicator}/currency/{currency}",
        responses=errors,
        summary="Get an indicator balance by name and currency",
    )
    async def by_indicator(indicator: str, currency: str) -> Response:
        async with deps.db.connection() as conn:
            record = await service.get_balance_by_indicator(conn, indicator, currency)
        return json_response(balance_json(record))

    @router.get(
        "/balances/{balance_id}/at", responses=errors, summary="The balance at a point in time"
    )
    async def at(balance_id: str, request: Request) -> Response:
        raw = request.query_params.get("timestamp")
        try:
            when = (
                deps.clock.now() if not raw else datetime.fromisoformat(raw.replace("Z", "+00:00"))
            )
        except ValueError as exc:
            raise InvalidTimestampError("timestamp must be RFC 3339") from exc
        if when.tzinfo is None:
            raise InvalidTimestampError("timestamp needs a UTC offset")
        try:
            check_utc_years(when)
        except ValueError as exc:
            raise InvalidTimestampError("timestamp is outside years 1-9999 in UTC") from exc
        async with deps.db.connection() as conn:
            body = await service.balance_at(
                conn, balance_id, when, from_source=_flag(request, "from_source")
            )
        return json_response(body)

    @router.post(
        "/balances-snapshots", summary="Snapshot balances (history is replayed from transactions)"
    )
    async def snapshots() -> Response:
        return json_response({"message": "Snapshotting in progress. should be completed shortly"})

    @router.put(
        "/balances/{balance_id}/identity",
        responses=errors,
        summary="Attach an identity",
        openapi_extra=json_body(IdentityLinkIn),
    )
    async def link_identity(balance_id: str, request: Request) -> Response:
        body = validate_body(IdentityLinkIn, await read_json(request))
        async with deps.db.transaction() as conn:
            await service.set_balance_identity(conn, balance_id, body.identity_id)
        return json_response({"message": "Balance identity updated successfully"})

    @router.get("/balances/{balance_id}/lineage", responses=errors, summary="Fund lineage (empty)")
    async def lineage(balance_id: str) -> Response:
        async with deps.db.connection() as conn:
            record = await service.get_balance(conn, balance_id)
        return json_response(
            {
                "balance_id": record.balance_id,
                "aggregate_balance_id": "",
                "total_with_lineage": 0,
                "providers": [],
            }
        )

    return router
