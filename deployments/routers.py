"""Which domain routers each ingress application mounts (named in `serve_config.yaml`).

The routers run inside the ingress replica: no `DeploymentHandle` hop on the hot path. Each
domain exposes a router builder that takes its own dependencies (a dataclass declared in the
domain, holding protocols); this module, the composition root, builds those dependencies from
the replica's `Resources`. One function per domain, so areas evolve without touching each other.
"""

from __future__ import annotations

from fastapi import APIRouter

from deployments.resources import Resources


def api_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the public API application (`/api/v1`, `/.well-known`)."""
    return [*_identity_routers(resources)]


def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the Blnk-compatible ledger application (`/ledger`)."""
    return [*_ledger_routers(resources)]


def _identity_routers(resources: Resources) -> list[APIRouter]:
    """Registration, login, MFA, tokens, sessions (`/api/v1/auth`, `/.well-known`)."""
    del resources
    return []


def _ledger_routers(resources: Resources) -> list[APIRouter]:
    """Blnk's HTTP API."""
    del resources
    return []
