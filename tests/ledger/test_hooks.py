"""Transaction hooks through Blnk's own Python SDK, called on a real local HTTP receiver.

Hooks are managed with the master key on the secure-mode server. A small `http.server` in a
thread stands in for the customer's hook endpoint: it records every call (headers and raw
body) and answers as each test scripts it (approve, refuse, fail a few times, hang). The
assertions check Blnk's wire contract (signature, headers, body) and our gate semantics: a
pre hook that refuses or cannot answer keeps the transaction out of the ledger; a post hook is
called once the transaction is durable. Every test removes the hooks it registered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.ledger.servers import MASTER_KEY

pytestmark = pytest.mark.db

CALL_WAIT_S = 5.0
Reply = tuple[int, bytes, float]  # status, body, delay before answering (seconds)


@dataclass
class Call:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The parsed body."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """A hook endpoint: records calls, answers with the script of each path."""

    base_url: str = ""
    calls: list[Call] = field(default_factory=list)
    scripts: dict[str, Callable[[int], Reply]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, script: Callable[[int], Reply]) -> str:
        """A fresh URL answered by `script(call number)`."""
        unique = f"/{path}-{uuid.uuid4().hex[:8]}"
        self.scripts[unique] = script
        return self.base_url + unique

    def calls_to(self, url: str, count: int = 1, *, wait_s: float = CALL_WAIT_S) -> list[Call]:
        """Wait (at most `wait_s`) until `url` was called `count` times; its calls."""
        path = url.removeprefix(self.base_url)
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                found = [c for c in self.calls if c.path == path]
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)


def _approve(_: int) -> Reply:
    return 200, b'{"success": true, "message": "ok"}', 0.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The local hook endpoint, for this module."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.calls.append(Call(self.path, dict(self.headers.items()), body))
                number = sum(1 for c in state.calls if c.path == self.path)
            status, reply, delay_s = state.scripts.get(self.path, _approve)(number)
            time.sleep(delay_s)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a slow reply's caller timed out and hung up, as the timeout test wants

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hooks(blnk_master: Any) -> Iterator[Any]:
    """The SDK with the master key; every hook is deleted after the test."""
    yield blnk_master
    for hook in blnk_master.hooks.list().data or []:
        blnk_master.hooks.delete(hook["id"])


def _register(client: Any, url: str, hook_type: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": f"hook-{uuid.uuid4().hex[:6]}",
        "url": url,
        "type": hook_type,
        "active": True,
        "timeout": 5,
        "retry_count": 0,
    }
    body.update(extra)
    response = client.hooks.create(body)
    assert response.status == 201, response.to_dict()
    data: dict[str, Any] = response.data
    return data


def _funded_balance(client: Any) -> str:
    ledger_id = client.ledgers.create({"name": "hooks"}).data["ledger_id"]
    balance_id: str = client.ledger_balances.create(
        {"ledger_id": ledger_id, "currency": "USD"}
    ).data["balance_id"]
    return balance_id


def _post(client: Any, destination: str, reference: str) -> Any:
    return client.transactions.create(
        {
            "precise_amount": 700,
            "precision": 100,
            "reference": reference,
            "currency": "USD",
            "description": "hooked",
            "source": "@WorldUSD",
            "destination": destination,
            "allow_overdraft": True,
            "skip_queue": True,
        }
    )


def _wait_for_run(client: Any, hook_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + CALL_WAIT_S
    hook: dict[str, Any] = client.hooks.get(hook_id).data
    while hook["last_run"].startswith("0001") and time.monotonic() < deadline:
        time.sleep(0.02)
        hook = client.hooks.get(hook_id).data
    return hook


class TestHookManagement:
    def test_create_get_list_update_delete(self, hooks: Any, receiver: Receiver) -> None:
        """A hook gets a hook_ id; it is read, listed by type, replaced, and deleted (then 404)."""
        created = _register(
            hooks, receiver.url("crud", _approve), "PRE_TRANSACTION", timeout=7, retry_count=2
        )
        assert created["id"].startswith("hook_")
        assert (created["type"], created["timeout"], created["retry_count"]) == (
            "PRE_TRANSACTION",
            7,
            2,
        )
        assert created["last_run"] == "0001-01-01T00:00:00Z"
        assert created["last_success"] is False
        assert hooks.hooks.get(created["id"]).data == created
        post = _register(
            hooks, receiver.url("crud-post", _approve), "POST_TRANSACTION", active=False
        )
        assert [h["id"] for h in hooks.hooks.list({"type": "PRE_TRANSACTION"}).data] == [
            created["id"]
        ]
        assert [h["id"] for h in hooks.hooks.list({"type": "POST_TRANSACTION"}).data] == [
            post["id"]
        ]
        assert len(hooks.hooks.list().data) == 2
        replaced = hooks.hooks.update(
            created["id"],
            {
                "name": "renamed",
                "url": created["url"],
                "type": "POST_TRANSACTION",
                "active": False,
                "timeout": 3,
                "retry_count": 1,
            },
        )
        assert replaced.status == 200, replaced.to_dict()
        assert (replaced.data["name"], replaced.data["type"], replaced.data["active"]) == (
            "renamed",
            "POST_TRANSACTION",
            False,
        )
        assert replaced.data["created_at"] == created["created_at"]
        deleted = hooks.hooks.delete(created["id"])
        assert deleted.status == 200
        assert deleted.data == {"message": "hook deleted successfully"}
        missing = hooks.hooks.get(created["id"])
        assert missing.status == 404
        assert missing.error.code == "HOOK_NOT_FOUND"
        assert hooks.hooks.delete(created["id"]).status == 404

    def test_invalid_hooks_are_400(self, hooks: Any, secure_ledger_url: str) -> None:
        """A non-http URL, a timeout past 30 s or an unknown type is 400 HOOK_INVALID."""
        bad_url = hooks.hooks.create(
            {
                "name": "x",
                "url": "ftp://example.com/h",
                "type": "PRE_TRANSACTION",
                "active": True,
                "timeout": 5,
                "retry_count": 0,
            }
        )
        assert bad_url.status == 400
        assert bad_url.error.code == "HOOK_INVALID"
        too_slow = hooks.hooks.create(
            {
                "name": "x",
                "url": "http://example.com/h",
                "type": "PRE_TRANSACTION",
                "active": True,
                "timeout": 31,
                "retry_count": 0,
            }
        )
        assert too_slow.status == 400
        bad_type = httpx.post(
            f"{secure_ledger_url}/hooks",
            json={"name": "x", "url": "http://example.com/h", "type": "SOMETIMES", "active": True},
            headers={"X-Blnk-Key": MASTER_KEY},
        )
        assert bad_type.status_code == 400
        assert bad_type.json()["error_detail"]["code"] == "HOOK_INVALID"
        assert hooks.hooks.list().data == []


class TestPreTransactionHooks:
    def test_approval_is_signed_like_blnk(self, hooks: Any, receiver: Receiver) -> None:
        """A pre hook gets Blnk's body and headers with a valid HMAC signature, and its yes lets the
        transaction through; the run is recorded on the hook."""
        url = receiver.url("approve", _approve)
        hook = _register(hooks, url, "PRE_TRANSACTION")
        balance_id = _funded_balance(hooks)
        reference = f"ref-{uuid.uuid4()}"
        posted = _post(hooks, balance_id, reference)
        assert posted.status == 201, posted.to_dict()
        (call,) = receiver.calls_to(url)
        timestamp = call.headers["X-Blnk-Timestamp"]
        expected = hmac.new(
            MASTER_KEY.encode(), f"{timestamp}.".encode() + call.body, hashlib.sha256
        ).hexdigest()
        assert call.headers["X-Blnk-Signature"] == expected
        assert call.headers["X-Hook-ID"] == hook["id"]
        assert call.headers["X-Hook-Type"] == "PRE_TRANSACTION"
        payload = call.json()
        assert payload["transaction_id"] == posted.data["transaction_id"]
        assert payload["hook_type"] == "PRE_TRANSACTION"
        assert payload["data"]["reference"] == reference
        assert payload["data"]["precise_amount"] == 700
        ran = _wait_for_run(hooks, hook["id"])
        assert ran["last_success"] is True

    def test_refusal_keeps_the_transaction_out(self, hooks: Any, receiver: Receiver) -> None:
        """`success: false` refuses the transaction with 400 TXN_HOOK_REJECTED and the hook's message."""
        url = receiver.url(
            "refuse",
            lambda _: (200, b'{"success": false, "message": "blocked by fraud check"}', 0.0),
        )
        hook = _register(hooks, url, "PRE_TRANSACTION")
        balance_id = _funded_balance(hooks)
        reference = f"ref-{uuid.uuid4()}"
        refused = _post(hooks, balance_id, reference)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_HOOK_REJECTED"
        assert "blocked by fraud check" in refused.error.message
        assert hooks.transactions.get_by_reference(reference).status == 404
        assert hooks.ledger_balances.get(balance_id).data["balance"] == 0
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False

    def test_retries_until_an_answer(self, hooks: Any, receiver: Receiver) -> None:
        """A pre hook failing with 500 is retried up to retry_count times; a later yes passes."""
        url = receiver.url("flaky", lambda n: (500, b"{}", 0.0) if n <= 2 else _approve(n))
        _register(hooks, url, "PRE_TRANSACTION", retry_count=2)
        posted = _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}")
        assert posted.status == 201, posted.to_dict()
        assert len(receiver.calls_to(url, 3)) == 3

    def test_no_answer_fails_closed(self, hooks: Any, receiver: Receiver) -> None:
        """A pre hook that does not answer within its timeout refuses the transaction (503)."""
        url = receiver.url("hang", lambda _: (200, b'{"success": true}', 2.5))
        _register(hooks, url, "PRE_TRANSACTION", timeout=1, retry_count=0)
        reference = f"ref-{uuid.uuid4()}"
        response = _post(hooks, _funded_balance(hooks), reference)
        assert response.status == 503, response.to_dict()
        assert response.error.code == "HOOK_UNAVAILABLE"
        assert hooks.transactions.get_by_reference(reference).status == 404

    def test_inactive_hook_is_not_called(self, hooks: Any, receiver: Receiver) -> None:
        """An inactive pre hook is neither called nor able to refuse."""
        url = receiver.url("inactive", lambda _: (200, b'{"success": false}', 0.0))
        _register(hooks, url, "PRE_TRANSACTION", active=False)
        assert _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}").status == 201
        # A pre hook is called before the answer, so none by now means none at all.
        assert receiver.calls_to(url, wait_s=0) == []


