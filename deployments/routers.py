"""Which domain routers each ingress application mounts (named in `serve_config.yaml`).

The routers run inside the ingress replica: no `DeploymentHandle` hop on the hot path. Each
domain exposes a router builder that takes its own dependencies (a dataclass declared in the
domain, holding protocols); a wiring module per area (`deployments/<area>_wiring.py`) builds
those dependencies from the replica's `Resources`, registering what it opens in
`resources.closers` and its readiness checks in `resources.extra_checks`.
"""

from __future__ import annotations

from fastapi import APIRouter

from deployments.resources import Resources


async def api_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the public API application (`/api/v1`, `/.well-known`)."""
    return [*await _identity_routers(resources)]


async def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the Blnk-compatible ledger application (`/ledger`)."""
    return [*await _ledger_routers(resources)]


async def _identity_routers(resources: Resources) -> list[APIRouter]:
    """Registration, login, MFA, tokens, sessions (`/api/v1/auth`, `/.well-known`, `/oauth`)."""
    from deployments.identity_wiring import identity_routers  # noqa: PLC0415 - opened per replica

    return await identity_routers(resources)


async def _ledger_routers(resources: Resources) -> list[APIRouter]:
    """Blnk's HTTP API."""
    from deployments.ledger_wiring import ledger_routers as build  # noqa: PLC0415 - per application

    return await build(resources)
