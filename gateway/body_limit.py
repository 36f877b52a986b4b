"""Request size limit: 128 KiB by default, per route when configured.

With a `Content-Length` over the limit the request is answered 413 before a byte of the body
is read. Without one (a chunked body) the bytes are counted as the handler reads them and the
read that crosses the limit raises, which ends in the same 413 problem document. A body within
its declared `Content-Length` is not counted: the HTTP server already refuses to deliver more
bytes than were declared; and a request with neither header has no body at all.

`Expect: 100-continue` with an oversized `Content-Length` is answered 413 as well, not 417 as
Kong does: the expectation itself could be met, it is the size that is refused, and 413 says
so (RFC 9110 §10.1.1 lets a server answer a final status instead of 100). Since the client has
not sent the body, that answer also closes the connection, so no half-sent body can be misread
as the next request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge import Decision, EdgeState, edge_state
from gateway.problems import ErrorStyle, send_error
from kit.errors import PayloadTooLargeError


class BodyTooLargeError(HTTPException):
    """Raised from `receive` when a streamed body crosses its limit.

    An `HTTPException` because FastAPI re-raises those unchanged from body parsing (anything
    else becomes a 400); the renderer answers with the `PayloadTooLargeError` it carries.
    """

    def __init__(self, bytes_max: int) -> None:
        super().__init__(status_code=413)
        self.app_error = _too_large(bytes_max)


def _too_large(bytes_max: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is limited to {bytes_max} bytes.", bytes_max=bytes_max
    )


class BodyLimitMiddleware:
    """413 for bodies over the route's limit."""

    def __init__(self, app: ASGIApp, *, style: ErrorStyle) -> None:
        self.app = app
        self._style = style

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        edge = edge_state(scope)
        bytes_max = edge.route.body_bytes_max
        if edge.content_length is not None:
            try:
                declared = int(edge.content_length)
            except ValueError:
                declared = 0  # the HTTP server has already refused a malformed length
            if declared > bytes_max:
                edge.decision = Decision.DENY_BODY_SIZE
                headers = {"Connection": "close"} if edge.has_expect_continue else None
                error = _too_large(bytes_max)
                await send_error(scope, receive, send, error, style=self._style, headers=headers)
                return
            await self.app(scope, receive, send)
            return
        if not edge.has_transfer_encoding:  # HTTP/1.1 framing: no length, no coding, no body
            await self.app(scope, receive, send)
            return
        await self._stream_counted(scope, receive, send, edge, bytes_max)

    async def _stream_counted(
        self, scope: Scope, receive: Receive, send: Send, edge: EdgeState, bytes_max: int
    ) -> None:
        received = 0
        has_started = False

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bytes_max:
                    edge.decision = Decision.DENY_BODY_SIZE
                    raise BodyTooLargeError(bytes_max)
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal has_started
            has_started = has_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_counted, send_tracked)
        except BodyTooLargeError as exc:
            if has_started:
                raise
            await send_error(scope, receive, send, exc.app_error, style=self._style)
