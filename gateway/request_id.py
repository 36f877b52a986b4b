"""Request ids: reuse a well-formed incoming `X-Request-ID`, else mint one; bind it for logs.

The first stage of the edge (`gateway.stack`). Under Ray Serve the proxy has already put an id
on the request and will echo it on the response, so `echo` is off there; elsewhere (plain
uvicorn, tests) the edge echoes the id itself.

Minting costs about a microsecond (`kit.ids.uuid4_text`: 16 random bytes written in the UUID
version 4 layout, on every request that arrives without an id).
"""

from __future__ import annotations

import re
from typing import Final

from starlette.types import Scope

from kit.ids import uuid4_text

HEADER: Final = "x-request-id"
_HEADER_BYTES: Final = HEADER.encode("latin-1")
_VALID: Final = re.compile(rb"[A-Za-z0-9._:\-]{8,128}")  # checked on the header's bytes


class RequestIds:
    """Reads or mints the request id and puts it on the response: an incoming `X-Request-ID`
    is kept when it is 8-128 of `[A-Za-z0-9._:-]` (checked on its bytes), else replaced."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo

    def accept(self, scope: Scope) -> tuple[str, bytes]:
        """The request's id (text and header bytes); the request's headers and state carry it
        from here on, so handlers reading the header see the id the logs carry."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        incoming: bytes | None = None
        for name, value in headers:
            if name == _HEADER_BYTES:
                incoming = value
                break
        if incoming is not None and _VALID.fullmatch(incoming):  # the usual case under Serve
            encoded = incoming
            request_id = incoming.decode("ascii")
        else:
            request_id = uuid4_text()
            encoded = request_id.encode("ascii")
            if incoming is None:
                scope["headers"] = [*headers, (_HEADER_BYTES, encoded)]
            else:
                scope["headers"] = [(n, v) for n, v in headers if n != _HEADER_BYTES]
                scope["headers"].append((_HEADER_BYTES, encoded))
        scope.setdefault("state", {})["request_id"] = request_id
        return request_id, encoded

    def decorate(
        self, headers: list[tuple[bytes, bytes]], names: set[bytes], encoded: bytes
    ) -> None:
        """Put the id on a response's headers (replacing one the handler set: `names` are the
        answer's own header names, lowercase)."""
        if not self.echo:
            return
        if _HEADER_BYTES in names:
            headers[:] = [(n, v) for n, v in headers if n.lower() != _HEADER_BYTES]
        headers.append((_HEADER_BYTES, encoded))
