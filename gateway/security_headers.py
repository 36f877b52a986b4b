"""Security headers on every response, errors included.

The seed's set (HSTS, nosniff, frame denial, referrer policy), `Cache-Control: no-store` and a
Content-Security-Policy for an API that serves no documents (`default-src 'none';
frame-ancestors 'none'`). The interactive docs pages load Swagger UI and ReDoc from a CDN, so
they get the docs CSP instead. A header the response already sets is left alone, which lets a
handler choose its own caching.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge import EDGE_SCOPE_KEY
from gateway.policy import SecurityHeadersPolicy

_CSP = b"content-security-policy"


class SecurityHeadersMiddleware:
    """Adds the configured headers to each response start."""

    def __init__(self, app: ASGIApp, *, policy: SecurityHeadersPolicy) -> None:
        self.app = app
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in policy.headers.items()
        ]
        docs_csp = policy.docs_content_security_policy.encode("latin-1")
        self._docs_headers = [(n, docs_csp if n == _CSP else v) for n, v in self._headers]
        if _CSP not in {name for name, _ in self._headers}:
            self._docs_headers.append((_CSP, docs_csp))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                edge = scope.get(EDGE_SCOPE_KEY)
                wanted = self._docs_headers if edge is not None and edge.route.is_docs else None
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}  # ASGI header names are lowercase
                headers.extend(
                    (name, value) for name, value in wanted or self._headers if name not in present
                )
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)
