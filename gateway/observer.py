"""The outer policy layer: route resolution, metrics, the audit line, and the last-resort 500.

It runs inside the request id and security headers layers and outside every policy, so it sees
every answer, including the refusals of the policies and a crash anywhere below it. A crash is
answered here (a generic problem document, through the security headers) instead of by
Starlette's outermost error middleware, which would answer around the stack and so without the
security headers, the request id and the metrics.

The audit line is one JSON object per request on the audit logger: time and request id (from
the log formatter), service, user, client address, method, route template, status, latency and
the policy decision. Never a token, a header value or a body.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge import EDGE_SCOPE_KEY, ClientAddressResolver, Decision, read_edge_state
from gateway.metrics import GatewayMetrics
from gateway.policy import AuditPolicy
from gateway.problems import ErrorStyle, send_error
from gateway.routes import RouteTable
from kit.errors import InvariantError
from kit.telemetry import log_info_fast

logger = logging.getLogger(__name__)

_METHOD_LABELS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SERIES_CACHE_MAX: Final = 10_000  # (route, method, status) label sets kept resolved
NO_RESPONSE_STATUS: Final = 499  # the client went away (or the app never answered)


class ObserverMiddleware:
    """Resolves the route and edge state; records metrics and the audit line for every answer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        table: RouteTable,
        resolver: ClientAddressResolver,
        metrics: GatewayMetrics,
        service: str,
        style: ErrorStyle,
        audit: AuditPolicy,
    ) -> None:
        self.app = app
        self._table = table
        self._resolver = resolver
        self._metrics = metrics
        self._service = service
        self._style = style
        self._audit = logging.getLogger(audit.logger) if audit.is_enabled else None
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self._table.resolve(scope["method"], scope["path"], scope.get("root_path", ""))
        edge = read_edge_state(scope, route, self._resolver)
        scope[EDGE_SCOPE_KEY] = edge
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:  # the edge's last-resort handler: logged with its stack
            edge.decision = Decision.ERROR
            logger.exception("unhandled exception")
            if status == 0:
                error = InvariantError("unhandled exception")
                await send_error(scope, receive, send_observed, error, style=self._style)
        finally:
            self._record(scope, status or NO_RESPONSE_STATUS, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, elapsed_s: float) -> None:
        edge = scope[EDGE_SCOPE_KEY]
        template = edge.route.template
        method = scope["method"] if scope["method"] in _METHOD_LABELS else "OTHER"
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self._metrics.requests.labels(self._service, template, method, str(status)),
                self._metrics.duration.labels(self._service, template, method),
            )
            if len(self._series) < _SERIES_CACHE_MAX:
                self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed_s)
        audit = self._audit
        if audit is not None:
            principal = edge.principal
            log_info_fast(
                audit,
                "request",
                {
                    "service": self._service,
                    "user_id": None if principal is None else str(principal.user_id),
                    "ip": edge.client_ip,
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "latency_ms": round(elapsed_s * 1000, 3),
                    "decision": edge.decision.value,
                },
            )