class TestPostTransactionHooks:
    def test_called_after_the_transaction_is_durable(self, hooks: Any, receiver: Receiver) -> None:
        """A post hook receives the recorded transaction (status APPLIED) once it is committed."""
        url = receiver.url("post", _approve)
        hook = _register(hooks, url, "POST_TRANSACTION")
        reference = f"ref-{uuid.uuid4()}"
        posted = _post(hooks, _funded_balance(hooks), reference)
        assert posted.status == 201, posted.to_dict()
        (call,) = receiver.calls_to(url)
        assert call.headers["X-Hook-Type"] == "POST_TRANSACTION"
        payload = call.json()
        assert payload["hook_type"] == "POST_TRANSACTION"
        assert payload["data"]["status"] == "APPLIED"
        assert payload["data"]["reference"] == reference
        stored = hooks.transactions.get(payload["transaction_id"])
        assert stored.status == 200
        assert _wait_for_run(hooks, hook["id"])["last_success"] is True

    def test_a_failing_post_hook_changes_nothing(self, hooks: Any, receiver: Receiver) -> None:
        """A post hook answering 500 is recorded as failed; the transaction stands."""
        url = receiver.url("post-fail", lambda _: (500, b"{}", 0.0))
        hook = _register(hooks, url, "POST_TRANSACTION", retry_count=1)
        reference = f"ref-{uuid.uuid4()}"
        assert _post(hooks, _funded_balance(hooks), reference).status == 201
        assert len(receiver.calls_to(url, 2)) == 2
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False
        assert hooks.transactions.get_by_reference(reference).status == 200
