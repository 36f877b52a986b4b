"""A ledger server in secure mode for the tests: a master key, a cipher, outbound HTTP.

The same real uvicorn-in-a-thread pattern as `conftest.run_ledger_server`, with the optional
dependencies of `LedgerDeps` filled in: a master key (Blnk's secure mode), an envelope cipher
under a fresh key-encryption key (identity tokenization), and an HTTP client (hooks).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import httpx
import uvicorn
from pydantic import SecretStr

from gateway.app import create_app
from gateway.problems import ErrorStyle
from kit.clock import SystemClock
from kit.crypto import EnvelopeCipher, KeyRing
from kit.db import Database
from kit.settings import Settings
from ledger.endpoints import LedgerDeps, build_routers
from ledger.engine import LedgerEngine

MASTER_KEY: Final = "test-master-" + secrets.token_urlsafe(24)
SERVER_START_TIMEOUT_S: Final = 10.0
SERVER_STOP_TIMEOUT_S: Final = 15.0
HOOK_CLIENT_TIMEOUT_S: Final = 10.0


@contextmanager
def run_secure_ledger_server(settings: Settings, dsn: str) -> Iterator[str]:
    """Serve the ledger app in secure mode on a free port until the block ends."""
    from tests.ledger.conftest import LEDGER_POLICY  # noqa: PLC0415 - one policy for both servers

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state: dict[str, uvicorn.Server] = {}
    ready = threading.Event()

    async def serve() -> None:
        db = await Database.open(settings, dsn)
        http = httpx.AsyncClient(timeout=HOOK_CLIENT_TIMEOUT_S, trust_env=False)
        deps = LedgerDeps(
            db=db,
            port=LedgerEngine(db, writer="http-secure-test"),
            clock=SystemClock(),
            cipher=EnvelopeCipher(KeyRing(secrets.token_bytes(32))),
            master_key=SecretStr(MASTER_KEY),
            http=http,
        )
        app = create_app(
            title="ledger-secure-test",
            version="test",
            routers=build_routers(deps),
            checks=list,
            error_style=ErrorStyle.BLNK,
            policy=LEDGER_POLICY,
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
            await http.aclose()
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
