"""GET / and GET /health (Blnk's, not the gateway's readiness)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from kit.errors import DependencyError
from ledger.endpoints.common import LedgerDeps, json_response


def system_router(deps: LedgerDeps) -> APIRouter:
    """Blnk's system routes."""
    router = APIRouter(tags=["system"])

    @router.get("/", summary="Blnk's root: a liveness string")
    async def root() -> Response:
        return json_response("server running...")

    @router.get("/health", summary="Blnk's health: UP when the database answers")
    async def health() -> Response:
        try:
            await deps.db.ping()
        except DependencyError as exc:
            return json_response({"status": "DOWN", "reason": exc.code}, 503)
        return json_response({"status": "UP"})

    return router
