"""CORS for the configured origins (the seed's two by default), with credentials.

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
edge and never reaches authentication or the routes. For an allowed origin: 200 with the origin echoed,
credentials allowed, the configured methods and headers, `Access-Control-Max-Age` and
`Vary: Origin`. For any other origin we give Kong's answer, 200 without
`Access-Control-Allow-Origin`, so the browser refuses the real request; unlike Kong we also send
no other `Access-Control-*` header, which would only describe our policy to an origin that may
not use it. Starlette's answer (400 "Disallowed CORS origin" as text/plain) was not taken: it
is the same refusal in a shape our clients cannot parse as a problem document.

Actual requests always get `Vary: Origin` (the answer depends on it); from an allowed origin
they also get the echoed origin, `Access-Control-Allow-Credentials` and the exposed headers
(request id, Retry-After, the Bearer challenge and every rate-limit header).
"""

from __future__ import annotations

from gateway.edge import Decision, EdgeState
from gateway.policy import CorsPolicy

_VARY = b"vary"
_ORIGIN = b"Origin"


def _merge_vary(headers: list[tuple[bytes, bytes]]) -> None:
    for index, (name, value) in enumerate(headers):
        if name.lower() == _VARY:
            if b"origin" not in value.lower():
                headers[index] = (name, value + b", " + _ORIGIN)
            return
    headers.append((_VARY, _ORIGIN))


class Cors:
    """Answers preflights and decorates responses for allowed origins."""

    def __init__(self, policy: CorsPolicy, *, exposed_headers: tuple[str, ...] = ()) -> None:
        self._origins = frozenset(policy.origins)
        exposed = ", ".join(dict.fromkeys((*policy.expose_headers, *exposed_headers)))
        self._actual: list[tuple[bytes, bytes]] = []
        self._preflight: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-methods", ", ".join(policy.methods).encode("latin-1")),
            (b"access-control-allow-headers", ", ".join(policy.headers).encode("latin-1")),
            (b"access-control-max-age", str(policy.max_age_s).encode("latin-1")),
        ]
        if policy.allow_credentials:
            credentials = (b"access-control-allow-credentials", b"true")
            self._actual.append(credentials)
            self._preflight.append(credentials)
        if exposed:
            self._actual.append((b"access-control-expose-headers", exposed.encode("latin-1")))

    def allowed_origin(self, edge: EdgeState) -> bytes | None:
        """The request's origin when it is allowed, ready to echo; else None."""
        origin = edge.origin
        return origin.encode("latin-1") if origin is not None and origin in self._origins else None

    def preflight(self, edge: EdgeState) -> list[tuple[bytes, bytes]]:
        """The headers of the (empty, 200) answer to a preflight."""
        headers = [(_VARY, _ORIGIN), (b"content-length", b"0")]
        allowed = self.allowed_origin(edge)
        if allowed is not None:
            headers.append((b"access-control-allow-origin", allowed))
            headers.extend(self._preflight)
            edge.decision = Decision.CORS_PREFLIGHT
        else:
            edge.decision = Decision.CORS_PREFLIGHT_DENIED
        return headers

    def decorate(
        self, headers: list[tuple[bytes, bytes]], names: set[bytes], allowed: bytes | None
    ) -> None:
        """`Vary: Origin` on an actual response (merged into the answer's own `Vary`, when
        `names`, its lowercase header names, hold one), and for an allowed origin the CORS
        headers."""
        if _VARY in names:
            _merge_vary(headers)
        else:
            headers.append((_VARY, _ORIGIN))
        if allowed is not None:
            headers.append((b"access-control-allow-origin", allowed))
            headers.extend(self._actual)
