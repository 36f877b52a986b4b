"""The OpenAPI document: a snapshot of the whole schema, and the properties it must keep.

The snapshot (`openapi_snapshot.json` beside this file) is the document of the demo routes
behind the default policy, compared exactly, so any change to what clients see is a reviewed
change. After an intended change, refresh it with

    DWAYBANK_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/gateway/test_openapi.py

and commit the new file with the change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.problems import ErrorStyle

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
UPDATE_ENV = "DWAYBANK_UPDATE_SNAPSHOTS"


@pytest.fixture(scope="module")
def schema(edge_app: Callable[..., FastAPI]) -> dict[str, Any]:
    document: dict[str, Any] = edge_app().openapi()
    return document


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


class TestSnapshot:
    def test_schema_matches_the_snapshot(self, schema: dict[str, Any]) -> None:
        """The served schema is exactly the committed snapshot (refresh: see the module doc)."""
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if os.environ.get(UPDATE_ENV) == "1":
            SNAPSHOT.write_text(text, encoding="utf-8")
        assert SNAPSHOT.exists(), f"no snapshot yet: run with {UPDATE_ENV}=1"
        assert json.loads(SNAPSHOT.read_text(encoding="utf-8")) == json.loads(text)

    def test_served_at_openapi_json_and_docs(
        self, serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]
    ) -> None:
        """/openapi.json serves the same document and /docs renders without a token."""
        app = edge_app()
        with httpx.Client(base_url=serve(app), timeout=30) as http:
            served = http.get("/openapi.json")
            docs = http.get("/docs")
        assert served.status_code == 200
        assert served.json() == json.loads(json.dumps(app.openapi()))
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text


class TestContent:
    def test_every_operation_states_its_security(self, schema: dict[str, Any]) -> None:
        """Protected operations require the bearer JWT scheme; public ones require nothing."""
        assert schema["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An RS256 access token from /api/v1/auth (keys at /.well-known/jwks.json).",
        }
        public = {"/health/live", "/health/ready", "/metrics", "/api/v1/auth/login"}
        for path, _, operation in _operations(schema):
            expected: list[dict[str, list[str]]] = [] if path in public else [{"bearerAuth": []}]
            assert operation["security"] == expected, path

    def test_public_prefixes_match_whole_segments(self, schema: dict[str, Any]) -> None:
        """`/api/v1/auth/login` being public does not make `/api/v1/auth/login-status` public."""
        operation = schema["paths"]["/api/v1/auth/login-status"]["get"]
        assert operation["security"] == [{"bearerAuth": []}]

    def test_every_error_response_is_a_problem(self, schema: dict[str, Any]) -> None:
        """Every 4xx/5xx response is application/problem+json; FastAPI's 422 schema is gone."""
        for path, method, operation in _operations(schema):
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and (path, status) != ("/health/ready", "503"):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )
        assert "HTTPValidationError" not in schema["components"]["schemas"]
        assert "Problem" in schema["components"]["schemas"]

    def test_route_declared_problems_are_listed(self, schema: dict[str, Any]) -> None:
        """problem_responses() puts a route's own error codes in its responses."""
        conflict = schema["paths"]["/api/v1/transfers"]["post"]["responses"]["409"]
        assert conflict["description"].startswith("GEN_CONFLICT")

    def test_step_up_and_rate_limits_are_described(self, schema: dict[str, Any]) -> None:
        """Step-up routes carry x-step-up; limited routes carry 429 and their windows."""
        transfer = schema["paths"]["/api/v1/transfers"]["post"]
        assert transfer["x-step-up"] == {"acr_values": ["mfa"], "max_age_s": 300}
        assert transfer["x-rate-limit"]["windows"][0] == {
            "name": "minute",
            "seconds": 60,
            "limit": 10,
        }
        assert "429" in transfer["responses"]
        assert "x-step-up" not in schema["paths"]["/api/v1/me"]["get"]

    def test_ledger_style_documents_blnk_errors(self, edge_app: Callable[..., FastAPI]) -> None:
        """On the Blnk-compatible app every error response is Blnk's body."""
        ledger = edge_app(style=ErrorStyle.BLNK).openapi()
        responses = ledger["paths"]["/api/v1/me"]["get"]["responses"]
        assert responses["401"]["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/BlnkError"}}
        }
        assert "BlnkError" in ledger["components"]["schemas"]
        assert "Problem" not in ledger["components"]["schemas"]
