"""Security headers on every response, errors included.

The seed's set (HSTS, nosniff, frame denial, referrer policy), `Cache-Control: no-store` and a
Content-Security-Policy for an API that serves no documents (`default-src 'none';
frame-ancestors 'none'`). The interactive docs pages load Swagger UI and ReDoc from a CDN, so
they get the docs CSP instead. A header the response already sets is left alone, which lets a
handler choose its own caching.
"""

from __future__ import annotations

from gateway.policy import SecurityHeadersPolicy

_CSP = b"content-security-policy"


class SecurityHeaders:
    """Adds the configured headers to each response."""

    def __init__(self, policy: SecurityHeadersPolicy) -> None:
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in policy.headers.items()
        ]
        docs_csp = policy.docs_content_security_policy.encode("latin-1")
        self._docs_headers = [(n, docs_csp if n == _CSP else v) for n, v in self._headers]
        if _CSP not in {name for name, _ in self._headers}:
            self._docs_headers.append((_CSP, docs_csp))
        self._names = frozenset(name for name, _ in self._docs_headers)

    def decorate(
        self, headers: list[tuple[bytes, bytes]], names: set[bytes], *, is_docs: bool
    ) -> None:
        """Add every configured header the response does not set itself (`names`: its own
        header names, lowercase)."""
        wanted = self._docs_headers if is_docs else self._headers
        present = names & self._names
        if not present:  # the usual case: the handler set none of them
            headers.extend(wanted)
            return
        headers.extend((name, value) for name, value in wanted if name not in present)
