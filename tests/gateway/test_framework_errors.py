"""Errors the web framework raises itself reach clients as the product's own 4xx, never a 500.

Starlette answers a form it cannot parse (a multipart body without a boundary) with its own
HTTP 400 exception; the renderer maps it to GEN_BAD_REQUEST in either error style. And an
error whose details carry an amount past 64 bits renders exactly (orjson alone refuses it).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from gateway.app import create_app
from gateway.policy import AuthPolicy, GatewayPolicy, RouteMatch
from gateway.problems import ErrorStyle
from kit.errors import ConflictError
from tests.gateway.conftest import BROWSER

HUGE = 2**70


def _router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/v1/forms")
    async def form(request: Request) -> dict[str, int]:
        async with request.form() as parsed:
            return {"fields": len(parsed)}

    @router.get("/api/v1/huge")
    async def huge() -> None:
        raise ConflictError("an amount too large", amount=HUGE)

    return router


@pytest.fixture(scope="module", params=[ErrorStyle.PROBLEM, ErrorStyle.BLNK])
def base_url(request: pytest.FixtureRequest, serve: Callable[[FastAPI], str]) -> str:
    public = (
        *AuthPolicy().public,
        RouteMatch(path="/api/v1/forms"),
        RouteMatch(path="/api/v1/huge"),
    )
    app = create_app(
        title="framework errors",
        version="1",
        routers=[_router()],
        checks=list,
        error_style=request.param,
        policy=GatewayPolicy(auth=AuthPolicy(public=public)),
    )
    return serve(app)


def _code(response: httpx.Response) -> str:
    body = response.json()
    return str(body["error_detail"]["code"] if "error_detail" in body else body["code"])


def test_a_form_that_does_not_parse_is_400(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/api/v1/forms",
        content=b"a=1",
        headers={"Content-Type": "multipart/form-data", "User-Agent": BROWSER},
    )
    assert response.status_code == 400, response.text
    assert _code(response) == "GEN_BAD_REQUEST"


def test_a_parsed_form_still_answers(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/api/v1/forms", data={"a": "1"}, headers={"User-Agent": BROWSER}
    )
    assert response.status_code == 200
    assert response.json() == {"fields": 1}


def test_details_past_64_bits_render_exactly(base_url: str) -> None:
    response = httpx.get(f"{base_url}/api/v1/huge", headers={"User-Agent": BROWSER})
    assert response.status_code == 409, response.text
    assert str(HUGE) in response.text
    assert _code(response) == "GEN_CONFLICT"
