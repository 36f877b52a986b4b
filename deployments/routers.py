"""Which domain routers each ingress application mounts (named in `serve_config.yaml`).

The routers run inside the ingress replica: no `DeploymentHandle` hop on the hot path. Domains
add their routers here as they arrive.
"""

from __future__ import annotations

from fastapi import APIRouter

from deployments.resources import Resources


def api_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the public API application (`/api/v1`, `/.well-known`)."""
    del resources
    return []


def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Routers of the Blnk-compatible ledger application (`/ledger`)."""
    del resources
    return []
