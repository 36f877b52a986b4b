"""The ledger app in process, on an event loop of its own, reachable from synchronous code.

Hypothesis and Schemathesis drive synchronous test functions, while the ledger app, its pool and
its engine live on one asyncio loop. `LedgerInProcess` owns that loop: it opens the pool on it,
builds the app as `tests/ledger/servers.py` does (the same edge stack, Blnk's error style), and
runs every request to completion on it through httpx's ASGI transport. `RequestsOverAsgi` lets
Schemathesis's own request serialization (a `requests` session) reach the app the same way.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, Final, TypeVar

import httpx
import requests
from pydantic import SecretStr
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from gateway.app import create_app
from gateway.problems import ErrorStyle
from kit.clock import SystemClock
from kit.crypto import EnvelopeCipher, KeyRing
from kit.db import Database
from kit.settings import Settings
from ledger.endpoints import LedgerDeps, build_routers
from ledger.engine import LedgerEngine
from ledger.verification import Report, verify
from tests.ledger.servers import EVENTS_POLICY, HOOK_CLIENT_TIMEOUT_S

BASE_URL: Final = "http://ledger.test"
SERVED_RECURSION_LIMIT: Final = 1_000  # CPython's default
HTTPX_UA: Final = {"User-Agent": "python-httpx/fuzz"}  # admitted by EVENTS_POLICY's bot rules

T = TypeVar("T")


class LedgerInProcess:
    """The ledger app (an in-process engine, identity tokenization, outbound HTTP for hooks; in
    secure mode with `master_key`, which every request then carries) on a private event loop."""

    def __init__(self, settings: Settings, dsn: str, *, master_key: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.db = self.run(Database.open(settings, dsn))
        self.hook_http = httpx.AsyncClient(timeout=HOOK_CLIENT_TIMEOUT_S, trust_env=False)
        deps = LedgerDeps(
            db=self.db,
            port=LedgerEngine(self.db, writer="fuzz"),
            clock=SystemClock(),
            cipher=EnvelopeCipher(KeyRing(secrets.token_bytes(32))),
            master_key=None if master_key is None else SecretStr(master_key),
            http=self.hook_http,
        )
        self.headers = dict(HTTPX_UA)
        if master_key is not None:
            self.headers["X-Blnk-Key"] = master_key
        self.app = create_app(
            title="ledger-fuzz",
            version="test",
            routers=build_routers(deps),
            checks=list,
            error_style=ErrorStyle.BLNK,
            policy=EVENTS_POLICY,
            service="ledger",
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url=BASE_URL,
            headers=self.headers,
        )

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the app's loop to completion."""
        return self.loop.run_until_complete(coroutine)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the app, answered in full, under the interpreter's default recursion
        limit (as a served app runs; Hypothesis raises the limit while its tests run, which
        would hide a request that runs out of stack)."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(SERVED_RECURSION_LIMIT)
        try:
            return self.run(self.client.request(method, path, **kwargs))
        finally:
            sys.setrecursionlimit(limit)

    def verify(self) -> Report:
        """`dwaybank ledger verify`'s proofs over the database as it is now."""

        async def prove() -> Report:
            async with self.db.connection() as conn:
                return await verify(conn)

        return self.run(prove())

    def requests_session(self) -> requests.Session:
        """A `requests` session whose every request goes to the app in process."""
        session = requests.Session()
        session.headers.update(self.headers)
        session.mount(BASE_URL, RequestsOverAsgi(self))
        return session

    def close(self) -> None:
        """Close the client and the pool, then the loop."""
        self.run(self.client.aclose())
        self.run(self.hook_http.aclose())
        self.run(self.db.close())
        self.loop.close()


class RequestsOverAsgi(BaseAdapter):
    """A `requests` transport adapter that hands the prepared request, bytes as they are, to
    the in-process app."""

    def __init__(self, ledger: LedgerInProcess) -> None:
        super().__init__()
        self.ledger = ledger

    def send(  # type: ignore[override]  # requests' stubs type the keyword arguments loosely
        self, request: requests.PreparedRequest, **_: Any
    ) -> requests.Response:
        body = request.body
        content = body.encode() if isinstance(body, str) else (body or b"")
        assert request.method is not None
        assert request.url is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        reply = self.ledger.request(request.method, request.url, headers=headers, content=content)
        response = requests.Response()
        response.status_code = reply.status_code
        response.headers = CaseInsensitiveDict(reply.headers)
        response._content = reply.content
        response.encoding = reply.encoding
        response.url = request.url
        response.request = request
        response.reason = _reason(reply.status_code)
        return response

    def close(self) -> None:
        """Nothing to release: the app's client belongs to `LedgerInProcess`."""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
