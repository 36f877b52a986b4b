"""Webhook delivery as a subscriber and an operator meet it.

Goal: prove what happens to a delivery for each way a subscriber's endpoint can answer (a
redirect, a client error, a reset connection, a body that never ends, an answer that never
finishes), that every retry is signed over the same bytes with its own timestamp, that sealed
signing secrets sign and a dispatcher without the cipher fails only those deliveries, that two
dispatchers at once send each event once, and that the dispatcher loop wakes, survives failing
rounds and stops. Method: subscriptions are made through the API of a real uvicorn server and
events come from transfers posted through the engine; dispatchers are built here on the test
database; a real HTTP server (asyncio streams, in this module) answers by path and records
what arrives; states are read back through the deliveries API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from kit.clock import Clock, FrozenClock
from kit.crypto import EnvelopeCipher, KeyRing
from kit.db import Database
from kit.settings import Settings
from ledger import webhooks
from ledger.dispatcher import DispatcherConfig, EventDispatcher
from ledger.engine import LedgerEngine
from tests.ledger.conftest import (
    MakeBalance,
    fan_out_backlog,
    subscribe_webhook,
    transfer,
    webhook_deliveries,
)
from tests.ledger.webhook_receiver import Received, WebhookReceiver

pytestmark = pytest.mark.db

DRAIN_TIMEOUT_S = 15.0
DRIP_INTERVAL_S = 0.05
DRIP_BYTES_MAX = 1_000  # a drip stops by itself after ~50 s, well past any test's bound
SLOW_ANSWER_S = 0.2
EVENTS = 8  # for two dispatchers: one claim of six, one of two
FAST = DispatcherConfig(
    poll_interval_s=0.02,
    delivery_timeout_s=0.5,
    connect_timeout_s=0.5,
    lease_s=5.0,
    attempts_max=3,
    backoff_base_s=0.01,
    backoff_cap_s=0.05,
)


# ---------------------------------------------------------------- a subscriber's endpoint


class Endpoint:
    """A subscriber's endpoint that answers by path, one request per connection.

    `/ok/...` 200; `/status-NNN/...` NNN (a 3xx with `Location: /ok/followed`); `/slow/...`
    200 after `SLOW_ANSWER_S`; `/reset/...` a TCP reset instead of an answer; `/drip/...` a 200
    whose body of a terabyte comes a byte at a time; `/stall/...` a status line that never ends.
    """

    def __init__(self) -> None:
        self.arrivals: list[Received] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on a free local port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        """A URL of this endpoint."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    def received(self, path: str) -> list[Received]:
        """Requests that arrived at `path`, oldest first."""
        return [a for a in self.arrivals if a.path == path]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1]
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in head[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.arrivals.append(Received(path, headers, body))
            await self._answer(path, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the dispatcher hung up: what some of these answers are for
        finally:
            writer.close()

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> None:
        kind = path.split("/")[1]
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if kind == "stall":
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X" * DRIP_BYTES_MAX:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(DRIP_INTERVAL_S)
            return
        if kind == "drip":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
            for _ in range(DRIP_BYTES_MAX):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(DRIP_INTERVAL_S)
            return
        if kind == "slow":
            await asyncio.sleep(SLOW_ANSWER_S)
        status = int(kind.removeprefix("status-")) if kind.startswith("status-") else 200
        location = f"Location: {self.url('/ok/followed')}\r\n" if 300 <= status < 400 else ""
        writer.write(
            f"HTTP/1.1 {status} X\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """A subscriber's endpoint on this test's event loop."""
    server = Endpoint()
    await server.start()
    yield server
    await server.close()


# ---------------------------------------------------------------- dispatchers and the API


MakeDispatcher = Callable[..., Awaitable[EventDispatcher]]


@pytest.fixture
async def make_dispatcher(db: Database) -> AsyncIterator[MakeDispatcher]:
    """Dispatchers on the test database, closed after the test. The outbox is caught up on
    what earlier tests committed before the test begins, so the subscriptions a test makes
    (before or after its dispatchers) see only its own events."""
    catch_up = EventDispatcher(db, config=FAST)
    await fan_out_backlog(catch_up)
    await catch_up.aclose()
    made: list[EventDispatcher] = []

    async def make(
        config: DispatcherConfig = FAST,
        *,
        clock: Clock | None = None,
        cipher: EnvelopeCipher | None = None,
        on: Database = db,
    ) -> EventDispatcher:
        events = EventDispatcher(on, config=config, clock=clock, cipher=cipher)
        made.append(events)
        return events

    yield make
    for events in made:
        await events.aclose()


async def _subscribe(api: httpx.AsyncClient, url: str) -> str:
    """Subscribe `url` to every transaction event; the subscription's id."""
    subscription_id: str = (await subscribe_webhook(api, url, ["transaction.*"]))["subscription_id"]
    return subscription_id


async def _post_transfer(engine: LedgerEngine, make_balance: MakeBalance) -> str:
    (posted,) = await engine.execute(
        [transfer("@WorldUSD", await make_balance(), 10, allow_overdraft=True)]
    )
    assert posted.record is not None
    return posted.record.transaction_id


async def _run_until(
    dispatcher: EventDispatcher,
    until: Callable[[], Awaitable[bool]],
    *,
    before_round: Callable[[], None] = lambda: None,
) -> None:
    """Run rounds until `until()` holds; a round that does not end fails the test."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not await until():
        if time.monotonic() > deadline:
            raise AssertionError("the expected delivery state was not reached in time")
        before_round()
        report = await asyncio.wait_for(dispatcher.run_once(), timeout=DRAIN_TIMEOUT_S)
        if not report.is_full:
            await asyncio.sleep(0.02)


def _settled(api: httpx.AsyncClient, subscription_id: str) -> Callable[[], Awaitable[bool]]:
    """True once the subscription has deliveries and none is waiting for an attempt."""

    async def check() -> bool:
        found = await webhook_deliveries(api, subscription_id)
        return bool(found) and all(d["status"] != "pending" for d in found)

    return check


def _attempted(api: httpx.AsyncClient, subscription_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(d["attempts"] for d in await webhook_deliveries(api, subscription_id))

    return check


# ---------------------------------------------------------------- tests


class TestSubscriberAnswers:
    @pytest.mark.parametrize("status", [301, 302, 307, 400, 404, 410, 429])
    async def test_any_answer_but_2xx_is_retried_then_dead_with_its_status(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        status: int,
    ) -> None:
        """A redirect or a client error is a failed attempt like a 500: retried up to the bound,
        then dead with that status; a redirect is never followed."""
        path = f"/status-{status}/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatcher = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(dispatcher, _settled(events_api, subscription_id))
        (delivery,) = await webhook_deliveries(events_api, subscription_id)
        assert (delivery["status"], delivery["attempts"]) == ("dead", FAST.attempts_max)
        assert delivery["last_status_code"] == status
        assert delivery["last_error"] == f"HTTP {status}"
        assert len(endpoint.received(path)) == FAST.attempts_max
        assert endpoint.received("/ok/followed") == []

    async def test_a_reset_connection_is_a_failed_attempt_without_a_status(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """An endpoint that resets the connection instead of answering fails the attempt with
        the transport's error and no status code; the delivery ends dead after the bound."""
        path = f"/reset/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatcher = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(dispatcher, _settled(events_api, subscription_id))
        (delivery,) = await webhook_deliveries(events_api, subscription_id)
        assert (delivery["status"], delivery["attempts"]) == ("dead", FAST.attempts_max)
        assert delivery["last_status_code"] is None
        assert delivery["last_error"].split(":")[0] in {"ReadError", "RemoteProtocolError"}

    async def test_a_body_that_never_ends_does_not_hold_the_round(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """A 200 is the subscriber's acknowledgement: the dispatcher records it without reading
        a body, even one that trickles in for ever (the round used to wait on it, unbounded:
        each byte arrived within the read timeout)."""
        path = f"/drip/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatcher = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(dispatcher, _settled(events_api, subscription_id))
        (delivery,) = await webhook_deliveries(events_api, subscription_id)
        assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)
        assert delivery["last_status_code"] == 200

    async def test_an_answer_that_never_finishes_is_a_timeout(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """An endpoint that sends its status line a byte at a time, never finishing it, fails
        the attempt after the delivery timeout as a whole, not per read; the round ends."""
        path = f"/stall/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatcher = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(dispatcher, _attempted(events_api, subscription_id))
        (delivery,) = await webhook_deliveries(events_api, subscription_id)
        assert delivery["status"] == "pending"
        assert delivery["last_error"].startswith("TimeoutError")
        assert delivery["last_status_code"] is None

    async def test_a_url_whose_host_cannot_be_encoded_fails_only_itswebhook_deliveries(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        db: Database,
    ) -> None:
        """A stored `xn--` host (from before subscriptions refused it) fails its own delivery
        with the reason while the other subscriber is served (the IDNA error ended every
        round, so nobody was served)."""
        path = f"/ok/{uuid.uuid4().hex}"
        served = await _subscribe(events_api, endpoint.url(path))
        broken = await _subscribe(events_api, endpoint.url("/ok/never"))
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE ledger.webhook_subscriptions SET url = 'http://xn--/hook'"
                " WHERE subscription_id = $1",
                broken,
            )
        dispatcher = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(dispatcher, _settled(events_api, served))
        await _run_until(dispatcher, _attempted(events_api, broken))
        (delivery,) = await webhook_deliveries(events_api, broken)
        assert delivery["last_error"].startswith("IDNAError")
        assert len(endpoint.received(path)) == 1


class TestSigning:
    async def test_every_retry_signs_the_same_bytes_with_its_own_timestamp(
        self,
        *,
        events_api: httpx.AsyncClient,
        webhook_receiver: WebhookReceiver,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """Three attempts carry byte-identical bodies, the same event id, the attempt number,
        and each its own X-Blnk-Timestamp (the clock when it was sent) with a signature that
        Blnk's check accepts for that timestamp."""
        path = f"/fail-2/{uuid.uuid4().hex}"
        response = await events_api.post(
            "/webhooks", json={"url": webhook_receiver.url(path), "event_types": "*"}
        )
        secret = response.json()["secret"]
        clock = FrozenClock(datetime.now(UTC))
        dispatcher = await make_dispatcher(clock=clock)
        transaction_id = await _post_transfer(engine, make_balance)

        async def three_arrived() -> bool:
            return len(webhook_receiver.received(path)) >= 3

        sent_at: list[int] = []

        def tick() -> None:
            clock.advance(100)  # past any backoff, and a timestamp of its own
            sent_at.append(int(clock.now().timestamp()))

        await _run_until(dispatcher, three_arrived, before_round=tick)
        requests = webhook_receiver.received(path)
        assert len(requests) == 3
        assert len({r.body for r in requests}) == 1
        assert orjson.loads(requests[0].body)["data"]["transaction_id"] == transaction_id
        assert len({r.headers["x-blnk-event-id"] for r in requests}) == 1
        assert [r.headers["x-blnk-delivery-attempt"] for r in requests] == ["1", "2", "3"]
        stamps = [int(r.headers["x-blnk-timestamp"]) for r in requests]
        assert stamps == sorted(set(stamps))
        assert set(stamps) <= set(sent_at)
        for request in requests:
            assert webhooks.is_valid_signature(
                secret,
                request.headers["x-blnk-timestamp"],
                request.body,
                request.headers["x-blnk-signature"],
            )

    async def test_a_sealed_secret_signs_and_without_the_cipher_fails_alone(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        db: Database,
    ) -> None:
        """A secret sealed under the envelope cipher is stored sealed and signs once opened; a
        dispatcher without the cipher fails that subscription's delivery with the invariant's
        code and still serves the plain one."""
        cipher = EnvelopeCipher(KeyRing(b"k" * 32))
        sealed_path, plain_path = f"/ok/sealed-{uuid.uuid4().hex}", f"/ok/{uuid.uuid4().hex}"
        async with db.transaction() as conn:
            sealed = await webhooks.create_subscription(
                conn,
                {"url": endpoint.url(sealed_path), "event_types": ["transaction.applied"]},
                now=datetime.now(UTC),
                cipher=cipher,
            )
            stored = await conn.fetchval(
                "SELECT secret FROM ledger.webhook_subscriptions WHERE subscription_id = $1",
                sealed["subscription_id"],
            )
        assert sealed["secret"] not in stored
        plain = await _subscribe(events_api, endpoint.url(plain_path))
        without = await make_dispatcher()
        await _post_transfer(engine, make_balance)
        await _run_until(without, _settled(events_api, plain))
        await _run_until(without, _attempted(events_api, sealed["subscription_id"]))
        (failed,) = await webhook_deliveries(events_api, sealed["subscription_id"])
        assert failed["last_error"].startswith("GEN_INTERNAL: ")
        assert endpoint.received(sealed_path) == []
        with_cipher = await make_dispatcher(cipher=cipher)
        await _run_until(with_cipher, _settled(events_api, sealed["subscription_id"]))
        (request,) = endpoint.received(sealed_path)
        assert webhooks.is_valid_signature(
            sealed["secret"],
            request.headers["x-blnk-timestamp"],
            request.body,
            request.headers["x-blnk-signature"],
        )


class TestConcurrentDispatchers:
    async def _run_both(
        self,
        dispatchers: list[EventDispatcher],
        done: Callable[[], Awaitable[bool]],
        state: Callable[[], Awaitable[object]],
    ) -> None:
        stop = asyncio.Event()
        loops = [asyncio.create_task(d.run(stop)) for d in dispatchers]
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not await done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"not settled in time: {await state()}")
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            for d in dispatchers:
                d.wake()
            await asyncio.wait_for(asyncio.gather(*loops), timeout=DRAIN_TIMEOUT_S)

    @pytest.mark.parametrize(
        "config",
        [
            # A timeout well above the slow answer (FAST's 0.5 s left 0.3 s of slack, which a
            # pause of the shared event loop late in a full run once used up: a retried
            # attempt, not the double claim this test is about). Still four claims a round.
            replace(
                FAST,
                deliveries_per_round_max=4,
                delivery_concurrency_max=2,
                delivery_timeout_s=1.5,
            ),
            # Claims that the lease cannot cover one after another: a slot would send six slow
            # answers in turn (1.2 s) under a 1.1 s lease, while the other dispatcher, with two
            # to send, is idle again long before.
            replace(
                FAST,
                deliveries_per_round_max=6,
                delivery_concurrency_max=1,
                lease_s=1.1,
                delivery_timeout_s=0.9,
            ),
        ],
        ids=["small-rounds", "round-longer-than-lease"],
    )
    async def test_two_dispatchers_send_each_event_once(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
        config: DispatcherConfig,
    ) -> None:
        """Two dispatchers working at once against a slow endpoint deliver every event once,
        in one attempt each: a claim is never taken by both, and no lease runs out while its
        dispatcher still has claims to send or record (the idle one took them over and sent
        them again, round after round, until accepted events were dead-lettered)."""
        path = f"/slow/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatchers = [await make_dispatcher(config), await make_dispatcher(config)]
        transaction_ids = {await _post_transfer(engine, make_balance) for _ in range(EVENTS)}

        async def all_settled() -> bool:
            found = await webhook_deliveries(events_api, subscription_id)
            return len(found) == EVENTS and all(d["status"] != "pending" for d in found)

        async def state() -> object:
            attempts = [
                d["attempts"] for d in await webhook_deliveries(events_api, subscription_id)
            ]
            return {"requests": len(endpoint.received(path)), "attempts": attempts}

        await self._run_both(dispatchers, all_settled, state)
        found = await webhook_deliveries(events_api, subscription_id)
        assert {(d["status"], d["attempts"]) for d in found} == {("delivered", 1)}
        arrived = [orjson.loads(a.body)["data"]["transaction_id"] for a in endpoint.received(path)]
        assert sorted(arrived) == sorted(transaction_ids)


class TestLoop:
    async def test_a_woken_dispatcher_delivers_without_waiting_its_poll(
        self,
        *,
        events_api: httpx.AsyncClient,
        endpoint: Endpoint,
        make_dispatcher: MakeDispatcher,
        engine: LedgerEngine,
        make_balance: MakeBalance,
    ) -> None:
        """With a poll interval longer than the test, `wake` starts the round that delivers,
        and `stop` then `wake` ends the loop."""
        path = f"/ok/{uuid.uuid4().hex}"
        subscription_id = await _subscribe(events_api, endpoint.url(path))
        dispatcher = await make_dispatcher(replace(FAST, poll_interval_s=3600.0))
        stop = asyncio.Event()
        loop = asyncio.create_task(dispatcher.run(stop))
        try:
            await _post_transfer(engine, make_balance)
            dispatcher.wake()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not endpoint.received(path):
                assert time.monotonic() < deadline, "the woken dispatcher did not deliver"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            dispatcher.wake()
            await asyncio.wait_for(loop, timeout=DRAIN_TIMEOUT_S)
        assert [d["status"] for d in await webhook_deliveries(events_api, subscription_id)] == [
            "delivered"
        ]
        assert dispatcher.totals.delivered >= 1

    async def test_failing_rounds_are_logged_and_the_loop_goes_on(
        self,
        *,
        make_dispatcher: MakeDispatcher,
        settings: Settings,
        database_dsn: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A round that raises (its database pool is gone) is logged with the count of
        failures in a row, and the loop tries again after a pause until stopped."""
        gone = await Database.open(settings, database_dsn)
        await gone.close()
        dispatcher = await make_dispatcher(replace(FAST, poll_interval_s=0.001), on=gone)
        stop = asyncio.Event()
        caplog.set_level(logging.ERROR, logger="ledger.dispatcher")

        def failures() -> list[int]:
            return [
                r.__dict__["failures"]  # set through `extra`
                for r in caplog.records
                if r.getMessage() == "an event dispatcher round failed"
            ]

        loop = asyncio.create_task(dispatcher.run(stop))
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while len(failures()) < 3:
                assert time.monotonic() < deadline, "the loop stopped trying"
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            dispatcher.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop, timeout=DRAIN_TIMEOUT_S)
        assert loop.done()
        assert failures()[:3] == [1, 2, 3]


class TestConfig:
    def test_a_round_claims_no_more_than_its_lease_covers(self) -> None:
        """Claims per round stop where the slots, sending one timed-out attempt after another,
        could not finish inside the lease (the defaults claimed 512 for 32 slots: 80 s of
        5 s attempts under a 60 s lease)."""
        assert DispatcherConfig().deliveries_per_claim_max * 5.0 / 32 < 60.0
        tight = replace(FAST, deliveries_per_round_max=6, delivery_concurrency_max=1, lease_s=1.0)
        assert tight.deliveries_per_claim_max == 1
        assert replace(FAST, deliveries_per_round_max=4).deliveries_per_claim_max == 4

    @pytest.mark.parametrize(
        "changes",
        [
            {"lease_s": 5.0, "delivery_timeout_s": 5.0},
            {"delivery_timeout_s": 0.0},
            {"batches_per_round_max": 0},
            {"deliveries_per_round_max": 0},
            {"delivery_concurrency_max": 0},
            {"attempts_max": 0},
        ],
    )
    def test_a_config_that_cannot_work_is_refused(self, changes: dict[str, Any]) -> None:
        """A lease no longer than one attempt, an attempt with no time, or a round, slot or
        retry bound below one (no slot: every attempt waited for ever) is refused when the
        dispatcher is configured, not discovered in production."""
        with pytest.raises(ValueError, match="must"):
            replace(FAST, **changes)
