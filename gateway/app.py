"""The ingress application factory every Serve application mounts.

`create_app` builds a FastAPI app with the edge stack (request ids, one error renderer), the
health routes and `/metrics`, then includes the domain routers it is given. Policy therefore is
identical on every ingress and costs no extra hop: the stack runs inside the replica.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from gateway.health import DependencyCheck, readiness
from gateway.problems import ErrorStyle, install_error_handlers
from gateway.request_id import RequestIdMiddleware
from kit.metrics import render_latest

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def create_app(
    *,
    title: str,
    version: str,
    routers: Sequence[APIRouter] = (),
    checks: Callable[[], Sequence[DependencyCheck]],
    error_style: ErrorStyle = ErrorStyle.PROBLEM,
    lifespan: Lifespan | None = None,
    echo_request_id: bool = True,
) -> FastAPI:
    """An ingress app with health, metrics and the edge stack around `routers`.

    Args:
        checks: returns the readiness checks; called per request so it can see late wiring.
        echo_request_id: False under Serve, whose proxy already echoes the id.
    """
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware, echo=echo_request_id)
    install_error_handlers(app, style=error_style)

    @app.get("/health/live", tags=["health"], summary="Liveness: the process serves requests")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/health/ready",
        tags=["health"],
        summary="Readiness: every critical dependency answers",
        responses={503: {"description": "A critical dependency is down"}},
    )
    async def ready() -> Response:
        status, report = await readiness(checks())
        return Response(orjson.dumps(report), status_code=status, media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics of this replica")
    async def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    return app
