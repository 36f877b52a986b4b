"""Which route a request is for, and what the policy says about that route, before routing.

The edge runs before FastAPI's router, yet authentication, step-up, body limits and
rate limits depend on the route, and metrics must carry the route *template*
(`/api/v1/transfers/{transfer_id}`), never the raw path, or every id becomes a time series.
`RouteTable` matches the request against the app's routes exactly as Starlette's router does
(first full match, else the first route whose path matches with another method) and combines
the route's own markers with the policy's path rules into one `RouteInfo`, cached per
(method, path) in a bounded map.

A route marks itself with `openapi_extra` keys, plain data a domain router can write without
importing the gateway: `{"x-step-up": True}` (RFC 9470 step-up on top of the configured paths)
and `{"x-money-moving": True}` (its rate limit fails closed). FastAPI's own per-route
`max_body_size` overrides the configured body limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import WebSocketRoute

from gateway.constants import ROUTE_CACHE_SIZE_MAX
from gateway.policy import GatewayPolicy, RateLimitRule, is_under, longest_match

STEP_UP_EXTENSION: Final = "x-step-up"
MONEY_MOVING_EXTENSION: Final = "x-money-moving"
UNMATCHED_ROUTE: Final = "unmatched"  # the metrics label of every path no route serves


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What the edge needs to know about the route a request is for."""

    template: str  # the route's path template under the app's root path, or UNMATCHED_ROUTE
    is_matched: bool  # a route serves this method on this path
    is_public: bool
    is_admin: bool
    is_step_up: bool
    is_money_moving: bool
    is_docs: bool
    is_bot_exempt: bool  # bot detection does not apply (health and metrics)
    body_bytes_max: int
    rate_rule: RateLimitRule | None
    # For a path some route serves with other methods: the methods of its path template, for
    # the `Allow` header RFC 9110 requires on a 405 ("DELETE, GET"); else empty.
    allowed_methods: str = ""


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of the app, flattened out of included routers."""

    template: str
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    is_step_up: bool
    is_money_moving: bool
    body_bytes_max: int | None
    is_in_schema: bool


def route_path(path: str, root_path: str) -> str:
    """The path inside the application (Starlette's rule for `root_path`)."""
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if not rest:
        return ""
    return rest if rest[0] == "/" else path


class RouteTable:
    """Resolves requests to `RouteInfo`; reads the app's routes on first use."""

    def __init__(self, app: FastAPI, policy: GatewayPolicy) -> None:
        self._app = app
        self._policy = policy
        self._entries: list[RouteEntry] | None = None
        self._cache: dict[tuple[str, str, str], RouteInfo] = {}

    @property
    def entries(self) -> list[RouteEntry]:
        """Every HTTP route of the app, in matching order."""
        if self._entries is None:
            self._entries = _collect(self._app)
        return self._entries

    def resolve(self, method: str, path: str, root_path: str = "") -> RouteInfo:
        """The route info for a request."""
        key = (method, path, root_path)
        info = self._cache.get(key)
        if info is not None:
            return info
        inner = route_path(path, root_path)
        full: RouteEntry | None = None
        partial: RouteEntry | None = None
        literal: RouteEntry | None = None  # a partial match whose template is the path itself
        for entry in self.entries:
            if entry.regex.match(inner) is None:
                continue
            if entry.methods is None or method in entry.methods:
                full = entry
                break
            if partial is None:
                partial = entry
            if literal is None and entry.template == inner:
                literal = entry
        found = full or partial
        template = UNMATCHED_ROUTE if found is None else root_path + found.template
        info = self.describe(method, inner, found, template=template, is_matched=full is not None)
        if full is None and partial is not None:
            resource = literal or partial  # `/balances/filter` itself, not `/balances/{id}`
            info = replace(info, allowed_methods=self._allowed_methods(resource.template))
        if len(self._cache) >= ROUTE_CACHE_SIZE_MAX:
            self._cache.clear()
        self._cache[key] = info
        return info

    def _allowed_methods(self, template: str) -> str:
        """Every method the routes of one path template serve, as an `Allow` header value: the
        resource's methods as the OpenAPI document lists them (`/balances/filter` allows POST,
        though `GET /balances/{balance_id}` would also take the path)."""
        methods: set[str] = set()
        for entry in self.entries:
            if entry.methods is not None and entry.template == template:
                methods |= entry.methods
        return ", ".join(sorted(methods))

    def describe(
        self,
        method: str,
        path: str,
        entry: RouteEntry | None,
        *,
        template: str,
        is_matched: bool,
    ) -> RouteInfo:
        """Combine the route's markers with the policy's path rules for `method` on `path`."""
        policy = self._policy
        body_route = longest_match(policy.body_limit.routes, method, path)
        body_bytes_max = policy.body_limit.bytes_max if body_route is None else body_route.bytes_max
        if entry is not None and entry.body_bytes_max is not None:
            body_bytes_max = entry.body_bytes_max
        rule = _rate_rule(policy, method, path)
        return RouteInfo(
            template=template,
            is_matched=is_matched,
            is_public=any(m.matches(method, path) for m in policy.auth.public),
            is_admin=any(m.matches(method, path) for m in policy.admin.routes),
            is_step_up=(entry is not None and entry.is_step_up)
            or any(m.matches(method, path) for m in policy.auth.step_up.routes),
            is_money_moving=(entry is not None and entry.is_money_moving)
            or (rule is not None and rule.is_money_moving),
            is_docs=any(is_under(path, m.path) for m in policy.security_headers.docs_routes),
            is_bot_exempt=any(m.matches(method, path) for m in policy.bots.exempt),
            body_bytes_max=body_bytes_max,
            rate_rule=rule,
        )


def _rate_rule(policy: GatewayPolicy, method: str, path: str) -> RateLimitRule | None:
    best: RateLimitRule | None = None
    best_length = -1
    for rule in policy.rate_limits.rules:
        match = longest_match(rule.routes, method, path)
        if match is not None and len(match.path) > best_length:
            best, best_length = rule, len(match.path)
    return best


def _collect(app: FastAPI) -> list[RouteEntry]:
    entries: list[RouteEntry] = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, WebSocketRoute):
            continue
        regex = getattr(context, "path_regex", None)
        template = context.path_format or context.path
        if not isinstance(regex, re.Pattern) or template is None:
            continue
        extra = getattr(context, "openapi_extra", None) or {}
        methods = context.methods
        body_bytes_max = getattr(context, "max_body_size", None)
        entries.append(
            RouteEntry(
                template=template,
                regex=regex,
                methods=None if methods is None else frozenset(methods),
                is_step_up=bool(extra.get(STEP_UP_EXTENSION)),
                is_money_moving=bool(extra.get(MONEY_MOVING_EXTENSION)),
                body_bytes_max=body_bytes_max if isinstance(body_bytes_max, int) else None,
                is_in_schema=bool(getattr(context, "include_in_schema", False)),
            )
        )
    return entries
