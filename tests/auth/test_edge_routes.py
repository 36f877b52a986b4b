"""The edge against the identity API's real routes: which are public, and what a 405 allows.

The edge asks for a bearer token on every matched route not in `auth.public`; the handlers
ask for a principal through `Edge.principal` and the dependencies built on it (or the gateway's
`current_principal`). The two must agree route by route, or the deployed API breaks in a way
no handler test sees: a handler that takes an mfa_token or client credentials behind a route
the edge protects answers 401 before it runs (a pending login's SMS, email and passkey steps,
and the OAuth token, revocation and introspection endpoints did), and a handler that takes a
principal behind a public route loses the edge's checks. Method: the API application as a
replica builds it (identity routers, the admin surface, health and metrics, default policy),
every operation resolved through the edge's own route table.
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from auth.dependencies import AuthDependencies
from auth.endpoints import build_routers
from auth.endpoints.common import Edge
from gateway.admin import admin_router
from gateway.app import create_app
from gateway.policy import GatewayPolicy
from gateway.principal import current_principal

pytestmark = pytest.mark.db

_PARAMETER = re.compile(r"\{[^}]+\}")


def _takes_a_principal(dependant: Dependant) -> bool:
    """Whether the handler, or any dependency it pulls in, resolves the bearer principal."""
    for dependency in dependant.dependencies:
        call = dependency.call
        # The Edge's dependencies are its principal and the checks built on it.
        if call is current_principal or isinstance(getattr(call, "__self__", None), Edge):
            return True
        if _takes_a_principal(dependency):
            return True
    return False


class TestPublicRoutes:
    async def test_public_exactly_where_no_principal_is_taken(self, deps: AuthDependencies) -> None:
        """Each operation is public at the edge if and only if its handler takes no principal."""
        policy = GatewayPolicy()
        admin = admin_router(deps, limiter=None, rate_policy=policy.rate_limits)
        app = create_app(
            title="DwayBank API",
            version="test",
            routers=[*build_routers(deps), admin],
            checks=list,
            policy=policy,
            verifier=deps.verifier,
        )
        table = app.edge_table
        assert table is not None
        disagreements = []
        seen = 0
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if not isinstance(route, APIRoute) or context.path_format is None:
                continue
            path = _PARAMETER.sub("x", context.path_format)
            for method in context.methods or ():
                info = table.resolve(method, path)
                assert info.is_matched, (method, context.path_format)
                seen += 1
                needs_token = _takes_a_principal(route.dependant)
                if info.is_public == needs_token:
                    disagreements.append(f"{method} {context.path_format}: public={info.is_public}")
        assert seen >= 40  # the identity API, the admin surface, health and metrics
        assert disagreements == []


class TestMethodNotAllowed:
    async def test_lists_every_method_of_the_path(self, client: httpx.AsyncClient) -> None:
        """`/api/v1/auth/sessions` is served by two routes (GET, DELETE); a 405 there names
        both in `Allow`, as RFC 9110 requires (the router's own header named only the first
        route's method, and the renderer dropped it)."""
        response = await client.put("/api/v1/auth/sessions")
        assert response.status_code == 405
        assert response.headers["allow"] == "DELETE, GET"
        assert response.json()["code"] == "GEN_METHOD_NOT_ALLOWED"
