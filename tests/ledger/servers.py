"""The ledger app on a real local HTTP server for the tests, in three configurations.

One runner (`run_ledger_app`: uvicorn in a thread with its own event loop, the pool opened on
that loop, a free port) serves the plain ledger, the secure-mode ledger (a master key, an
envelope cipher under a fresh key-encryption key, and an HTTP client for hooks) and the events
ledger (an engine that evaluates balance monitors after every batch).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Final

import httpx
import uvicorn
from pydantic import SecretStr

from gateway.app import create_app
from gateway.policy import BodyLimitPolicy, BotPolicy, GatewayPolicy
from gateway.problems import ErrorStyle
from kit.clock import SystemClock
from kit.crypto import EnvelopeCipher, KeyRing
from kit.db import Database
from kit.settings import Settings
from ledger.endpoints import LedgerDeps, build_routers
from ledger.engine import LedgerEngine
from ledger.monitors import MonitorHook
from tests.ports import free_port

MASTER_KEY: Final = "test-master-" + secrets.token_urlsafe(24)
SERVER_START_TIMEOUT_S: Final = 10.0
SERVER_STOP_TIMEOUT_S: Final = 15.0
HOOK_CLIENT_TIMEOUT_S: Final = 10.0

# What Blnk's Python SDK (python-requests) sends as its User-Agent: the tests' own HTTP clients
# send it too, to be admitted by the bot policy below.
UA: Final = {"User-Agent": "python-requests/2.34.2"}
# The ledger's edge: Blnk's 5 MiB body limit, and Blnk's own SDKs (python-requests) welcome.
LEDGER_POLICY: Final = GatewayPolicy(
    body_limit=BodyLimitPolicy(bytes_max=5 * 1024 * 1024),
    bots=BotPolicy(allow=(r"^python-requests/",)),
)
# The events tests also call the ledger with httpx.
EVENTS_POLICY: Final = GatewayPolicy(
    body_limit=BodyLimitPolicy(bytes_max=5 * 1024 * 1024),
    bots=BotPolicy(allow=(r"^python-requests/", r"^python-httpx/")),
)


@contextmanager
def run_ledger_app(
    settings: Settings,
    dsn: str,
    *,
    title: str,
    deps_for: Callable[[Database], LedgerDeps],
    policy: GatewayPolicy = LEDGER_POLICY,
) -> Iterator[str]:
    """Serve the ledger app built on `deps_for(db)` on a free port until the block ends."""
    port = free_port()
    state: dict[str, uvicorn.Server] = {}
    ready = threading.Event()

    async def serve() -> None:
        db = await Database.open(settings, dsn)
        deps = deps_for(db)
        app = create_app(
            title=title,
            version="test",
            routers=build_routers(deps),
            checks=list,
            error_style=ErrorStyle.BLNK,
            policy=policy,
            service="ledger",
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        state["server"] = server
        ready.set()
        try:
            await server.serve()
        finally:
            if deps.http is not None:
                await deps.http.aclose()
            await db.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(SERVER_START_TIMEOUT_S)
    server = state["server"]
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)


def run_ledger_server(settings: Settings, dsn: str) -> AbstractContextManager[str]:
    """The plain ledger: an in-process engine."""
    return run_ledger_app(
        settings,
        dsn,
        title="ledger-test",
        deps_for=lambda db: LedgerDeps(
            db=db, port=LedgerEngine(db, writer="http-test"), clock=SystemClock()
        ),
    )


def run_secure_ledger_server(settings: Settings, dsn: str) -> AbstractContextManager[str]:
    """Secure mode: a master key, identity tokenization, outbound HTTP for hooks."""
    return run_ledger_app(
        settings,
        dsn,
        title="ledger-secure-test",
        deps_for=lambda db: LedgerDeps(
            db=db,
            port=LedgerEngine(db, writer="http-secure-test"),
            clock=SystemClock(),
            cipher=EnvelopeCipher(KeyRing(secrets.token_bytes(32))),
            master_key=SecretStr(MASTER_KEY),
            http=httpx.AsyncClient(timeout=HOOK_CLIENT_TIMEOUT_S, trust_env=False),
        ),
    )


def run_events_ledger_server(settings: Settings, dsn: str) -> AbstractContextManager[str]:
    """The engine evaluates balance monitors after each batch."""
    return run_ledger_app(
        settings,
        dsn,
        title="ledger-events-test",
        policy=EVENTS_POLICY,
        deps_for=lambda db: LedgerDeps(
            db=db,
            port=LedgerEngine(db, writer="events-test", batch_hooks=[MonitorHook()]),
            clock=SystemClock(),
        ),
    )
