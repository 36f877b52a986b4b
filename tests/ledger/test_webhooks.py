"""Webhooks: per-event-type subscriptions, Blnk's signature, at-least-once delivery.

Goal: prove that every committed transaction and outbox event reaches exactly the
subscriptions that asked for its type, signed the way Blnk signs (`X-Blnk-Signature` = hex
HMAC-SHA256 of `"{timestamp}.{body}"`), that failures are retried with backoff and then
dead-lettered, visible and re-drivable through the API, and that the dispatcher's progress is
right when batches commit out of id order. Method: subscriptions are made through the API of
a real uvicorn server; transactions are posted through the engine and the Blnk API; the
dispatcher is driven round by round; a real HTTP receiver records what arrives, and the test
checks each signature with the subscription's secret, as a receiver would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from kit.db import Database
from ledger.dispatcher import EventDispatcher
from ledger.engine import LedgerEngine
from ledger.webhooks import backoff_s, is_valid_signature, matches, sign
from tests.ledger.conftest import MakeBalance, subscribe_webhook, transfer
from tests.ledger.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.db

DRAIN_TIMEOUT_S = 10.0


async def _drain(
    dispatcher: EventDispatcher,
    until: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = DRAIN_TIMEOUT_S,
) -> None:
    """Run dispatcher rounds until `until()` holds (or fail after the timeout)."""
    deadline = time.monotonic() + timeout_s
    while not await until():
        if time.monotonic() > deadline:
            raise AssertionError("the expected deliveries did not happen in time")
        report = await dispatcher.run_once()
        if not report.is_full:
            await asyncio.sleep(0.02)


def _events(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in receiver.received(path)]


def _count_at_least(
    receiver: WebhookReceiver, path: str, count: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(receiver.received(path)) >= count

    return check


class TestSigning:
    def test_signature_is_blnks_hmac(self) -> None:
        """The signature is hex HMAC-SHA256 of "{timestamp}.{body}" (a known vector)."""
        expected = hmac.new(b"secret", b'1700000000.{"event":"x"}', hashlib.sha256).hexdigest()
        assert sign("secret", 1700000000, b'{"event":"x"}') == expected
        assert is_valid_signature("secret", "1700000000", b'{"event":"x"}', expected)
        assert not is_valid_signature("secret", "1700000001", b'{"event":"x"}', expected)

    @pytest.mark.parametrize(
        ("timestamp_s", "signature"),
        [
            ("", "00"),
            ("-1700000000", "00"),
            ("1.7e9", "00"),
            ("\u00b2", "00"),  # a superscript two: a digit to str.isdigit, not to int()
            ("1700000000", "\u00e9" * 64),  # not hex, not even ASCII
        ],
    )
    def test_a_forged_header_is_refused_not_raised(self, timestamp_s: str, signature: str) -> None:
        """Whatever a sender puts in the two headers, the check answers False (it raised
        ValueError on a Unicode digit and TypeError on a non-ASCII signature)."""
        assert not is_valid_signature("secret", timestamp_s, b'{"event":"x"}', signature)

    def test_patterns(self) -> None:
        """A subscription matches its exact types, a family wildcard, or everything."""
        assert matches(("transaction.applied",), "transaction.applied")
        assert not matches(("transaction.applied",), "transaction.void")
        assert matches(("transaction.*",), "transaction.void")
        assert not matches(("transaction.*",), "bulk_transaction.applied")
        assert matches(("*",), "balance.monitor")

    def test_backoff_grows_and_is_capped(self) -> None:
        """Each retry waits between half and all of base x 2^(n-1), never beyond the cap."""
        rng = random.Random(1)
        for attempts in range(1, 12):
            ceiling = min(60.0, 2.0 * 2 ** (attempts - 1))
            delay = backoff_s(attempts, base_s=2.0, cap_s=60.0, rng=rng)
            assert ceiling / 2 <= delay <= ceiling


class TestSubscriptionsApi:
    async def test_create_shows_the_secret_once(
        self, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
    ) -> None:
        """The secret is in the create answer only; list, get and patch never show it."""
        created = await subscribe_webhook(
            events_api, webhook_receiver.url("/ok/api"), ["transaction.applied"]
        )
        assert created["subscription_id"].startswith("whk_")
        assert created["secret"].startswith("whsec_")
        got = (await events_api.get(f"/webhooks/{created['subscription_id']}")).json()
        assert "secret" not in got
        assert got["event_types"] == ["transaction.applied"]
        patched = await events_api.patch(
            f"/webhooks/{created['subscription_id']}", json={"active": False, "event_types": "*"}
        )
        assert patched.status_code == 200
        assert patched.json()["active"] is False
        assert patched.json()["event_types"] == "*"
        assert "secret" not in patched.json()

    async def test_unknown_event_type_is_refused(
        self, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
    ) -> None:
        """An event type nobody emits is a 400 WHK_VALIDATION_ERROR."""
        response = await events_api.post(
            "/webhooks", json={"url": webhook_receiver.url("/ok/x"), "event_types": ["nope"]}
        )
        assert response.status_code == 400
        assert response.json()["error_detail"]["code"] == "WHK_VALIDATION_ERROR"

    async def test_a_url_no_request_can_be_built_for_is_refused(
        self, events_api: httpx.AsyncClient
    ) -> None:
        """A host IDNA cannot encode is a 400 WHK_VALIDATION_ERROR at subscription (it was
        accepted, and then failed every dispatcher round)."""
        url = "http://\U0010f5be\u00cbv\u00e5/hook"
        response = await events_api.post("/webhooks", json={"url": url, "event_types": "*"})
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "WHK_VALIDATION_ERROR"
        assert (await events_api.get("/webhooks")).json() == []

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {"url": "http://127.0.0.1:1/x", "event_types": []},
            {"url": "http://127.0.0.1:1/x", "event_types": ["transaction.applied"] * 65},
            {"url": "http://127.0.0.1:1/x", "event_types": "transaction.applied"},
            {"url": "http://127.0.0.1:1/x", "event_types": [1]},
            {"url": "http://127.0.0.1:1/x", "event_types": ["*.*"]},
            {"url": "http://127.0.0.1:1/x", "event_types": "*", "description": 7},
            {"url": "http://127.0.0.1:1/x", "event_types": "*", "description": "d" * 4097},
            {"url": "http://127.0.0.1:1/x", "event_types": "*", "active": "yes"},
            {"url": "ftp://127.0.0.1/x", "event_types": "*"},
        ],
    )
    async def test_a_malformed_subscription_is_refused(
        self, events_api: httpx.AsyncClient, body: Any
    ) -> None:
        """Each rule of the body is a 400 WHK_VALIDATION_ERROR, and nothing is stored."""
        response = await events_api.post("/webhooks", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "WHK_VALIDATION_ERROR"
        assert (await events_api.get("/webhooks")).json() == []

    async def test_a_host_whose_a_label_does_not_decode_is_refused(
        self, events_api: httpx.AsyncClient
    ) -> None:
        """`xn--` with no punycode after it parses as a URL, but the client cannot build a
        request for it: refused at subscription, not failed on every delivery."""
        response = await events_api.post(
            "/webhooks", json={"url": "http://xn--/hook", "event_types": "*"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == "WHK_VALIDATION_ERROR"

    async def test_a_patch_checks_what_it_changes_and_keeps_the_rest(
        self, events_api: httpx.AsyncClient, webhook_receiver: WebhookReceiver
    ) -> None:
        """A PATCH with a bad field is a 400 that changes nothing; a good one changes only the
        fields it names, and repeated event types are stored once."""
        response = await events_api.post(
            "/webhooks",
            json={
                "url": webhook_receiver.url("/ok/patch"),
                "event_types": ["balance.created"],
                "description": "balances feed",
            },
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["description"] == "balances feed"
        path = f"/webhooks/{created['subscription_id']}"
        bad_bodies: list[Any] = [
            {"active": None},
            {"url": "not a url"},
            {"event_types": []},
            ["active"],
        ]
        for bad in bad_bodies:
            response = await events_api.patch(path, json=bad)
            assert response.status_code == 400, response.text
            assert response.json()["error_detail"]["code"] == "WHK_VALIDATION_ERROR"
        assert (await events_api.get(path)).json() == {
            k: v for k, v in created.items() if k != "secret"
        }
        changed = await events_api.patch(
            path,
            json={
                "event_types": ["transaction.applied", "transaction.*", "transaction.applied"],
                "description": None,
            },
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["event_types"] == ["transaction.applied", "transaction.*"]
        assert changed.json()["description"] == ""
        assert changed.json()["url"] == created["url"]
        assert changed.json()["active"] is True

    @pytest.mark.parametrize(
        ("query", "code"),
        [
            ("status=failed", "WHK_VALIDATION_ERROR"),
            ("limit=0", "GEN_VALIDATION_ERROR"),
            ("offset=-1", "GEN_VALIDATION_ERROR"),
            ("limit=x", "GEN_VALIDATION_ERROR"),
        ],
    )
    async def test_a_bad_deliveries_query_is_refused(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        query: str,
        code: str,
    ) -> None:
        """An unknown status filter or a page out of range is a 400, not an empty page."""
        created = await subscribe_webhook(events_api, webhook_receiver.url("/ok/q"), "*")
        response = await events_api.get(
            f"/webhooks/{created['subscription_id']}/deliveries?{query}"
        )
        assert response.status_code == 400, response.text
        assert response.json()["error_detail"]["code"] == code

    async def test_unknown_subscription_is_404(self, events_api: httpx.AsyncClient) -> None:
        """Get and delete of an unknown subscription answer WHK_NOT_FOUND."""
        for method in ("GET", "DELETE"):
            response = await events_api.request(method, f"/webhooks/whk_{uuid.uuid4()}")
            assert response.status_code == 404
            assert response.json()["error_detail"]["code"] == "WHK_NOT_FOUND"

    @pytest.mark.parametrize("delivery_id", ["0", "-1", str(2**63), str(2**70)])
    async def test_a_delivery_id_no_bigint_holds_is_404(
        self, events_api: httpx.AsyncClient, delivery_id: str
    ) -> None:
        """Redriving a delivery id outside BIGINT is not found (it was a 500 from the driver)."""
        response = await events_api.post(
            f"/webhooks/whk_{uuid.uuid4()}/deliveries/{delivery_id}/redrive"
        )
        assert response.status_code == 404, response.text
        assert response.json()["error_detail"]["code"] == "WHK_DELIVERY_NOT_FOUND"


class TestDelivery:
    async def test_transaction_events_reach_only_their_subscribers_signed(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """Applied and inflight transfers reach their subscriber signed, and nobody else."""
        tag = uuid.uuid4().hex
        applied_path, created_path = f"/ok/applied-{tag}", f"/ok/created-{tag}"
        applied = await subscribe_webhook(
            events_api,
            webhook_receiver.url(applied_path),
            ["transaction.applied", "transaction.inflight"],
        )
        await subscribe_webhook(events_api, webhook_receiver.url(created_path), ["balance.created"])
        destination = await make_balance()
        (posted,) = await engine.execute(
            [transfer("@WorldUSD", destination, 250, allow_overdraft=True)]
        )
        (held,) = await engine.execute(
            [transfer("@WorldUSD", destination, 75, allow_overdraft=True, inflight=True)]
        )
        assert posted.record is not None
        assert held.record is not None
        await _drain(dispatcher, _count_at_least(webhook_receiver, applied_path, 2))
        requests = webhook_receiver.received(applied_path)
        by_id = {orjson.loads(r.body)["data"]["transaction_id"]: r for r in requests}
        first = by_id[posted.record.transaction_id]
        body = orjson.loads(first.body)
        assert body["event"] == "transaction.applied"
        assert body["data"]["precise_amount"] == 250
        assert body["data"]["destination"] == destination
        assert (
            orjson.loads(by_id[held.record.transaction_id].body)["event"] == "transaction.inflight"
        )
        for request in requests:
            assert is_valid_signature(
                applied["secret"],
                request.headers["x-blnk-timestamp"],
                request.body,
                request.headers["x-blnk-signature"],
            )
            assert request.headers["x-blnk-event-id"].startswith("evt_")
        assert webhook_receiver.received(created_path) == []

    async def test_balance_created_comes_from_the_outbox(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
    ) -> None:
        """Creating a balance through the API sends balance.created with the balance as data."""
        path = f"/ok/balances-{uuid.uuid4().hex}"
        await subscribe_webhook(events_api, webhook_receiver.url(path), ["balance.*"])
        ledger = (await events_api.post("/ledgers", json={"name": "webhooks"})).json()["ledger_id"]
        balance = (
            await events_api.post("/balances", json={"ledger_id": ledger, "currency": "EUR"})
        ).json()

        async def arrived() -> bool:
            return any(
                e["data"].get("balance_id") == balance["balance_id"]
                for e in _events(webhook_receiver, path)
            )

        await _drain(dispatcher, arrived)
        (event,) = [
            e
            for e in _events(webhook_receiver, path)
            if e["data"].get("balance_id") == balance["balance_id"]
        ]
        assert event == {"event": "balance.created", "data": balance}

    async def test_monitor_alert_and_bulk_result_are_delivered(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
    ) -> None:
        """A monitor met by a bulk sends balance.monitor and bulk_transaction.applied."""
        path = f"/ok/outbox-{uuid.uuid4().hex}"
        await subscribe_webhook(
            events_api, webhook_receiver.url(path), ["balance.monitor", "bulk_transaction.*"]
        )
        ledger = (await events_api.post("/ledgers", json={"name": "alerts"})).json()["ledger_id"]
        balance_id = (
            await events_api.post("/balances", json={"ledger_id": ledger, "currency": "USD"})
        ).json()["balance_id"]
        condition = {"field": "balance", "operator": ">=", "value": 2, "precision": 100}
        monitor = (
            await events_api.post(
                "/balance-monitors", json={"balance_id": balance_id, "condition": condition}
            )
        ).json()
        items = [
            {
                "precise_amount": 150,
                "precision": 100,
                "reference": f"b-{uuid.uuid4()}",
                "currency": "USD",
                "source": "@WorldUSD",
                "destination": balance_id,
                "allow_overdraft": True,
                "description": "b",
            }
            for _ in range(2)
        ]
        bulk = await events_api.post(
            "/transactions/bulk", json={"transactions": items, "atomic": True}
        )
        assert bulk.status_code == 201, bulk.text
        await _drain(dispatcher, _count_at_least(webhook_receiver, path, 2))
        events = {e["event"]: e["data"] for e in _events(webhook_receiver, path)}
        assert events["balance.monitor"]["monitor_id"] == monitor["monitor_id"]
        assert events["balance.monitor"]["balance"]["balance"] == 300
        assert events["bulk_transaction.applied"]["batch_id"] == bulk.json()["batch_id"]
        assert events["bulk_transaction.applied"]["transaction_count"] == 2

    async def test_a_failed_async_bulk_is_reported(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
    ) -> None:
        """run_async answers 202 before the work; when the atomic bulk is refused, the only
        news is bulk_transaction.failed, with Blnk's error and its code, and nothing moved."""
        path = f"/ok/failed-{uuid.uuid4().hex}"
        await subscribe_webhook(events_api, webhook_receiver.url(path), ["bulk_transaction.*"])
        ledger = (await events_api.post("/ledgers", json={"name": "async"})).json()["ledger_id"]
        empty = (
            await events_api.post("/balances", json={"ledger_id": ledger, "currency": "USD"})
        ).json()["balance_id"]
        items = [
            {
                "precise_amount": 100,
                "precision": 100,
                "reference": f"af-{uuid.uuid4()}",
                "currency": "USD",
                "source": source,
                "destination": "@AsyncSink",
                "description": "b",
                "allow_overdraft": source == "@WorldUSD",
            }
            for source in ("@WorldUSD", empty)  # the second has no funds
        ]
        bulk = await events_api.post(
            "/transactions/bulk", json={"transactions": items, "atomic": True, "run_async": True}
        )
        assert bulk.status_code == 202, bulk.text
        await _drain(dispatcher, _count_at_least(webhook_receiver, path, 1))
        (event,) = _events(webhook_receiver, path)
        assert event["event"] == "bulk_transaction.failed"
        assert event["data"]["batch_id"] == bulk.json()["batch_id"]
        assert event["data"]["status"] == "failed"
        assert event["data"]["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        for item in items:  # atomic: the funded first item did not post either
            found = await events_api.get(f"/transactions/reference/{item['reference']}")
            assert found.status_code == 404

    async def test_failures_are_retried_then_delivered_once(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """A receiver failing twice gets the same event id three times and the third succeeds."""
        path = f"/fail-2/{uuid.uuid4().hex}"
        created = await subscribe_webhook(
            events_api, webhook_receiver.url(path), ["transaction.applied"]
        )
        await engine.execute(
            [transfer("@WorldUSD", await make_balance(), 10, allow_overdraft=True)]
        )
        await _drain(dispatcher, _count_at_least(webhook_receiver, path, 3))
        requests = webhook_receiver.received(path)
        assert len({r.headers["x-blnk-event-id"] for r in requests}) == 1
        assert [r.headers["x-blnk-delivery-attempt"] for r in requests] == ["1", "2", "3"]
        deliveries = (
            await events_api.get(f"/webhooks/{created['subscription_id']}/deliveries")
        ).json()
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("delivered", 3)]

    async def test_an_uncallable_url_fails_only_its_own_deliveries(
        self,
        *,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        db: Database,
    ) -> None:
        """A stored URL the client cannot build a request for (a row from before the check)
        fails its own delivery with the reason; the round goes on and the other subscriber is
        served (the exception used to end every round before anything was recorded)."""
        path = f"/ok/{uuid.uuid4().hex}"
        await subscribe_webhook(events_api, webhook_receiver.url(path), ["transaction.applied"])
        broken = await subscribe_webhook(
            events_api, webhook_receiver.url("/ok/x"), ["transaction.applied"]
        )
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE ledger.webhook_subscriptions SET url = $1 WHERE subscription_id = $2",
                "http://\U0010f5be\u00cbv\u00e5/hook",
                broken["subscription_id"],
            )
        await engine.execute(
            [transfer("@WorldUSD", await make_balance(), 10, allow_overdraft=True)]
        )
        await _drain(dispatcher, _count_at_least(webhook_receiver, path, 1))
        deliveries_path = f"/webhooks/{broken['subscription_id']}/deliveries"

        async def failed() -> bool:
            return any(d["attempts"] for d in (await events_api.get(deliveries_path)).json())

        await _drain(dispatcher, failed)
        (delivery,) = (await events_api.get(deliveries_path)).json()
        assert delivery["status"] in {"pending", "dead"}
        assert delivery["last_error"].startswith("InvalidURL")

    async def test_dead_letter_is_visible_and_can_be_redriven(
        self,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        dispatcher: EventDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """After the last attempt a delivery is dead with its error; a re-drive sends it again."""
        tag = uuid.uuid4().hex
        created = await subscribe_webhook(
            events_api, webhook_receiver.url(f"/down/{tag}"), ["transaction.applied"]
        )
        subscription_id = created["subscription_id"]
        await engine.execute(
            [transfer("@WorldUSD", await make_balance(), 10, allow_overdraft=True)]
        )
        dead_path = f"/webhooks/{subscription_id}/deliveries?status=dead"

        async def is_dead() -> bool:
            return bool((await events_api.get(dead_path)).json())

        await _drain(dispatcher, is_dead)
        (delivery,) = (await events_api.get(dead_path)).json()
        assert delivery["attempts"] == 3
        assert delivery["last_error"] == "HTTP 500"
        assert delivery["last_status_code"] == 500
        assert len(webhook_receiver.received(f"/down/{tag}")) == 3
        redrive = f"/webhooks/{subscription_id}/deliveries/{delivery['delivery_id']}/redrive"
        pending = await events_api.post(redrive)
        assert pending.status_code == 200
        assert pending.json()["status"] == "pending"
        again = await events_api.post(redrive)
        assert again.status_code == 409
        assert again.json()["error_detail"]["code"] == "WHK_DELIVERY_NOT_DEAD"
        await _drain(dispatcher, _count_at_least(webhook_receiver, f"/down/{tag}", 4))


class TestProgress:
    async def test_a_batch_committing_late_is_not_skipped(
        self,
        *,
        db: Database,
        dispatcher: EventDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
    ) -> None:
        """A batch with a lower id that commits late is still fanned out, never skipped."""
        path = f"/ok/late-{uuid.uuid4().hex}"
        await subscribe_webhook(events_api, webhook_receiver.url(path), ["transaction.applied"])
        await _drain(dispatcher, _caught_up(dispatcher))
        destination = await make_balance()
        async with db.connection() as slow:
            transaction = slow.transaction()
            await transaction.start()
            try:
                late_batch = await slow.fetchval(
                    "INSERT INTO ledger.commit_batches (writer, item_count) VALUES ('late', 0) RETURNING batch_id"
                )
                (early,) = await engine.execute(
                    [transfer("@WorldUSD", destination, 5, allow_overdraft=True)]
                )
                assert early.record is not None
                await _drain(dispatcher, _count_at_least(webhook_receiver, path, 1))
                for _ in range(3):
                    await dispatcher.run_once()
                async with db.connection() as conn:
                    floor = await conn.fetchval(
                        "SELECT txid_floor FROM ledger.event_cursor WHERE name = 'batches'"
                    )
                    late_txid = await slow.fetchval(
                        "SELECT txid FROM ledger.commit_batches WHERE batch_id = $1", late_batch
                    )
                assert floor <= late_txid
            finally:
                await transaction.commit()

        async def late_batch_dispatched() -> bool:
            async with db.connection() as conn:
                found: bool = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM ledger.dispatched_batches WHERE batch_id = $1)"
                    " OR (SELECT txid_floor FROM ledger.event_cursor WHERE name = 'batches') > $2",
                    late_batch,
                    late_txid,
                )
            return found

        await _drain(dispatcher, late_batch_dispatched)


def _caught_up(dispatcher: EventDispatcher) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        report = await dispatcher.fan_out()
        return not report.is_full

    return check
