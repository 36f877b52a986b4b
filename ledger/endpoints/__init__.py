"""Blnk's HTTP API, one router per family, all mounted under `/ledger` by the ingress."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Depends

from ledger.api_port import ApiLedgerPort
from ledger.apikeys import KeyVerifier
from ledger.endpoints.api_keys import api_keys_router
from ledger.endpoints.balances import balances_router
from ledger.endpoints.common import LedgerDeps
from ledger.endpoints.fx import fx_router
from ledger.endpoints.hooks import hooks_router
from ledger.endpoints.identities import identities_router
from ledger.endpoints.ledgers import ledgers_router
from ledger.endpoints.monitors import balance_monitors_router
from ledger.endpoints.reconciliation import reconciliation_router
from ledger.endpoints.search import search_router
from ledger.endpoints.secure_mode import secure_mode_guard
from ledger.endpoints.system import system_router
from ledger.endpoints.transactions import metadata_router, transactions_router
from ledger.endpoints.webhooks import webhooks_router
from ledger.hooks import HookRunner
from ledger.reconciliation_runner import ReconciliationRunner


def build_routers(deps: LedgerDeps, *, hooks: HookRunner | None = None) -> list[APIRouter]:
    """Every router of the ledger API.

    Transactions go through `ApiLedgerPort` (API-key provenance, transaction hooks). With a
    master key set, every router but the system one (`/`, `/health`) is behind the secure-mode
    dependency.

    The routers come side by side, each to be included by the app itself: FastAPI re-checks
    every router nested in an included router on each request it matches, and one parent over
    the dozen families cost ~10-20 us per request on the hot transaction route. In secure mode
    each family gets its own guard router around it.

    Args:
        deps: what the routers use.
        hooks: the transaction-hook runner, from a caller that closes it (`HookRunner.aclose`)
            before the HTTP client and the pool at shutdown; without one, a runner is made here
            that nothing drains (post hooks still running at shutdown are lost).
    """
    if hooks is None:
        hooks = new_hook_runner(deps)
    api_deps = replace(deps, port=ApiLedgerPort(deps.port, hooks))
    verifier = None
    if deps.master_key is not None and deps.master_key.get_secret_value():
        verifier = KeyVerifier(deps.db, master_key=deps.master_key, clock=deps.clock)
    families = (  # hottest first: a request is matched against the routes in order
        transactions_router(api_deps),
        balances_router(api_deps),
        ledgers_router(api_deps),
        identities_router(api_deps),
        api_keys_router(api_deps, verifier),
        hooks_router(api_deps, hooks),
        search_router(api_deps),
        reconciliation_router(api_deps, ReconciliationRunner(deps.db, clock=deps.clock)),
        balance_monitors_router(api_deps),
        webhooks_router(api_deps),
        fx_router(api_deps),
        metadata_router(api_deps),  # last: its path matches any first segment
    )
    if verifier is None:
        return [system_router(deps), *families]
    guard = Depends(secure_mode_guard(verifier))
    guarded: list[APIRouter] = []
    for family in families:
        router = APIRouter(dependencies=[guard])
        router.include_router(family)
        guarded.append(router)
    return [system_router(deps), *guarded]


def new_hook_runner(deps: LedgerDeps) -> HookRunner:
    """The transaction-hook runner over the ledger's pool and HTTP client, signing with the
    master key (Blnk's server secret) when one is set."""
    return HookRunner(deps.db, clock=deps.clock, secret=deps.master_key, http=deps.http)


__all__ = ["LedgerDeps", "build_routers", "new_hook_runner"]
