"""The NUL character in a URL (`%00`) is a 400 at the edge: no route means it, and PostgreSQL's
text cannot store it, so a handler passing it on would answer 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from tests.gateway.conftest import BROWSER


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app(with_verifier=False))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30, headers={"User-Agent": BROWSER}) as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/wallets/w%00",
        "/api/v1/wallets/balance?currency=USD%00",
        "/api/v1/wallets/balance?%00=1",
        "/api/v1/nope%00",
    ],
)
def test_nul_in_path_or_query_is_400_problem(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "GW_NUL_IN_URL"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/api/v1/wallets/w%2500", {"wallet_id": "w%00"}),  # an encoded percent sign, then 00
        ("/api/v1/wallets/balance?note=50%2500", None),
    ],
)
def test_an_encoded_percent_before_00_is_ordinary_text(
    http: httpx.Client, path: str, answer: dict[str, str] | None
) -> None:
    response = http.get(path)
    assert response.status_code == 200, response.text
    if answer is not None:
        assert response.json() == answer
