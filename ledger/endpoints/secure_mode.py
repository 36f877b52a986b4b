"""Blnk's secure mode as a router dependency: `X-Blnk-Key` on every route but `/` and `/health`.

`build_routers` applies `secure_mode_guard` to every router except the system one when a master
key is configured; with none, nothing is checked (Blnk's default, open mode) and no principal
is set, so the management routes that need one (hooks, API keys) refuse, as Blnk's do.

The resource a key's scope must name is read from the matched route's template, not the raw
path, so a mount prefix (`/ledger`) changes nothing and `/{entity_id}/metadata` is "unknown"
to API keys exactly as in Blnk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from ledger.apikeys import (
    METHOD_ACTIONS,
    KeyVerifier,
    Principal,
    has_permission,
    mark_generated_by,
    resource_for_path,
)
from ledger.errors import InsufficientPermissionsError, MissingApiKeyError
from ledger.surface_errors import UnknownResourceError

KEY_HEADER: Final = "X-Blnk-Key"
# Reads the header, and puts Blnk's scheme on every guarded operation of the OpenAPI document
# (with no master key nothing is guarded and the document names no scheme: Blnk's open mode).
BLNK_KEY_SCHEME: Final = APIKeyHeader(
    name=KEY_HEADER,
    scheme_name="blnkKey",
    description="The master key or an API key (`blnk_...`) with `resource:action` scopes.",
    auto_error=False,  # the guard answers a missing key in Blnk's own words
)
_PRINCIPAL_ATTRIBUTE: Final = "blnk_principal"


def secure_mode_guard(verifier: KeyVerifier) -> Callable[..., Awaitable[None]]:
    """The dependency that authenticates and authorizes a request in secure mode."""

    async def guard(
        request: Request, key: Annotated[str | None, Security(BLNK_KEY_SCHEME)]
    ) -> None:
        if not key:
            raise MissingApiKeyError("Authentication required. Use X-Blnk-Key header")
        principal = await verifier.verify(key)
        setattr(request.state, _PRINCIPAL_ATTRIBUTE, principal)
        if principal.key is None:
            return  # the master key may do anything
        route = request.scope.get("route")
        resource = resource_for_path(getattr(route, "path", request.url.path))
        if resource is None:
            raise UnknownResourceError()
        if not has_permission(principal.key.scopes, resource, request.method):
            action = METHOD_ACTIONS.get(request.method.upper(), request.method.lower())
            raise InsufficientPermissionsError(f"Insufficient permissions for {resource}:{action}")
        verifier.touch(principal.key)
        if request.method.upper() == "POST":
            mark_generated_by(principal.key.api_key_id)

    return guard


def principal_of(request: Request) -> Principal | None:
    """Who the request acts as; None in open mode."""
    principal: Principal | None = getattr(request.state, _PRINCIPAL_ATTRIBUTE, None)
    return principal
