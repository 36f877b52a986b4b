"""Request ids: reuse a well-formed incoming `X-Request-ID`, else mint one; bind it for logs.

A pure ASGI middleware (no per-request task or body copy). Under Ray Serve the proxy has already
put an id on the request and will echo it on the response, so `echo` is off there; elsewhere
(plain uvicorn, tests) this middleware echoes the id itself.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kit.telemetry import bind_request_id, reset_request_id

HEADER: Final = "x-request-id"
_VALID: Final = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


def accept_request_id(value: str | None) -> str:
    """`value` when it is a safe id (8-128 of `[A-Za-z0-9._:-]`), else a fresh uuid."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return str(uuid.uuid4())


class RequestIdMiddleware:
    """Binds the request id for the duration of the request."""

    def __init__(self, app: ASGIApp, *, echo: bool = True) -> None:
        self.app = app
        self.echo = echo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = MutableHeaders(scope=scope)
        request_id = accept_request_id(headers.get(HEADER))
        headers[HEADER] = request_id
        scope.setdefault("state", {})["request_id"] = request_id
        token = bind_request_id(request_id)

        async def send_with_id(message: Message) -> None:
            if self.echo and message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_request_id(token)
