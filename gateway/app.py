"""The ingress application factory every Serve application mounts.

`create_app` builds a FastAPI app with the edge policy stack, the health routes and `/metrics`,
then includes the domain routers it is given. Policy therefore is identical on every ingress
and costs no extra hop: the stack runs inside the replica, as one pure ASGI layer
(`gateway.stack.EdgeMiddleware`: no `BaseHTTPMiddleware`, no per-request task or body copy)
that runs the policies in order: request id, observer (route, client address, metrics, audit
line), body limit, bot detection, admin address, CORS, authentication, rate limit; then
FastAPI's exception handlers (one renderer) and the routers.

Authentication and rate limiting are slots: they stay empty (and a warning says so) until the
composition root passes a `TokenVerifier` and a `RateLimiter`; nothing else changes when it
does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.responses import PlainTextResponse, Response
from fastapi.telemetry import TelemetryConfig

from gateway.admin_access import AdminAddressCheck
from gateway.authentication import Authentication
from gateway.bots import BotDetection
from gateway.cors import Cors
from gateway.edge import ClientAddressResolver
from gateway.health import DependencyCheck, readiness, system_checks
from gateway.limiter import RateLimiter
from gateway.metrics import gateway_metrics
from gateway.observer import Observer
from gateway.openapi import document_edge
from gateway.policy import GatewayPolicy
from gateway.principal import TokenVerifier
from gateway.problems import ErrorStyle, install_error_handlers
from gateway.rate_limit import RateLimits, exposed_headers
from gateway.request_id import RequestIds
from gateway.routes import RouteTable
from gateway.security_headers import SecurityHeaders
from gateway.stack import EdgeMiddleware
from kit.clock import Clock, SystemClock
from kit.metrics import render_latest

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]
# FastAPI's native OpenTelemetry, off (`metrics.opentelemetry` turns it on).
FASTAPI_TELEMETRY_OFF: Final[TelemetryConfig] = {"tracing": False, "metrics": False, "logs": False}


class EdgeApp(FastAPI):
    """A FastAPI app whose OpenAPI document also describes the edge (security, problems)."""

    edge_table: RouteTable | None = None
    edge_policy: GatewayPolicy | None = None
    edge_style: ErrorStyle = ErrorStyle.PROBLEM
    edge_authenticates: bool = False  # the authentication slot is filled: bearer tokens
    _documented: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        table, policy = self.edge_table, self.edge_policy
        if table is not None and policy is not None and schema is not self._documented:
            document_edge(
                schema,
                table=table,
                policy=policy,
                style=self.edge_style,
                authenticates=self.edge_authenticates,
            )
            self._documented = schema
        return schema


def create_app(
    *,
    title: str,
    version: str,
    routers: Sequence[APIRouter] = (),
    checks: Callable[[], Sequence[DependencyCheck]],
    error_style: ErrorStyle = ErrorStyle.PROBLEM,
    lifespan: Lifespan | None = None,
    echo_request_id: bool = True,
    policy: GatewayPolicy | None = None,
    service: str = "api",
    verifier: TokenVerifier | None = None,
    limiter: RateLimiter | None = None,
    provider_checks: Sequence[DependencyCheck] = (),
    clock: Clock | None = None,
) -> EdgeApp:
    """An ingress app with health, metrics and the edge stack around `routers`.

    Args:
        checks: returns the readiness checks; called per request so it can see late wiring.
        echo_request_id: False under Serve, whose proxy already echoes the id.
        policy: the edge policy; the seed's defaults when None.
        service: the `service` label of this app's metrics (the Serve application name).
        verifier: fills the authentication slot; without it no route asks for a token.
        limiter: fills the rate-limit slot; without it nothing is rate limited.
        provider_checks: readiness checks of external providers (KYC, SMS, email, Blnk).
        clock: the time step-up freshness is judged by.
    """
    policy = policy or GatewayPolicy()
    app = EdgeApp(
        title=title,
        version=version,
        lifespan=lifespan,
        telemetry=None if policy.metrics.opentelemetry else FASTAPI_TELEMETRY_OFF,
    )
    install_error_handlers(app, style=error_style)
    for router in routers:  # first: the API's routes are matched in order, and they are hot
        app.include_router(router)
    _add_routes(app, checks=checks, provider_checks=provider_checks, policy=policy)

    table = RouteTable(app, policy)
    app.edge_table, app.edge_policy, app.edge_style = table, policy, error_style
    metrics = gateway_metrics(policy.metrics.latency_buckets_s)
    authentication: Authentication | None = None
    if verifier is not None:
        authentication = Authentication(
            verifier=verifier,
            policy=policy.auth,
            admin=policy.admin,
            clock=clock or SystemClock(),
        )
    else:
        logger.warning("the authentication slot is empty: protected routes take no token")
    app.edge_authenticates = authentication is not None
    rate_limits: RateLimits | None = None
    if limiter is not None:
        rate_limits = RateLimits(
            limiter=limiter, policy=policy.rate_limits, metrics=metrics, service=service
        )
    else:
        logger.warning("the rate-limit slot is empty: no route is rate limited")
    app.add_middleware(
        EdgeMiddleware,
        request_ids=RequestIds(echo=echo_request_id),
        security_headers=SecurityHeaders(policy.security_headers),
        observer=Observer(
            table=table,
            resolver=ClientAddressResolver(policy.client_address),
            metrics=metrics,
            service=service,
            audit=policy.audit,
        ),
        bots=BotDetection(policy.bots),
        admin_address=AdminAddressCheck(policy.admin),
        cors=Cors(policy.cors, exposed_headers=exposed_headers(policy.rate_limits)),
        authentication=authentication,
        rate_limits=rate_limits,
        style=error_style,
    )
    return app


def _add_routes(
    app: FastAPI,
    *,
    checks: Callable[[], Sequence[DependencyCheck]],
    provider_checks: Sequence[DependencyCheck],
    policy: GatewayPolicy,
) -> None:
    node_checks = system_checks(policy.health)

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
        status, report = await readiness([*checks(), *provider_checks, *node_checks])
        return Response(orjson.dumps(report), status_code=status, media_type="application/json")

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics of this replica",
        response_class=PlainTextResponse,  # documents the text exposition format, not JSON
    )
    async def metrics() -> Response:
        body, content_type = render_latest()
        return Response(body, media_type=content_type)
