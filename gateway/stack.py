"""The edge policy stack as one ASGI layer: every policy, in order, for every request.

Each policy is a plain object (`gateway.request_id`, `.security_headers`, `.observer`,
`.body_limit`, `.bots`, `.admin_access`, `.cors`, `.authentication`, `.rate_limit`) that reads
the request's `EdgeState` and answers "pass" or "refuse with this error"; `EdgeMiddleware` calls
them in order and owns the one `send` wrapper that puts the edge's headers on the answer. One
layer instead of one middleware per policy: the policies cost what they do, not a coroutine, a
closure and a copy of the response start per policy (the whole stack has a budget of a few tens
of microseconds per request).

In order, and what an answer at each point carries:

```
request id          reuse a valid X-Request-ID or mint one; bound for every log line
observer            route template, client address (metrics and the audit line at the end)
body limit          413 when Content-Length is over the route's limit
NUL in the URL      400 for %00 in the path or query (no route means it; PostgreSQL cannot
                    store it)
bot detection       403 for denied user agents
admin address       403 outside the admin allow-list
CORS                preflights answered here; from here on answers get Vary: Origin (+ CORS)
authentication      401/403: bearer JWT, admin role, RFC 9470 step-up (needs a verifier)
rate limit          429/503 (needs a limiter); from here on answers get the rate-limit headers
handler             the routers, behind FastAPI's exception handlers (one renderer); a chunked
                    body is counted as it is read and 413 once over the limit
```

Every answer, the refusals and a crash included, gets the security headers and the request id.
A crash anywhere is answered here (a generic problem document) rather than by Starlette's
outermost error middleware, which would answer without the security headers, the request id
and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin_access import AdminAddressCheck
from gateway.authentication import Authentication
from gateway.body_limit import BodyLimit, BodyTooLargeError
from gateway.bots import BotDetection
from gateway.cors import Cors
from gateway.edge import Decision, EdgeState
from gateway.errors import NulInUrlError
from gateway.observer import Observer
from gateway.problems import ErrorStyle, send_error
from gateway.rate_limit import RateLimits
from gateway.request_id import RequestIds
from gateway.security_headers import SecurityHeaders
from kit.errors import AppError, InvariantError
from kit.telemetry import bind_request_id, reset_request_id

logger = logging.getLogger(__name__)

NO_RESPONSE_STATUS: Final = 499  # the client went away (or the app never answered)
METHOD_NOT_ALLOWED: Final = 405


class EdgeMiddleware:
    """Runs the edge policies in order around the app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        request_ids: RequestIds,
        security_headers: SecurityHeaders,
        observer: Observer,
        bots: BotDetection,
        admin_address: AdminAddressCheck,
        cors: Cors,
        authentication: Authentication | None,
        rate_limits: RateLimits | None,
        style: ErrorStyle,
    ) -> None:
        self.app = app
        self._ids = request_ids
        self._security = security_headers
        self._observer = observer
        self._body_limit = BodyLimit()
        self._bots = bots
        self._admin = admin_address
        self._cors = cors
        self._auth = authentication
        self._limits = rate_limits
        self._style = style

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, encoded_id = self._ids.accept(scope)
        token = bind_request_id(request_id)
        edge = self._observer.begin(scope)
        status = 0
        # Empty until the CORS stage has run (answers before it carry no CORS headers); then
        # the origin to echo, or None for one that is not allowed (Vary: Origin only).
        cors_origin: list[bytes | None] = []

        async def send_edge(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                # The answer's own header names, read once for every policy that must not
                # repeat one (ours below never collide with each other).
                names = {name.lower() for name, _ in headers}
                if edge.limit_headers:
                    headers.extend(edge.limit_headers)
                if cors_origin:
                    self._cors.decorate(headers, names, cors_origin[0])
                self._security.decorate(headers, names, is_docs=edge.route.is_docs)
                self._ids.decorate(headers, names, encoded_id)
                if status == METHOD_NOT_ALLOWED and edge.route.allowed_methods:
                    # RFC 9110 15.5.6: a 405 lists the methods the path does serve (the router's
                    # own list names only the first route on the path, and our renderer's none).
                    headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                    headers.append((b"allow", edge.route.allowed_methods.encode("latin-1")))
                message["headers"] = headers  # in place, as Starlette's own middlewares do
            await send(message)

        try:
            await self._run(scope, receive, send_edge, edge, cors_origin)
        except BodyTooLargeError as exc:  # a chunked body crossed its limit while being read
            if status:
                edge.decision = Decision.ERROR
                logger.exception("the request body crossed its limit after the answer began")
            else:
                await self._refuse(scope, receive, send_edge, exc.app_error)
        except Exception:  # the edge's last-resort handler: logged with its stack
            edge.decision = Decision.ERROR
            logger.exception("unhandled exception")
            if not status:
                error = InvariantError("unhandled exception")
                await self._refuse(scope, receive, send_edge, error)
        finally:
            elapsed_s = time.perf_counter() - started
            self._observer.record(scope, edge, status or NO_RESPONSE_STATUS, elapsed_s)
            reset_request_id(token)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        edge: EdgeState,
        cors_origin: list[bytes | None],
    ) -> None:
        too_large = self._body_limit.refusal(edge)
        if too_large is not None:
            await self._refuse(scope, receive, send, too_large[0], too_large[1])
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            edge.decision = Decision.DENY_NUL_IN_URL
            await self._refuse(scope, receive, send, NulInUrlError())
            return
        refusal = self._bots.refusal(edge) or self._admin.refusal(edge)
        if refusal is not None:
            await self._refuse(scope, receive, send, refusal)
            return
        if edge.is_preflight:
            headers = self._cors.preflight(edge)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        cors_origin.append(self._cors.allowed_origin(edge))
        if self._auth is not None:
            denied = self._auth.refusal(scope, edge)
            if denied is not None:
                error, challenge = denied
                challenge_header = None if challenge is None else {"WWW-Authenticate": challenge}
                await self._refuse(scope, receive, send, error, challenge_header)
                return
        limits = self._limits
        if limits is not None:
            limited = limits.check_now(edge) if limits.is_local else await limits.check(edge)
            if limited is not None:
                await self._refuse(scope, receive, send, limited[0], limited[1])
                return
        await self.app(scope, self._body_limit.counted(receive, edge), send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: AppError,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await send_error(scope, receive, send, error, style=self._style, headers=headers)
