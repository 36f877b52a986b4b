"""Security headers on every answer over real HTTP: successes, 404, 500 and every refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response

from gateway.app import create_app
from gateway.constants import BODY_BYTES_MAX_DEFAULT

EXPECTED = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "x-xss-protection": "0",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "strict-origin-when-cross-origin",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app())


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _assert_secured(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.status_code, name)
    assert response.headers["x-request-id"]


class TestEveryAnswer:
    def test_success(self, http: httpx.Client) -> None:
        """A 200 carries the full set and the request id."""
        _assert_secured(http.get("/health/live"))

    def test_not_found(self, http: httpx.Client) -> None:
        """The router's 404 carries them."""
        response = http.get("/api/v1/nowhere")
        assert response.status_code == 404
        _assert_secured(response)

    def test_unhandled_exception(self, http: httpx.Client, mint: Callable[..., str]) -> None:
        """A crashing handler's 500 carries them, as a problem document that leaks nothing."""
        response = http.get("/api/v1/crash", headers={"Authorization": f"Bearer {mint()}"})
        assert response.status_code == 500
        _assert_secured(response)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "GEN_INTERNAL"
        assert response.json()["detail"] == "An internal error occurred."
        for secret in ("hunter2", "SELECT", "RuntimeError", "Traceback"):
            assert secret not in response.text

    @pytest.mark.parametrize(
        ("method", "path", "kwargs", "status"),
        [
            ("GET", "/api/v1/me", {}, 401),
            ("GET", "/api/v1/wallets/balance", {"headers": {"User-Agent": "sqlmap/1.8"}}, 403),
            ("GET", "/api/v1/admin/users", {}, 403),
            ("POST", "/api/v1/items", {"content": b"x" * (BODY_BYTES_MAX_DEFAULT + 1)}, 413),
            ("DELETE", "/health/live", {}, 405),
        ],
    )
    def test_refusals(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        kwargs: dict[str, object],
        status: int,
    ) -> None:
        """Refusals from every layer of the stack carry them too."""
        response = http.request(method, path, **kwargs)  # type: ignore[arg-type]  # test table
        assert response.status_code == status
        _assert_secured(response)


class TestExceptions:
    def test_docs_page_gets_the_docs_policy(self, http: httpx.Client) -> None:
        """/docs may load Swagger UI from its CDN; nothing else may."""
        response = http.get("/docs")
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "https://cdn.jsdelivr.net" in csp
        assert "frame-ancestors 'none'" in csp

    def test_handler_header_wins(self, serve: Callable[[FastAPI], str]) -> None:
        """A response that sets its own Cache-Control keeps it; the others are still added."""
        router = APIRouter()

        @router.get("/cached")
        async def cached() -> Response:
            return Response(b"{}", headers={"Cache-Control": "public, max-age=60"})

        app = create_app(title="t", version="1", routers=[router], checks=list)
        with httpx.Client(base_url=serve(app), timeout=30) as http:
            response = http.get("/cached")
        assert response.headers["cache-control"] == "public, max-age=60"
        assert response.headers["x-frame-options"] == "DENY"
