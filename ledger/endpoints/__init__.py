"""Blnk's HTTP API, one router per family, all mounted under `/ledger` by the ingress."""

from __future__ import annotations

from fastapi import APIRouter

from ledger.endpoints.balances import balances_router
from ledger.endpoints.common import LedgerDeps
from ledger.endpoints.ledgers import ledgers_router
from ledger.endpoints.system import system_router
from ledger.endpoints.transactions import metadata_router, transactions_router


def build_routers(deps: LedgerDeps) -> list[APIRouter]:
    """Every router of the ledger API."""
    return [
        system_router(deps),
        ledgers_router(deps),
        balances_router(deps),
        transactions_router(deps),
        metadata_router(deps),  # last: its path matches any first segment
    ]


__all__ = ["LedgerDeps", "build_routers"]
