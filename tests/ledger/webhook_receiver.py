"""Test servers for events: a webhook receiver and a ledger app whose engine evaluates monitors.

`WebhookReceiver` is a real HTTP server (the standard library's, in a thread) that records
every request it gets, per path: `/ok/...` answers 200, `/fail-N/...` answers 500 to its first
N requests and 200 after, `/down/...` always answers 500. Tests check the signatures
themselves, with the subscription's secret, exactly as a receiver would.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.policy import BodyLimitPolicy, BotPolicy, GatewayPolicy
from gateway.problems import ErrorStyle
from kit.clock import SystemClock
from kit.db import Database
from kit.settings import Settings
from ledger.endpoints import LedgerDeps, build_routers
from ledger.engine import LedgerEngine
from ledger.monitors import MonitorHook

POLICY = GatewayPolicy(
    body_limit=BodyLimitPolicy(bytes_max=5 * 1024 * 1024),
    bots=BotPolicy(allow=(r"^python-requests/", r"^python-httpx/")),
)
_FAIL = re.compile(r"^/fail-(\d+)/")


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """Records webhook requests; answers by path (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._counts: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self._received.append(Received(path, {k.lower(): v for k, v in headers.items()}, body))
            seen = self._counts.get(path, 0) + 1
            self._counts[path] = seen
        if path.startswith("/down/"):
            return 500
        failing = _FAIL.match(path)
        if failing is not None and seen <= int(failing.group(1)):
            return 500
        return 200

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        """A receiver URL for `path` (starting with /ok/, /fail-N/ or /down/)."""
        return self.base_url + path

    def received(self, path: str) -> list[Received]:
        """Requests that arrived at `path`, oldest first."""
        with self._lock:
            return [r for r in self._received if r.path == path]

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def run_events_ledger_server(settings: Settings, dsn: str) -> Iterator[str]:
    """The ledger app on a free port, its engine evaluating balance monitors after each batch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state: dict[str, uvicorn.Server] = {}
    ready = threading.Event()

    async def serve() -> None:
        db = await Database.open(settings, dsn)
        engine = LedgerEngine(db, writer="events-test", batch_hooks=[MonitorHook()])
        deps = LedgerDeps(db=db, port=engine, clock=SystemClock())
        app = create_app(
            title="ledger-events-test",
            version="test",
            routers=build_routers(deps),
            checks=list,
            error_style=ErrorStyle.BLNK,
            policy=POLICY,
            service="ledger",
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        state["server"] = server
        ready.set()
        try:
            await server.serve()
        finally:
            await db.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    server = state["server"]
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
