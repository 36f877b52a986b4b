"""The ingress app factory: health, metrics, request ids and the one error renderer.

Driven in-process through httpx's ASGI transport; the full HTTP path through Serve is covered by
the end-to-end test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from gateway.app import create_app
from gateway.health import DependencyCheck
from gateway.problems import PROBLEM_CONTENT_TYPE, ErrorStyle
from kit.errors import ConflictError, DatabaseUnavailableError, InvariantError
from kit.metrics import counter


class Item(BaseModel):
    amount: int


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/conflict")
    async def conflict() -> None:
        raise ConflictError("reference already used", reference="r-1")

    @router.get("/down")
    async def down() -> None:
        raise DatabaseUnavailableError()

    @router.get("/bug")
    async def bug() -> None:
        raise InvariantError("balance bln_1 went negative: -5", balance_id="bln_1")

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("password=hunter2 SELECT * FROM users")

    @router.post("/items")
    async def items(item: Item) -> dict[str, int]:
        counter("test_items_total", "items posted").inc()
        return {"amount": item.amount}

    return router


async def _up() -> dict[str, Any]:
    return {"detail": "fine"}


async def _down() -> None:
    raise DatabaseUnavailableError("cannot reach PostgreSQL at postgresql://u:***@db/x")


def _app(style: ErrorStyle = ErrorStyle.PROBLEM, *, failing: bool = False) -> FastAPI:
    checks = [
        DependencyCheck("database", _down if failing else _up),
        DependencyCheck("optional", _down, is_critical=False),
    ]
    return create_app(
        title="t", version="1", routers=[_router()], checks=lambda: checks, error_style=style
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


class TestHealth:
    async def test_live_is_always_200(self, client: httpx.AsyncClient) -> None:
        """Liveness checks nothing but the process."""
        response = await client.get("/health/live")
        assert response.status_code == 200

    async def test_ready_reports_each_dependency(self, client: httpx.AsyncClient) -> None:
        """Ready is 200 when critical checks pass, with a JSON entry per dependency."""
        response = await client.get("/health/ready")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"]["database"]["status"] == "up"
        assert body["checks"]["database"]["detail"] == "fine"
        assert body["checks"]["optional"] == {
            "status": "down",
            "critical": False,
            "latency_ms": body["checks"]["optional"]["latency_ms"],
            "reason": "GEN_DATABASE_UNAVAILABLE",
        }

    async def test_ready_is_503_when_a_critical_check_fails(self) -> None:
        """A failing critical dependency turns readiness to 503 without leaking its message."""
        transport = httpx.ASGITransport(app=_app(failing=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["database"]["reason"] == "GEN_DATABASE_UNAVAILABLE"
        assert "postgresql://" not in response.text

    async def test_metrics_are_exposed_and_count(self, client: httpx.AsyncClient) -> None:
        """/metrics serves the Prometheus text of this process, including our counters."""
        await client.post("/items", json={"amount": 1})
        first = await client.get("/metrics")
        await client.post("/items", json={"amount": 2})
        second = await client.get("/metrics")
        assert first.headers["content-type"].startswith("text/plain")

        def value(text: str) -> float:
            line = next(x for x in text.splitlines() if x.startswith("test_items_total "))
            return float(line.split()[1])

        assert value(second.text) == value(first.text) + 1


class TestProblems:
    async def test_domain_error_is_problem_json(self, client: httpx.AsyncClient) -> None:
        """A DomainError renders as RFC 9457 with code and request id."""
        response = await client.get("/conflict", headers={"X-Request-ID": "req-12345678"})
        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
        body = response.json()
        assert body["code"] == "GEN_CONFLICT"
        assert body["title"] == "Conflict"
        assert body["detail"] == "reference already used"
        assert body["instance"] == "/conflict"
        assert body["request_id"] == "req-12345678"
        assert body["details"] == {"reference": "r-1"}
        assert body["type"].endswith("/gen-conflict")

    async def test_dependency_error_has_retry_after(self, client: httpx.AsyncClient) -> None:
        """An unavailable dependency is 503 with Retry-After."""
        response = await client.get("/down")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"

    async def test_invariant_error_hides_detail(self, client: httpx.AsyncClient) -> None:
        """A broken invariant answers a generic 500; the balance id stays in the logs."""
        response = await client.get("/bug")
        assert response.status_code == 500
        assert "bln_1" not in response.text
        assert response.json()["code"] == "GEN_INTERNAL"

    async def test_unhandled_exception_leaks_nothing(self, client: httpx.AsyncClient) -> None:
        """A crash answers 500 without the exception's text."""
        response = await client.get("/crash")
        assert response.status_code == 500
        assert "hunter2" not in response.text
        assert "SELECT" not in response.text
        assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE

    async def test_unknown_route_and_method(self, client: httpx.AsyncClient) -> None:
        """404 and 405 come from the same renderer."""
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["code"] == "GEN_NOT_FOUND"
        wrong = await client.delete("/conflict")
        assert wrong.status_code == 405
        assert wrong.json()["code"] == "GEN_METHOD_NOT_ALLOWED"

    async def test_validation_errors_list_fields(self, client: httpx.AsyncClient) -> None:
        """A body that fails its schema is 422 with the offending fields."""
        response = await client.post("/items", json={"amount": "lots"})
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "GEN_VALIDATION"
        assert body["details"]["errors"][0]["loc"] == ["body", "amount"]

    async def test_blnk_style(self) -> None:
        """On the ledger the same error takes Blnk's body."""
        transport = httpx.ASGITransport(app=_app(ErrorStyle.BLNK))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/conflict")
        assert response.status_code == 409
        assert response.json() == {
            "error": "reference already used",
            "error_detail": {
                "code": "GEN_CONFLICT",
                "message": "reference already used",
                "details": {"reference": "r-1"},
            },
        }


class TestRequestIds:
    async def test_valid_incoming_id_is_reused(self, client: httpx.AsyncClient) -> None:
        """A well-formed X-Request-ID is echoed."""
        response = await client.get("/health/live", headers={"X-Request-ID": "abc-123-def-456"})
        assert response.headers["x-request-id"] == "abc-123-def-456"

    @pytest.mark.parametrize(
        "bad", ["short", "x" * 200, "has space in it", "<script>alert</script>"]
    )
    async def test_invalid_incoming_id_is_replaced(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        """A malformed id is replaced by a fresh uuid."""
        response = await client.get("/health/live", headers={"X-Request-ID": bad})
        assert response.headers["x-request-id"] != bad
        assert len(response.headers["x-request-id"]) == 36

    async def test_non_ascii_incoming_id_is_replaced(self, client: httpx.AsyncClient) -> None:
        """An id with a byte outside ASCII (a latin-1 letter) is replaced, not decoded."""
        bad = "abcdefgh\xe9ij".encode("latin-1")
        response = await client.get("/health/live", headers={b"X-Request-ID": bad})
        [echoed] = response.headers.get_list("x-request-id")
        assert (len(echoed), echoed == bad.decode("latin-1")) == (36, False)

    async def test_missing_id_is_created(self, client: httpx.AsyncClient) -> None:
        """Without a header every response still carries an id, different each time."""
        first = await client.get("/health/live")
        second = await client.get("/health/live")
        assert first.headers["x-request-id"] != second.headers["x-request-id"]
