"""Every refusal of the edge has the one error shape: RFC 9457 on our API, Blnk's on /ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from gateway.constants import BODY_BYTES_MAX_DEFAULT
from gateway.limiter import SlidingLogLimiter
from gateway.problems import ErrorStyle
from kit.clock import FrozenClock

REQUIRED = {"type", "title", "status", "detail", "instance", "code", "request_id"}


@pytest.fixture(scope="module")
def api_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    limiter = SlidingLogLimiter(FrozenClock(datetime(2026, 1, 1, tzinfo=UTC)))
    return serve(edge_app(limiter=limiter))


@pytest.fixture(scope="module")
def ledger_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app(style=ErrorStyle.BLNK))


REFUSALS = [
    ("POST", "/api/v1/items", {"content": b"x" * (BODY_BYTES_MAX_DEFAULT + 1)}, 413),
    ("GET", "/api/v1/me", {"headers": {"User-Agent": "masscan/1.3"}}, 403),
    ("GET", "/api/v1/admin/users", {}, 403),
    ("GET", "/api/v1/me", {}, 401),
    ("GET", "/api/v1/me", {"headers": {"Authorization": "Bearer x.y.z"}}, 401),
    ("GET", "/api/v1/nope", {}, 404),
    ("DELETE", "/api/v1/me", {}, 405),
]


class TestProblemShape:
    @pytest.mark.parametrize(("method", "path", "kwargs", "status"), REFUSALS)
    def test_refusal_is_a_complete_problem(
        self, api_url: str, method: str, path: str, kwargs: dict[str, object], status: int
    ) -> None:
        """type, title, status, detail, instance, code and request_id, matching the answer."""
        with httpx.Client(base_url=api_url, timeout=30) as http:
            response = http.request(method, path, **kwargs)  # type: ignore[arg-type]  # test table
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert set(body) >= REQUIRED
        assert body["status"] == status
        assert body["instance"] == path
        assert body["request_id"] == response.headers["x-request-id"]
        assert body["type"].startswith("https://")

    @pytest.mark.parametrize(
        ("path", "instance"),
        [
            ("/api/v1/nope/%60x%60", "/api/v1/nope/%60x%60"),
            ("/api/v1/nope/caf%C3%A9", "/api/v1/nope/caf%C3%A9"),
            ("/api/v1/nope/a%20b%22c%3C", "/api/v1/nope/a%20b%22c%3C"),
            ("/api/v1/nope/100%25", "/api/v1/nope/100%25"),
        ],
    )
    def test_instance_is_a_uri_reference(self, api_url: str, path: str, instance: str) -> None:
        """`instance` is a URI reference (RFC 9457 3.1.5): a path holding characters a URI
        cannot is given escaped, never as the decoded text (a backtick, an accent, a space)."""
        with httpx.Client(base_url=api_url, timeout=30) as http:
            response = http.get(path)
        assert response.status_code == 404
        assert response.json()["instance"] == instance

    def test_rate_limit_refusal_is_a_complete_problem(self, api_url: str) -> None:
        """The 429 has the same members plus the draft's violated-policies."""
        with httpx.Client(base_url=api_url, timeout=30) as http:
            responses = [http.post("/api/v1/auth/login") for _ in range(6)]
        refused = responses[-1]
        assert refused.status_code == 429
        assert set(refused.json()) >= REQUIRED | {"violated-policies"}


class TestBlnkShape:
    @pytest.mark.parametrize(
        ("path", "headers", "status", "code"),
        [
            ("/api/v1/me", {"User-Agent": "sqlmap"}, 403, "GW_BOT_DENIED"),
            ("/api/v1/me", {}, 401, "AUTH_TOKEN_MISSING"),
            ("/api/v1/admin/users", {}, 403, "GW_ADDRESS_NOT_ALLOWED"),
        ],
    )
    def test_ledger_refusals_take_blnks_body(
        self, ledger_url: str, path: str, headers: dict[str, str], status: int, code: str
    ) -> None:
        """On the Blnk-compatible app the same refusal is Blnk's error body."""
        with httpx.Client(base_url=ledger_url, timeout=30) as http:
            response = http.get(path, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error", "error_detail"}
        assert body["error_detail"]["code"] == code

    def test_method_not_allowed_lists_the_allowed_methods(self, ledger_url: str) -> None:
        """A 405 carries `Allow` (RFC 9110 15.5.6), in Blnk's body on the ledger too."""
        with httpx.Client(base_url=ledger_url, timeout=30) as http:
            response = http.delete("/api/v1/me")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"
        assert response.json()["error_detail"]["code"] == "GEN_METHOD_NOT_ALLOWED"
