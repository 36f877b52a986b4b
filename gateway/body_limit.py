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
from starlette.types import Message, Receive

from gateway.edge import Decision, EdgeState
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


class BodyLimit:
    """413 for bodies over the route's limit."""

    def refusal(self, edge: EdgeState) -> tuple[PayloadTooLargeError, dict[str, str] | None] | None:
        """The error (and its extra headers) for a declared length over the limit, or None."""
        if edge.content_length is None:
            return None
        try:
            declared = int(edge.content_length)
        except ValueError:
            declared = 0  # the HTTP server has already refused a malformed length
        bytes_max = edge.route.body_bytes_max
        if declared <= bytes_max:
            return None
        edge.decision = Decision.DENY_BODY_SIZE
        headers = {"Connection": "close"} if edge.has_expect_continue else None
        return _too_large(bytes_max), headers

    @staticmethod
    def counted(receive: Receive, edge: EdgeState) -> Receive:
        """`receive` as the handler should see it: counted when the body has no declared length
        (the read that crosses the limit raises `BodyTooLargeError`), else unchanged (HTTP/1.1
        framing: with neither a length nor a transfer coding there is no body)."""
        if edge.content_length is not None or not edge.has_transfer_encoding:
            return receive
        bytes_max = edge.route.body_bytes_max
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > bytes_max:
                    edge.decision = Decision.DENY_BODY_SIZE
                    raise BodyTooLargeError(bytes_max)
            return message

        return receive_counted
