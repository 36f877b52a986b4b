"""A webhook receiver for the events tests.

`WebhookReceiver` is a real HTTP server (the standard library's, in a thread) that records
every request it gets, per path: `/ok/...` answers 200, `/fail-N/...` answers 500 to its first
N requests and 200 after, `/down/...` always answers 500. Tests check the signatures
themselves, with the subscription's secret, exactly as a receiver would.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
