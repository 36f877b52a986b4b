"""Balance monitors: Blnk's `/balance-monitors` routes (api/balance_monitor.go)."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ledger import monitors, monitors_repository
from ledger.endpoints.common import LedgerDeps, json_response, json_schema_body, read_json
from ledger.errors import (
    BalanceNotFoundError,
    BlnkBody,
    LedgerValidationError,
    MonitorNotFoundError,
    answered_as,
)
from ledger.monitors import MonitorCache, monitor_json, process_monitor_cache

# Blnk lists every monitor in one answer; this bounds it (newest first).
MONITORS_LIST_MAX: Final = 1_000


def balance_monitors_router(deps: LedgerDeps, cache: MonitorCache | None = None) -> APIRouter:
    """Monitor routes; CRUD invalidates `cache` (the process's cache by default)."""
    router = APIRouter(tags=["balance-monitors"])
    cache = cache if cache is not None else process_monitor_cache()
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": LedgerValidationError.code},
        404: {"description": f"{MonitorNotFoundError.code}, {BalanceNotFoundError.code}"},
    }

    body = json_schema_body(monitors.request_schema())

    @router.post(
        "/balance-monitors",
        status_code=201,
        responses=errors,
        summary="Create a balance monitor",
        openapi_extra=body,
    )
    async def create(request: Request) -> Response:
        raw = await read_json(request)
        # Blnk answers a new monitor's validation under "errors" (an update's is standard).
        with answered_as(BlnkBody.ERRORS, LedgerValidationError):
            body = monitors.parse_request(raw)
        async with deps.db.transaction() as conn:
            monitor = await monitors.create_monitor(conn, body, now=deps.clock.now(), cache=cache)
        return json_response(monitor_json(monitor), 201)

    @router.get("/balance-monitors", responses=errors, summary="List balance monitors")
    async def listing() -> Response:
        async with deps.db.connection() as conn:
            found = await monitors_repository.list_monitors(
                conn, balance_id=None, limit=MONITORS_LIST_MAX, offset=0
            )
        return json_response([monitor_json(m) for m in found])

    @router.get(
        "/balance-monitors/balances/{balance_id}",
        responses=errors,
        summary="List a balance's monitors",
    )
    async def by_balance(balance_id: str) -> Response:
        async with deps.db.connection() as conn:
            found = await monitors_repository.list_monitors(
                conn, balance_id=balance_id, limit=MONITORS_LIST_MAX, offset=0
            )
        return json_response([monitor_json(m) for m in found])

    @router.get("/balance-monitors/{monitor_id}", responses=errors, summary="Get a balance monitor")
    async def get(monitor_id: str) -> Response:
        async with deps.db.connection() as conn:
            monitor = await monitors.get_monitor(conn, monitor_id)
        return json_response(monitor_json(monitor))

    @router.put(
        "/balance-monitors/{monitor_id}",
        responses=errors,
        summary="Update a balance monitor",
        openapi_extra=body,
    )
    async def update(monitor_id: str, request: Request) -> Response:
        body = monitors.parse_request(await read_json(request))
        async with deps.db.transaction() as conn:
            await monitors.update_monitor(conn, monitor_id, body, cache=cache)
        return json_response({"message": "BalanceMonitor updated successfully"})

    @router.delete(
        "/balance-monitors/{monitor_id}", responses=errors, summary="Delete a balance monitor"
    )
    async def delete(monitor_id: str) -> Response:
        async with deps.db.transaction() as conn:
            await monitors.delete_monitor(conn, monitor_id, cache=cache)
        return json_response({"message": "BalanceMonitor deleted successfully"})

    return router
