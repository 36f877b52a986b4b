"""Transaction hooks through Blnk's own Python SDK, called on a real local HTTP receiver.

Hooks are managed with the master key on the secure-mode server. A small `http.server` in a
thread (`tests/ledger/hook_receiver.py`) stands in for the customer's hook endpoint: it records
every call (headers and raw body) and answers as each test scripts it (approve, refuse, fail a
few times, hang). The
assertions check Blnk's wire contract (signature, headers, body) and our gate semantics: a
pre hook that refuses or cannot answer keeps the transaction out of the ledger; a post hook is
called once the transaction is durable; each kind of reply (4xx, 5xx, none, garbage, too big)
decides it as documented in `ledger/hooks.py`. A few tests drive the `HookRunner` in-process
(its cache, its bounded backlog, a lost run stamp). Every test removes the hooks it registered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from blnk_sdk.errors import parse_blnk_api_error_body

from kit.clock import FrozenClock, SystemClock
from kit.db import Database
from kit.settings import Settings
from ledger.hooks import (
    POST_HOOK_BACKLOG_MAX,
    HookIn,
    HookReply,
    HookRunner,
    HookType,
    create_hook,
    delete_hook,
)
from tests.ledger.conftest import create_sdk_balance
from tests.ledger.hook_receiver import (
    CALL_WAIT_S,
    HookReceiver,
    approve,
    blnk_signature,
    direct_hook,
)
from tests.ledger.servers import MASTER_KEY
from tests.ports import free_port

pytestmark = pytest.mark.db


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
    """A balance for this module's transfers (they are funded from @WorldUSD)."""
    return create_sdk_balance(client, "hooks")


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
    def test_create_get_list_update_delete(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A hook gets a hook_ id; it is read, listed by type, replaced, and deleted (then 404)."""
        created = _register(
            hooks, hook_receiver.url("crud", approve), "PRE_TRANSACTION", timeout=7, retry_count=2
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
            hooks, hook_receiver.url("crud-post", approve), "POST_TRANSACTION", active=False
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
        no_request = hooks.hooks.create(  # a host IDNA cannot encode: every call would fail
            {
                "name": "x",
                "url": "http://\U0010f5be\u00cbv\u00e5/h",
                "type": "PRE_TRANSACTION",
                "active": True,
                "timeout": 5,
                "retry_count": 0,
            }
        )
        assert no_request.status == 400
        assert no_request.error.code == "HOOK_INVALID"
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

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"url": "  "}, "hook URL is required"),
            ({"url": "http://[::1/h"}, "not a valid URL"),
            ({"url": "http:///h"}, "http(s) URL"),
            ({"url": "http://xn--/h"}, "http(s) URL"),  # parses; its host cannot be encoded
            ({"url": "http://example.com/" + "h" * 2030}, "at most 2048 characters"),
            ({"name": "n" * 256}, "longer than 255"),
            ({"retry_count": 6}, "retry_count is at most 5"),
        ],
    )
    def test_bounds_are_checked(self, hooks: Any, change: dict[str, Any], message: str) -> None:
        """A blank, unparsable, hostless, unencodable or overlong URL, a long name or more than
        5 retries is 400 HOOK_INVALID, and nothing is registered."""
        body = {
            "name": "x",
            "url": "http://example.com/h",
            "type": "PRE_TRANSACTION",
            "active": True,
            "timeout": 5,
            "retry_count": 0,
        }
        refused = hooks.hooks.create({**body, **change})
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "HOOK_INVALID"
        assert message in refused.error.message
        assert hooks.hooks.list().data == []

    def test_limits_are_inclusive(self, hooks: Any) -> None:
        """A URL of 2048 characters, a name of 255, 5 retries and a 30 s timeout are accepted."""
        url = "http://example.com/" + "h" * 2029
        created = _register(
            hooks, url, "POST_TRANSACTION", name="n" * 255, retry_count=5, timeout=30
        )
        assert (len(created["url"]), len(created["name"])) == (2048, 255)
        assert (created["retry_count"], created["timeout"]) == (5, 30)

    def test_unset_settings_take_blnks_defaults(self, hooks: Any, secure_ledger_url: str) -> None:
        """A timeout <= 0 becomes 30 s and a negative retry count 3, as in Blnk; the URL is
        trimmed; PUT replaces every setting, absent ones by their defaults."""
        headers = {"X-Blnk-Key": MASTER_KEY}
        with httpx.Client(base_url=secure_ledger_url, headers=headers) as client:
            created = client.post(
                "/hooks",
                json={
                    "url": "  http://example.com/h  ",
                    "type": "POST_TRANSACTION",
                    "active": True,
                    "timeout": 0,
                    "retry_count": -1,
                },
            )
            assert created.status_code == 201, created.text
            hook = created.json()
            assert (hook["url"], hook["timeout"], hook["retry_count"]) == (
                "http://example.com/h",
                30,
                3,
            )
            replaced = client.put(
                f"/hooks/{hook['id']}",
                json={"url": "http://example.com/h", "type": "POST_TRANSACTION", "timeout": -4},
            )
        assert replaced.status_code == 200, replaced.text
        assert (replaced.json()["timeout"], replaced.json()["retry_count"]) == (30, 0)
        assert (replaced.json()["name"], replaced.json()["active"]) == ("", False)

    def test_an_invalid_update_changes_nothing(self, hooks: Any, secure_ledger_url: str) -> None:
        """PUT with a setting out of bounds is 400 HOOK_INVALID and the hook keeps its settings."""
        created = _register(hooks, "http://example.com/h", "PRE_TRANSACTION")
        refused = httpx.put(
            f"{secure_ledger_url}/hooks/{created['id']}",
            json={"url": "http://example.com/h", "type": "PRE_TRANSACTION", "retry_count": 9},
            headers={"X-Blnk-Key": MASTER_KEY},
        )
        _hook_refusal(refused, 400, "INVALID_INPUT", "HOOK_INVALID")
        assert hooks.hooks.get(created["id"]).data == created

    def test_at_most_50_hooks(self, hooks: Any, secure_ledger_url: str) -> None:
        """The 51st hook is 400 HOOK_INVALID; deleting one makes room again."""
        headers = {"X-Blnk-Key": MASTER_KEY}
        body = {"url": "http://example.com/h", "type": "POST_TRANSACTION"}
        with httpx.Client(base_url=secure_ledger_url, headers=headers) as client:
            ids = [client.post("/hooks", json=body).json()["id"] for _ in range(50)]
            over = client.post("/hooks", json=body)
            assert over.status_code == 400, over.text
            assert over.json()["error_detail"]["code"] == "HOOK_INVALID"
            assert "at most 50 hooks" in over.json()["message"]
            assert len(client.get("/hooks").json()) == 50
            assert client.delete(f"/hooks/{ids[0]}").status_code == 200
            assert client.post("/hooks", json=body).status_code == 201


class TestPreTransactionHooks:
    def test_approval_is_signed_like_blnk(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A pre hook gets Blnk's body and headers with a valid HMAC signature, and its yes lets the
        transaction through; the run is recorded on the hook."""
        url = hook_receiver.url("approve", approve)
        hook = _register(hooks, url, "PRE_TRANSACTION")
        balance_id = _funded_balance(hooks)
        reference = f"ref-{uuid.uuid4()}"
        posted = _post(hooks, balance_id, reference)
        assert posted.status == 201, posted.to_dict()
        (call,) = hook_receiver.calls_to(url)
        assert "X-Blnk-Timestamp" in call.headers
        assert call.headers["X-Blnk-Signature"] == blnk_signature(call, MASTER_KEY)
        assert call.headers["X-Hook-ID"] == hook["id"]
        assert call.headers["X-Hook-Type"] == "PRE_TRANSACTION"
        payload = call.json()
        assert payload["transaction_id"] == posted.data["transaction_id"]
        assert payload["hook_type"] == "PRE_TRANSACTION"
        assert payload["data"]["reference"] == reference
        assert payload["data"]["precise_amount"] == 700
        ran = _wait_for_run(hooks, hook["id"])
        assert ran["last_success"] is True

    def test_refusal_keeps_the_transaction_out(
        self, hooks: Any, hook_receiver: HookReceiver
    ) -> None:
        """`success: false` refuses the transaction with 400 TXN_HOOK_REJECTED and the hook's message."""
        url = hook_receiver.url(
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

    def test_retries_until_an_answer(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A pre hook failing with 500 is retried up to retry_count times; a later yes passes."""
        url = hook_receiver.url("flaky", lambda n: (500, b"{}", 0.0) if n <= 2 else approve(n))
        _register(hooks, url, "PRE_TRANSACTION", retry_count=2)
        posted = _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}")
        assert posted.status == 201, posted.to_dict()
        assert len(hook_receiver.calls_to(url, 3)) == 3

    def test_no_answer_fails_closed(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A pre hook that does not answer within its timeout refuses the transaction (503)."""
        url = hook_receiver.url("hang", lambda _: (200, b'{"success": true}', 2.5))
        _register(hooks, url, "PRE_TRANSACTION", timeout=1, retry_count=0)
        reference = f"ref-{uuid.uuid4()}"
        response = _post(hooks, _funded_balance(hooks), reference)
        assert response.status == 503, response.to_dict()
        assert response.error.code == "HOOK_UNAVAILABLE"
        assert hooks.transactions.get_by_reference(reference).status == 404

    def test_inactive_hook_is_not_called(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """An inactive pre hook is neither called nor able to refuse."""
        url = hook_receiver.url("inactive", lambda _: (200, b'{"success": false}', 0.0))
        _register(hooks, url, "PRE_TRANSACTION", active=False)
        assert _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}").status == 201
        # A pre hook is called before the answer, so none by now means none at all.
        assert hook_receiver.calls_to(url, wait_s=0) == []


class TestPreTransactionHookReplies:
    """How each kind of reply of a pre hook decides the transaction."""

    @pytest.mark.parametrize(
        ("status", "reply"),
        [
            (403, b'{"success": false, "message": "blocked by fraud check"}'),
            (422, b'{"message": "blocked by fraud check"}'),
        ],
    )
    def test_a_4xx_refusal_carries_the_hooks_message(
        self, hooks: Any, hook_receiver: HookReceiver, status: int, reply: bytes
    ) -> None:
        """A 4xx reply is the hook's answer: 400 TXN_HOOK_REJECTED with its message, not retried."""
        url = hook_receiver.url("refuse-4xx", lambda _: (status, reply, 0.0))
        hook = _register(hooks, url, "PRE_TRANSACTION", retry_count=2)
        reference = f"ref-{uuid.uuid4()}"
        refused = _post(hooks, _funded_balance(hooks), reference)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_HOOK_REJECTED"
        assert "blocked by fraud check" in refused.error.message
        assert len(hook_receiver.calls_to(url, wait_s=0)) == 1
        assert hooks.transactions.get_by_reference(reference).status == 404
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False

    @pytest.mark.parametrize(
        ("status", "reply"),
        [(404, b""), (401, b"unauthorized"), (400, b'{"success": true, "message": "ok"}')],
    )
    def test_a_4xx_never_approves(
        self, hooks: Any, hook_receiver: HookReceiver, status: int, reply: bytes
    ) -> None:
        """A 4xx reply refuses whatever its body (even `success: true`), naming its status when
        it gives no message."""
        url = hook_receiver.url("plain-4xx", lambda _: (status, reply, 0.0))
        _register(hooks, url, "PRE_TRANSACTION")
        reference = f"ref-{uuid.uuid4()}"
        refused = _post(hooks, _funded_balance(hooks), reference)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_HOOK_REJECTED"
        if not reply.startswith(b"{"):
            assert str(status) in refused.error.message
        assert hooks.transactions.get_by_reference(reference).status == 404

    def test_a_null_reply_refuses(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A 2xx `null` refuses, as in Blnk (it decodes to a reply whose `success` is false)."""
        url = hook_receiver.url("null", lambda _: (200, b"null", 0.0))
        hook = _register(hooks, url, "PRE_TRANSACTION")
        reference = f"ref-{uuid.uuid4()}"
        refused = _post(hooks, _funded_balance(hooks), reference)
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_HOOK_REJECTED"
        assert hooks.transactions.get_by_reference(reference).status == 404
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False

    @pytest.mark.parametrize(("status", "retry_count"), [(429, 2), (408, 1), (502, 0)])
    def test_retries_are_bounded_then_fail_closed(
        self, hooks: Any, hook_receiver: HookReceiver, status: int, retry_count: int
    ) -> None:
        """408, 429 and 5xx are retried exactly retry_count times; then 503 HOOK_UNAVAILABLE."""
        url = hook_receiver.url("busy", lambda _: (status, b"{}", 0.0))
        hook = _register(hooks, url, "PRE_TRANSACTION", retry_count=retry_count)
        reference = f"ref-{uuid.uuid4()}"
        response = _post(hooks, _funded_balance(hooks), reference)
        assert response.status == 503, response.to_dict()
        assert response.error.code == "HOOK_UNAVAILABLE"
        assert response.data["error_detail"]["details"] == {"hook_id": hook["id"]}
        # Every attempt ends before the answer, so the count is final.
        assert len(hook_receiver.calls_to(url, wait_s=0)) == retry_count + 1
        assert hooks.transactions.get_by_reference(reference).status == 404
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False

    def test_a_reply_past_1_mib_is_no_answer(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A 2xx reply one byte past 1 MiB is not read: 503 HOOK_UNAVAILABLE, not retried."""
        url = hook_receiver.url("huge", lambda _: (200, _approval_of_size((1 << 20) + 1), 0.0))
        _register(hooks, url, "PRE_TRANSACTION", retry_count=2)
        reference = f"ref-{uuid.uuid4()}"
        response = _post(hooks, _funded_balance(hooks), reference)
        assert response.status == 503, response.to_dict()
        assert response.error.code == "HOOK_UNAVAILABLE"
        assert len(hook_receiver.calls_to(url, wait_s=0)) == 1
        assert hooks.transactions.get_by_reference(reference).status == 404

    def test_a_reply_of_exactly_1_mib_is_read(
        self, hooks: Any, hook_receiver: HookReceiver
    ) -> None:
        """A reply of exactly 1 MiB (Blnk's bound) is read, and its yes lets the transaction in."""
        url = hook_receiver.url("large", lambda _: (200, _approval_of_size(1 << 20), 0.0))
        _register(hooks, url, "PRE_TRANSACTION")
        assert _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}").status == 201

    @pytest.mark.parametrize(
        ("status", "reply"),
        [(204, b""), (200, b"  \n"), (200, b"accepted"), (202, b"[false]"), (200, b'"no"')],
    )
    def test_a_2xx_without_a_reply_object_approves(
        self, hooks: Any, hook_receiver: HookReceiver, status: int, reply: bytes
    ) -> None:
        """As in Blnk, an empty, non-JSON or non-object 2xx reply (but `null`) is a yes."""
        url = hook_receiver.url("bare", lambda _: (status, reply, 0.0))
        hook = _register(hooks, url, "PRE_TRANSACTION")
        posted = _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}")
        assert posted.status == 201, posted.to_dict()
        assert _wait_for_run(hooks, hook["id"])["last_success"] is True

    @pytest.mark.parametrize("reply", [b'{"success": "true"}', b'{"success": 1}', b"{}"])
    def test_only_the_boolean_true_approves(
        self, hooks: Any, hook_receiver: HookReceiver, reply: bytes
    ) -> None:
        """A reply object approves only with `success: true`; a string, a number or nothing refuses."""
        url = hook_receiver.url("loose", lambda _: (200, reply, 0.0))
        _register(hooks, url, "PRE_TRANSACTION")
        refused = _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}")
        assert refused.status == 400, refused.to_dict()
        assert refused.error.code == "TXN_HOOK_REJECTED"

    def test_a_redirect_is_not_followed(self, hooks: Any, hook_receiver: HookReceiver) -> None:
        """A 3xx is not followed (the signed body goes only where it was registered): no answer."""
        target = hook_receiver.url("redirect-target", approve)
        url = hook_receiver.url(
            "redirect", lambda _: (307, b"", 0.0), reply_headers={"Location": target}
        )
        _register(hooks, url, "PRE_TRANSACTION", retry_count=1)
        response = _post(hooks, _funded_balance(hooks), f"ref-{uuid.uuid4()}")
        assert response.status == 503, response.to_dict()
        assert len(hook_receiver.calls_to(url, wait_s=0)) == 1
        assert hook_receiver.calls_to(target, wait_s=0) == []


def _approval_of_size(size: int) -> bytes:
    """`{"success": true, "message": "xxx"}` padded to exactly `size` bytes."""
    frame = b'{"success": true, "message": ""}'
    return frame[:-2] + b"x" * (size - len(frame)) + frame[-2:]


class TestPostTransactionHooks:
    def test_called_after_the_transaction_is_durable(
        self, hooks: Any, hook_receiver: HookReceiver
    ) -> None:
        """A post hook receives the recorded transaction (status APPLIED) once it is committed."""
        url = hook_receiver.url("post", approve)
        hook = _register(hooks, url, "POST_TRANSACTION")
        reference = f"ref-{uuid.uuid4()}"
        posted = _post(hooks, _funded_balance(hooks), reference)
        assert posted.status == 201, posted.to_dict()
        (call,) = hook_receiver.calls_to(url)
        assert call.headers["X-Hook-Type"] == "POST_TRANSACTION"
        payload = call.json()
        assert payload["hook_type"] == "POST_TRANSACTION"
        assert payload["data"]["status"] == "APPLIED"
        assert payload["data"]["reference"] == reference
        stored = hooks.transactions.get(payload["transaction_id"])
        assert stored.status == 200
        assert _wait_for_run(hooks, hook["id"])["last_success"] is True

    def test_a_failing_post_hook_changes_nothing(
        self, hooks: Any, hook_receiver: HookReceiver
    ) -> None:
        """A post hook answering 500 is recorded as failed; the transaction stands."""
        url = hook_receiver.url("post-fail", lambda _: (500, b"{}", 0.0))
        hook = _register(hooks, url, "POST_TRANSACTION", retry_count=1)
        reference = f"ref-{uuid.uuid4()}"
        assert _post(hooks, _funded_balance(hooks), reference).status == 201
        assert len(hook_receiver.calls_to(url, 2)) == 2
        assert _wait_for_run(hooks, hook["id"])["last_success"] is False
        assert hooks.transactions.get_by_reference(reference).status == 200


class TestHookRunner:
    """The runner in-process, on the test database and the local receiver."""

    async def test_the_active_set_is_cached_for_its_lifetime(self, db: Database) -> None:
        """A hook registered elsewhere is seen once the 2 s cache runs out; a change made
        through the runner's own replica (invalidate) is seen at once."""
        clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
        runner = HookRunner(db, clock=clock, secret=None, http=None)
        body = HookIn(url="http://example.com/h", type="POST_TRANSACTION", active=True)
        created: list[str] = []
        try:
            async with db.transaction() as conn:
                created.append((await create_hook(conn, body, now=clock.now()))["id"])
            assert [h.hook_id for h in await runner.active(HookType.POST_TRANSACTION)] == created
            clock.advance(1.0)
            async with db.transaction() as conn:
                created.append((await create_hook(conn, body, now=clock.now()))["id"])
            clock.advance(0.9)
            cached = await runner.active(HookType.POST_TRANSACTION)
            assert [h.hook_id for h in cached] == created[:1]
            clock.advance(0.1)
            assert [h.hook_id for h in await runner.active(HookType.POST_TRANSACTION)] == created
            async with db.transaction() as conn:
                await delete_hook(conn, created.pop())
            runner.invalidate()
            assert [h.hook_id for h in await runner.active(HookType.POST_TRANSACTION)] == created
        finally:
            async with db.transaction() as conn:
                for hook_id in created:
                    await delete_hook(conn, hook_id)

    async def test_a_load_in_flight_during_a_change_is_not_cached(self, db: Database) -> None:
        """A read of the active set begun before a change here is answered but not cached: the
        next call reads again instead of keeping the old set for the cache's lifetime."""
        clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
        runner = HookRunner(db, clock=clock, secret=None, http=None)
        loading = asyncio.ensure_future(runner.active(HookType.POST_TRANSACTION))
        await asyncio.sleep(0)  # the read has begun
        runner.invalidate()
        assert await loading == ()
        body = HookIn(url="http://example.com/h", type="POST_TRANSACTION", active=True)
        async with db.transaction() as conn:
            hook_id = (await create_hook(conn, body, now=clock.now()))["id"]
        try:
            fresh = await runner.active(HookType.POST_TRANSACTION)
            assert [h.hook_id for h in fresh] == [hook_id]
        finally:
            async with db.transaction() as conn:
                await delete_hook(conn, hook_id)

    async def test_the_post_backlog_is_bounded(
        self, db: Database, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Past 1,000 post-hook deliveries waiting, the next transaction's are dropped and logged."""
        hook = direct_hook(f"http://127.0.0.1:{free_port()}/h")  # refused at once
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            with caplog.at_level(logging.WARNING, logger="ledger.hooks"):
                for index in range(POST_HOOK_BACKLOG_MAX + 1):
                    runner.schedule_post([hook], f"txn_{index}", {})
                await runner.drain(timeout_s=30.0)
                await runner.drain(timeout_s=10.0)  # the run stamps the deliveries left behind
                runner.schedule_post([hook], "txn_after", {})  # drained: room again
                await runner.drain(timeout_s=10.0)
        assert [(r.getMessage(), getattr(r, "transaction_id", None)) for r in caplog.records] == [
            ("post-transaction hooks dropped: backlog full", f"txn_{POST_HOOK_BACKLOG_MAX}")
        ]

    async def test_calls_go_unsigned_without_a_secret(
        self, db: Database, hook_receiver: HookReceiver
    ) -> None:
        """Without a server secret a hook is called without X-Blnk-Signature (the rest as usual)."""
        url = hook_receiver.url("unsigned", approve)
        hook = direct_hook(url, HookType.PRE_TRANSACTION)
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            await runner.run_pre([hook], "txn_unsigned", {"amount": 1})
            await runner.drain(timeout_s=5.0)
        (call,) = hook_receiver.calls_to(url, wait_s=0)
        assert "X-Blnk-Signature" not in call.headers
        assert call.headers["X-Hook-ID"] == hook.hook_id
        assert call.json()["data"] == {"amount": 1}

    async def test_a_lost_run_stamp_does_not_fail_the_call(
        self,
        settings: Settings,
        database_dsn: str,
        hook_receiver: HookReceiver,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """With the database gone, a hook's answer still counts; the lost stamp is logged."""
        closed = await Database.open(settings, database_dsn)
        await closed.close()
        url = hook_receiver.url("no-stamp", approve)
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(closed, clock=SystemClock(), secret=None, http=http)
            with caplog.at_level(logging.WARNING, logger="ledger.hooks"):
                reply = await runner.call(direct_hook(url), b"{}")
                await runner.drain(timeout_s=5.0)
        assert reply == HookReply(answered=True, success=True, message="ok")
        assert [record.getMessage() for record in caplog.records] == ["hook run not recorded"]


def _hook_refusal(response: httpx.Response, status: int, legacy_code: str, code: str) -> Any:
    """Blnk's hook body: code, message and details at the top level, beside error_detail; no
    `error` key. Blnk's Python SDK still reads the code and message from it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details", "error_detail"}
    assert body["code"] == legacy_code
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], dict)
    assert body["error_detail"] == {
        "code": code,
        "message": body["message"],
        "details": body["details"],
    }
    parsed = parse_blnk_api_error_body(body)
    assert (parsed.code, parsed.message) == (code, body["message"])
    return body


class TestHookErrorBodies:
    """Past the master-key check every hook refusal has Blnk's hook body (`respondBareAPIError`),
    whose top-level code is Blnk's older one: NOT_FOUND on GET /hooks/{id}, else INVALID_INPUT."""

    def test_unknown_hook_get(self, secure_ledger_url: str) -> None:
        """GET of an unknown hook is 404 with top-level code NOT_FOUND and HOOK_NOT_FOUND."""
        response = httpx.get(
            f"{secure_ledger_url}/hooks/hook_{uuid.uuid4()}", headers={"X-Blnk-Key": MASTER_KEY}
        )
        _hook_refusal(response, 404, "NOT_FOUND", "HOOK_NOT_FOUND")

    def test_sdk_reads_the_hook_body(self, hooks: Any) -> None:
        """Blnk's Python SDK reads HOOK_NOT_FOUND and the message from the hook body it returns."""
        response = hooks.hooks.get(f"hook_{uuid.uuid4()}")
        assert response.status == 404
        assert response.error.code == "HOOK_NOT_FOUND"
        assert response.data["code"] == "NOT_FOUND"
        assert response.data["message"] == response.error.message
        assert "error" not in response.data

    def test_unknown_hook_update_and_delete(self, secure_ledger_url: str) -> None:
        """PUT and DELETE of an unknown hook are 404 HOOK_NOT_FOUND under top-level INVALID_INPUT."""
        url = f"{secure_ledger_url}/hooks/hook_{uuid.uuid4()}"
        body = {"name": "x", "url": "http://example.com/h", "type": "PRE_TRANSACTION"}
        headers = {"X-Blnk-Key": MASTER_KEY}
        _hook_refusal(
            httpx.put(url, json=body, headers=headers), 404, "INVALID_INPUT", "HOOK_NOT_FOUND"
        )
        _hook_refusal(httpx.delete(url, headers=headers), 404, "INVALID_INPUT", "HOOK_NOT_FOUND")

    def test_invalid_hook(self, hooks: Any, secure_ledger_url: str) -> None:
        """An invalid hook, a body that is not JSON and an unknown list type are 400 HOOK_INVALID
        under top-level INVALID_INPUT, with `details` present even when empty."""
        headers = {"X-Blnk-Key": MASTER_KEY}
        bad_url = httpx.post(
            f"{secure_ledger_url}/hooks",
            json={"name": "x", "url": "ftp://example.com/h", "type": "PRE_TRANSACTION"},
            headers=headers,
        )
        assert _hook_refusal(bad_url, 400, "INVALID_INPUT", "HOOK_INVALID")["details"] == {}
        not_json = httpx.post(
            f"{secure_ledger_url}/hooks",
            content=b'{"name": ',
            headers={**headers, "Content-Type": "application/json"},
        )
        _hook_refusal(not_json, 400, "INVALID_INPUT", "HOOK_INVALID")
        bad_type = httpx.get(f"{secure_ledger_url}/hooks?type=SOMETIMES", headers=headers)
        _hook_refusal(bad_type, 400, "INVALID_INPUT", "HOOK_INVALID")
        assert hooks.hooks.list().data == []

    def test_key_checks_keep_the_standard_body(
        self, ledger_url: str, secure_ledger_url: str
    ) -> None:
        """The secure-mode key check (401) and the master-key check (403) answer Blnk's standard
        body, as Blnk's middleware and hook handlers do."""
        missing = httpx.get(f"{secure_ledger_url}/hooks/hook_{uuid.uuid4()}")
        assert missing.status_code == 401
        assert missing.json()["error_detail"]["code"] == "AUTH_MISSING_API_KEY"
        assert isinstance(missing.json()["error"], str)
        assert "code" not in missing.json()
        open_mode = httpx.get(f"{ledger_url}/hooks/hook_{uuid.uuid4()}")
        assert open_mode.status_code == 403
        assert open_mode.json() == {
            "error": "hook management requires master key",
            "error_detail": {
                "code": "AUTH_MASTER_KEY_REQUIRED",
                "message": "hook management requires master key",
            },
        }
