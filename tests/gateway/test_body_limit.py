"""The request size limit over real HTTP: Content-Length checked first, chunked bodies counted.

Every request goes through uvicorn on a local port. The Expect: 100-continue case is written on
a raw socket, because it is about what the server does *before* the body is sent: it must
answer 413 without asking for the body (no `100 Continue`) and close the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from gateway.constants import BODY_BYTES_MAX_DEFAULT
from gateway.policy import BodyLimitPolicy, BodyLimitRoute, GatewayPolicy

CHUNK_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    policy = GatewayPolicy(
        body_limit=BodyLimitPolicy(
            routes=(BodyLimitRoute(path="/api/v1/auth/login", bytes_max=1024),)
        )
    )
    return serve(edge_app(policy=policy, with_verifier=False))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        size = min(CHUNK_BYTES, total - sent)
        sent += size
        yield b"x" * size


class TestContentLength:
    def test_body_at_the_limit_is_accepted(self, http: httpx.Client) -> None:
        """A body of exactly 128 KiB reaches the handler."""
        response = http.post("/api/v1/items", content=b"x" * BODY_BYTES_MAX_DEFAULT)
        assert response.status_code == 200
        assert response.json() == {"received_bytes": BODY_BYTES_MAX_DEFAULT}

    def test_one_byte_over_is_413_problem(self, http: httpx.Client) -> None:
        """One byte over the default limit is a 413 problem document naming the limit."""
        response = http.post("/api/v1/items", content=b"x" * (BODY_BYTES_MAX_DEFAULT + 1))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "GEN_PAYLOAD_TOO_LARGE"
        assert body["details"] == {"bytes_max": BODY_BYTES_MAX_DEFAULT}

    def test_limit_applies_to_unmatched_paths_too(self, http: httpx.Client) -> None:
        """The limit does not depend on a route existing: oversize to a 404 path is still 413."""
        response = http.post("/nowhere", content=b"x" * (BODY_BYTES_MAX_DEFAULT + 1))
        assert response.status_code == 413


class TestChunked:
    def test_streamed_body_over_the_limit_is_413(self, http: httpx.Client) -> None:
        """A chunked body without Content-Length is counted while read and refused past 128 KiB."""
        response = http.post("/api/v1/items", content=_chunks(BODY_BYTES_MAX_DEFAULT + CHUNK_BYTES))
        assert response.status_code == 413
        assert response.json()["code"] == "GEN_PAYLOAD_TOO_LARGE"
        assert response.json()["details"] == {"bytes_max": BODY_BYTES_MAX_DEFAULT}

    def test_streamed_body_within_the_limit_is_read(self, http: httpx.Client) -> None:
        """A chunked body under the limit reaches the handler whole."""
        response = http.post("/api/v1/items", content=_chunks(BODY_BYTES_MAX_DEFAULT))
        assert response.status_code == 200
        assert response.json() == {"received_bytes": BODY_BYTES_MAX_DEFAULT}

    def test_connection_stays_usable_after_a_refusal(self, http: httpx.Client) -> None:
        """After a chunked 413 the same client keeps working."""
        http.post("/api/v1/items", content=_chunks(BODY_BYTES_MAX_DEFAULT + CHUNK_BYTES))
        assert http.post("/api/v1/items", content=b"ok").status_code == 200


class TestRouteOverrides:
    def test_configured_route_limit(self, http: httpx.Client) -> None:
        """A route listed in the policy gets its own, smaller limit."""
        assert http.post("/api/v1/auth/login", content=b"x" * 1024).status_code == 200
        refused = http.post("/api/v1/auth/login", content=b"x" * 1025)
        assert refused.status_code == 413
        assert refused.json()["details"] == {"bytes_max": 1024}

    def test_route_max_body_size_raises_the_limit(self, http: httpx.Client) -> None:
        """FastAPI's per-route `max_body_size` overrides the default for that route."""
        body = b"x" * (512 * 1024)
        assert http.post("/api/v1/uploads", content=body).json() == {"received_bytes": len(body)}
        assert http.post("/api/v1/uploads", content=body * 2 + b"x").status_code == 413


class TestExpectContinue:
    def test_oversize_with_expect_is_413_before_the_body(self, base_url: str) -> None:
        """With Expect: 100-continue the answer is a final 413 (not 417, no 100) and a close."""
        address = urlsplit(base_url)
        head = (
            b"POST /api/v1/items HTTP/1.1\r\nHost: test\r\nUser-Agent: edge-test\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n"
        )
        with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
            sock.sendall(head)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        status_line, _, rest = received.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in received
        assert b"connection: close" in rest.lower()
        assert b"GEN_PAYLOAD_TOO_LARGE" in rest
