"""CORS over real HTTP: preflights for allowed and disallowed origins, and actual requests; and
the `Vary` merge on an answer that already varies."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from gateway.cors import Cors
from gateway.policy import CorsPolicy

ALLOWED = "https://app.dwaybank.com"
STRANGER = "https://evil.example"


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app())


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _preflight(http: httpx.Client, origin: str, path: str = "/api/v1/transfers") -> httpx.Response:
    return http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


class TestPreflight:
    def test_allowed_origin(self, http: httpx.Client) -> None:
        """An allowed origin gets 200 with the seed's methods, headers, credentials and max-age."""
        response = _preflight(http, ALLOWED)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS"
        assert response.headers["access-control-allow-headers"] == (
            "Authorization, Content-Type, X-Request-ID"
        )
        assert response.headers["access-control-max-age"] == "3600"
        assert response.headers["vary"] == "Origin"

    def test_disallowed_origin_gets_no_cors_headers(self, http: httpx.Client) -> None:
        """Kong's answer: 200 without Access-Control-Allow-Origin, so the browser refuses."""
        response = _preflight(http, STRANGER)
        assert response.status_code == 200
        assert not [name for name in response.headers if name.startswith("access-control-")]
        assert response.headers["vary"] == "Origin"
        assert response.content == b""

    def test_preflight_needs_no_token(self, http: httpx.Client) -> None:
        """A preflight to a protected route is answered before authentication."""
        response = _preflight(http, ALLOWED, "/api/v1/me")
        assert response.status_code == 200
        assert "www-authenticate" not in response.headers

    def test_preflight_carries_security_headers(self, http: httpx.Client) -> None:
        """The preflight answer goes through the security headers layer too."""
        assert _preflight(http, ALLOWED).headers["x-content-type-options"] == "nosniff"


class TestActualRequests:
    def test_allowed_origin_is_echoed_with_exposed_headers(self, http: httpx.Client) -> None:
        """A request from an allowed origin can read our id, challenge and rate-limit headers."""
        response = http.get("/health/live", headers={"Origin": ALLOWED})
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        exposed = response.headers["access-control-expose-headers"]
        for name in ("X-Request-ID", "WWW-Authenticate", "RateLimit", "X-RateLimit-Limit-Minute"):
            assert name in exposed.split(", ")
        assert response.headers["vary"] == "Origin"

    def test_disallowed_origin_is_not_echoed(self, http: httpx.Client) -> None:
        """Another origin's request is served (CORS is the browser's check) without CORS headers."""
        response = http.get("/health/live", headers={"Origin": STRANGER})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        assert response.headers["vary"] == "Origin"

    def test_errors_carry_cors_headers_for_allowed_origins(self, http: httpx.Client) -> None:
        """A 401 from a browser app is readable by that app (CORS wraps authentication)."""
        response = http.get("/api/v1/me", headers={"Origin": ALLOWED})
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == ALLOWED

    def test_without_origin_only_vary_is_added(self, http: httpx.Client) -> None:
        """Same-origin and server-to-server calls get Vary: Origin for caches, nothing else."""
        response = http.get("/health/live")
        assert response.headers["vary"] == "Origin"
        assert "access-control-allow-origin" not in response.headers


class TestVaryMerge:
    """An answer that already varies (on Accept-Encoding, say) gains Origin in the same field."""

    @pytest.mark.parametrize(
        ("own", "merged"),
        [
            (b"Accept-Encoding", b"Accept-Encoding, Origin"),
            (b"origin, accept", b"origin, accept"),  # already there, in any case
        ],
    )
    def test_one_vary_field_naming_origin(self, own: bytes, merged: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"Vary", own)]
        Cors(CorsPolicy()).decorate(headers, {b"content-type", b"vary"}, ALLOWED.encode())
        varies = [value for name, value in headers if name.lower() == b"vary"]
        assert varies == [merged]
        assert (b"access-control-allow-origin", ALLOWED.encode()) in headers
