"""Hooks: register, replace, get, list (?type=), delete. The master key only, as in Blnk.

Past the master-key check, every failure answers Blnk's hook body (`BlnkBody.HOOK`, or
`HOOK_LOOKUP` on GET /hooks/{id}, whose top-level code is NOT_FOUND); the check itself and the
secure-mode guard before it answer the standard body, as Blnk's do (`api/hooks.go`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ledger import hooks
from ledger.endpoints.common import LedgerDeps, error_responses, json_body, json_response, read_json
from ledger.endpoints.secure_mode import principal_of
from ledger.errors import BlnkBody, MalformedRequestError, answered_as
from ledger.hooks import HookIn, HookRunner, parse_hook_type
from ledger.schemas import validate_body
from ledger.surface_errors import HookInvalidError, HookNotFoundError, MasterKeyRequiredError


def _require_master(request: Request) -> None:
    principal = principal_of(request)
    if principal is None or not principal.is_master:
        raise MasterKeyRequiredError("hook management requires master key")


async def _hook_body(request: Request) -> HookIn:
    try:
        return validate_body(HookIn, await read_json(request))
    except MalformedRequestError as exc:
        raise HookInvalidError(f"invalid hook data: {exc.message}") from exc


def hooks_router(deps: LedgerDeps, runner: HookRunner) -> APIRouter:
    """Hook routes."""
    router = APIRouter(tags=["hooks"])
    errors = error_responses(HookInvalidError, MasterKeyRequiredError, HookNotFoundError)

    @router.post(
        "/hooks",
        status_code=201,
        responses=errors,
        summary="Register a hook",
        openapi_extra=json_body(HookIn),
    )
    async def create(request: Request) -> Response:
        _require_master(request)
        with answered_as(BlnkBody.HOOK):
            body = await _hook_body(request)
            async with deps.db.transaction() as conn:
                created = await hooks.create_hook(conn, body, now=deps.clock.now())
        runner.invalidate()
        return json_response(created, 201)

    @router.put(
        "/hooks/{hook_id}",
        responses=errors,
        summary="Replace a hook's settings",
        openapi_extra=json_body(HookIn),
    )
    async def update(hook_id: str, request: Request) -> Response:
        _require_master(request)
        with answered_as(BlnkBody.HOOK):
            body = await _hook_body(request)
            async with deps.db.transaction() as conn:
                updated = await hooks.update_hook(conn, hook_id, body)
        runner.invalidate()
        return json_response(updated)

    @router.get("/hooks/{hook_id}", responses=errors, summary="Get a hook")
    async def get(hook_id: str, request: Request) -> Response:
        _require_master(request)
        with answered_as(BlnkBody.HOOK_LOOKUP):
            async with deps.db.connection() as conn:
                return json_response(await hooks.get_hook(conn, hook_id))

    @router.get("/hooks", responses=errors, summary="List hooks (both types unless ?type=)")
    async def listing(request: Request) -> Response:
        _require_master(request)
        with answered_as(BlnkBody.HOOK):
            raw_type = request.query_params.get("type")
            hook_type = parse_hook_type(raw_type) if raw_type else None
            async with deps.db.connection() as conn:
                return json_response(await hooks.list_hooks(conn, hook_type))

    @router.delete("/hooks/{hook_id}", responses=errors, summary="Delete a hook")
    async def delete(hook_id: str, request: Request) -> Response:
        _require_master(request)
        with answered_as(BlnkBody.HOOK):
            async with deps.db.transaction() as conn:
                await hooks.delete_hook(conn, hook_id)
        runner.invalidate()
        return json_response({"message": "hook deleted successfully"})

    return router
