"""Route resolution, metrics and the audit line of every request.

The edge (`gateway.stack`) asks the observer for a request's `EdgeState` before any policy runs
and hands it back with the final status when the answer is done, so it records every answer:
the refusals of the policies, the handlers' answers and the last-resort 500 alike.

The audit line is one JSON object per request on the audit logger: time and request id (from
the log formatter), service, user, client address, method, route template, status, latency and
the policy decision. Never a token, a header value or a body. Lines are written in batches
(`kit.telemetry.LineBatcher`: at most 50 ms after the request, one write for many requests).
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.types import Scope

from gateway.edge import ClientAddressResolver, EdgeState, read_edge_state
from gateway.metrics import GatewayMetrics, RequestSeries
from gateway.policy import AuditPolicy
from gateway.routes import RouteTable
from kit.telemetry import LineBatcher

_METHOD_LABELS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SERIES_CACHE_MAX: Final = 10_000  # (route, method, status) label sets kept resolved
METHOD_LENGTH_MAX: Final = 32  # of the method in the audit line (HTTP's are at most 7)


class Observer:
    """Resolves the route and edge state; records metrics and the audit line for every answer."""

    def __init__(
        self,
        *,
        table: RouteTable,
        resolver: ClientAddressResolver,
        metrics: GatewayMetrics,
        service: str,
        audit: AuditPolicy,
    ) -> None:
        self._table = table
        self._resolver = resolver
        self._metrics = metrics
        self._service = service
        # Fixed field names, none a secret's; every value is bounded: no masking pass needed.
        self._audit = (
            LineBatcher(
                logging.getLogger(audit.logger),
                "request",
                is_redacted=True,
                lines_max=audit.batch_lines_max,
                delay_s=audit.batch_delay_s,
            )
            if audit.is_enabled
            else None
        )
        self._series: dict[tuple[str, str, int], RequestSeries] = {}

    def begin(self, scope: Scope) -> EdgeState:
        """The request's route and edge state, read once."""
        route = self._table.resolve(scope["method"], scope["path"], scope.get("root_path", ""))
        return read_edge_state(scope, route, self._resolver)

    def record(self, scope: Scope, edge: EdgeState, status: int, elapsed_s: float) -> None:
        """Count the answer and write its audit line."""
        template = edge.route.template
        method = scope["method"] if scope["method"] in _METHOD_LABELS else "OTHER"
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._metrics.requests.series(self._service, template, method, status)
            if len(self._series) < _SERIES_CACHE_MAX:
                self._series[key] = series
        self._metrics.requests.record(series, elapsed_s)
        audit = self._audit
        if audit is not None:
            principal = edge.principal
            audit.add(
                {
                    "service": self._service,
                    "user_id": None if principal is None else principal.user_text,
                    "ip": edge.client_ip,
                    "method": scope["method"][:METHOD_LENGTH_MAX],
                    "route": template,
                    "status": status,
                    # Whole microseconds in milliseconds (`round(x, 3)` costs ten times more);
                    # the decision is a `StrEnum`, written as its value.
                    "latency_ms": round(elapsed_s * 1_000_000) / 1000,
                    "decision": edge.decision,
                }
            )
