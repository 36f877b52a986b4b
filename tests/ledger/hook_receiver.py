"""A transaction-hook endpoint for the hook tests, and hooks handed to the runner directly.

`HookReceiver` is a real HTTP server (the standard library's, in a thread) standing in for a
customer's PRE/POST_TRANSACTION hook endpoint. A test asks it for a fresh URL together with a
script that decides, from the call's number at that URL, the status, the body and how long to
wait before answering (approve, refuse, fail a few times, hang); a path with no script is
approved at once. It records every call (the path, the headers as sent, the raw body), so a
test checks Blnk's wire contract and the signature itself, as a customer's endpoint would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from ledger.hooks import HookRecord, HookType

CALL_WAIT_S: Final = 5.0  # how long a test waits for the calls it expects
POLL_INTERVAL_S: Final = 0.02
DIRECT_HOOK_TIMEOUT_S: Final = 5

Reply = tuple[int, bytes, float]  # status, body, delay before answering (seconds)
Script = Callable[[int], Reply]  # the call's number at its URL (from 1) -> the reply


@dataclass
class Call:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The parsed body."""
        return json.loads(self.body)

    def header(self, name: str) -> str:
        """The value of header `name`, whatever the case it was sent in; "" when absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), "")


def approve(_: int) -> Reply:
    """The script of a hook that says yes at once."""
    return 200, b'{"success": true, "message": "ok"}', 0.0


def blnk_signature(call: Call, key: str) -> str:
    """The X-Blnk-Signature Blnk sends for `call` under `key`: hex HMAC-SHA256 of
    "{X-Blnk-Timestamp}.{body}"."""
    signed = f"{call.header('X-Blnk-Timestamp')}.".encode() + call.body
    return hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()


class HookReceiver:
    """Records hook calls and answers each with the script of its URL (see the module
    docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._scripts: dict[str, Script] = {}
        self._reply_headers: dict[str, dict[str, str]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, reply, delay_s = receiver._record(
                    Call(self.path, dict(self.headers.items()), body)
                )
                time.sleep(delay_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    for name, value in receiver._reply_headers.get(self.path, {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a slow reply's caller timed out and hung up, as some tests want

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, call: Call) -> Reply:
        with self._lock:
            self._calls.append(call)
            number = sum(1 for c in self._calls if c.path == call.path)
        return self._scripts.get(call.path, approve)(number)

    def url(
        self, path: str, script: Script = approve, *, reply_headers: dict[str, str] | None = None
    ) -> str:
        """A fresh URL (`/{path}-{8 hex}`) answered by `script(call number)`, with
        `reply_headers` added to each answer."""
        unique = f"/{path}-{uuid.uuid4().hex[:8]}"
        self._scripts[unique] = script
        if reply_headers is not None:
            self._reply_headers[unique] = reply_headers
        return self.base_url + unique

    def calls_to(self, url: str, count: int = 1, *, wait_s: float = CALL_WAIT_S) -> list[Call]:
        """Wait (at most `wait_s`; not at all with 0) until `url` was called `count` times;
        its calls, oldest first."""
        path = url.removeprefix(self.base_url)
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                found = [c for c in self._calls if c.path == path]
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(POLL_INTERVAL_S)

    def close(self) -> None:
        """Stop the server."""
        self._server.shutdown()
        self._server.server_close()


def direct_hook(
    url: str,
    hook_type: HookType = HookType.POST_TRANSACTION,
    *,
    name: str = "direct",
    timeout_s: int = DIRECT_HOOK_TIMEOUT_S,
) -> HookRecord:
    """A hook the runner is handed directly, active and without retries (its run stamps match
    no row)."""
    return HookRecord(
        hook_id=f"hook_{uuid.uuid4()}",
        name=name,
        url=url,
        hook_type=hook_type,
        active=True,
        timeout_s=timeout_s,
        retry_count=0,
        created_at=datetime.now(UTC),
        last_run=None,
        last_success=False,
    )
