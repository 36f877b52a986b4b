"""Wiring of the ledger application: its dependencies from a replica's resources."""

from __future__ import annotations

from fastapi import APIRouter

from deployments.resources import Resources
from kit.clock import SystemClock
from ledger.endpoints import LedgerDeps, build_routers
from ledger.engine import LedgerEngine


async def ledger_routers(resources: Resources) -> list[APIRouter]:
    """Blnk's API over the group-commit engine."""
    engine = LedgerEngine(resources.db, writer="ingress")
    deps = LedgerDeps(db=resources.db, port=engine, clock=SystemClock())
    return build_routers(deps)
