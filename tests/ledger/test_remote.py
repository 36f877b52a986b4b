"""`BlnkHttpLedger`: the ledger port over a remote Blnk server.

Goal: prove that commands reach a Blnk-compatible server with Blnk's requests and come back as
the right outcomes (independent transfers batched into one bulk call with per-item answers,
inflight commit and void, refunds, bulks), that lost answers and 5xx bursts are retried only
where a retry cannot apply anything twice, that the circuit breaker opens, fails fast and
closes again, and that a multi-step operation failing midway is compensated and recorded.
Method: the remote server is our own ledger app over real HTTP (tests/ledger/conftest.py:
a faithful stand-in for Blnk); failures are injected by wrapping the real transport (the
request reaches the server, its answer is replaced by a 502) or by an `httpx.MockTransport`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kit.clock import FrozenClock
from kit.db import Database
from ledger import fx_repository
from ledger.models import (
    CommitInflight,
    Leg,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    VoidInflight,
)
from ledger.remote import (
    BlnkHttpLedger,
    CircuitBreaker,
    CircuitState,
    PgCompensationJournal,
    RemoteConfig,
)
from tests.ledger.conftest import (
    no_sleep,
    remote_amount,
    remote_balance,
    remote_funded,
    transfer,
)

pytestmark = pytest.mark.db


class LossyTransport(httpx.AsyncBaseTransport):
    """Sends every request for real, but replaces the first `losses` answers to requests that
    `matches` with a 502: the server acted, the client never heard."""

    def __init__(self, matches: Callable[[httpx.Request], bool], losses: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.matches = matches
        self.losses = losses

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.losses > 0 and self.matches(request):
            self.losses -= 1
            await response.aread()
            await response.aclose()
            return httpx.Response(502, request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class TestAgainstTheServer:
    async def test_single_transfer(self, remote: BlnkHttpLedger, api: httpx.AsyncClient) -> None:
        """One transfer is one POST /transactions whose body comes back as the outcome."""
        destination = await remote_balance(api)
        command = transfer("@WorldUSD", destination, 1_234, allow_overdraft=True)
        (outcome,) = await remote.execute([command])
        assert outcome.status_code == 201
        assert outcome.body is not None
        assert outcome.body["reference"] == command.reference
        assert outcome.body["status"] == "APPLIED"
        assert await remote_amount(api, destination) == 1_234

    async def test_a_split_travels_with_its_legs(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Legs go as Blnk's `destinations`: a percentage, a precise distribution (sent as a
        digit string) and "left", each landing on its balance."""
        source = await remote_funded(remote, api, 1_000)
        bob, carol, dave = (
            await remote_balance(api),
            await remote_balance(api),
            await remote_balance(api),
        )
        legs = (
            Leg(bob, "10%", narration="tenth"),
            Leg(carol, None, precise_distribution=150),
            Leg(dave, "left"),
        )
        command = replace(transfer(source, "", 600), destination=None, destinations=legs)
        (outcome,) = await remote.execute([command])
        assert outcome.status_code == 201, outcome.error
        assert [await remote_amount(api, b) for b in (source, bob, carol, dave)] == [
            400,
            60,
            150,
            390,
        ]

    async def test_independent_transfers_share_one_bulk_call(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Five transfers go as one bulk plus one filter call; the one without funds fails alone."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        commands = [transfer(source, destination, 300) for _ in range(4)]
        sent_before = remote.requests_sent
        outcomes = await remote.execute(commands)
        assert remote.requests_sent - sent_before == 2
        assert [o.status_code for o in outcomes] == [201, 201, 201, 400]
        assert outcomes[3].error is not None
        assert outcomes[3].error.code == "TXN_INSUFFICIENT_FUNDS"
        assert [o.body["reference"] for o in outcomes[:3] if o.body] == [
            c.reference for c in commands[:3]
        ]
        assert await remote_amount(api, destination) == 900

    async def test_inflight_commit_void_and_refund(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Holds commit in part and void the rest; an applied transfer refunds; a second void is 409."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        (hold,) = await remote.execute([transfer(source, destination, 600, inflight=True)])
        assert hold.body is not None
        hold_id = hold.body["transaction_id"]
        (commit,) = await remote.execute([CommitInflight(hold_id, "", "", precise_amount=200)])
        assert commit.body is not None
        assert commit.body["status"] == "APPLIED"
        (void,) = await remote.execute([VoidInflight(hold_id, "", "")])
        assert void.body is not None
        assert void.body["status"] == "VOID"
        (again,) = await remote.execute([VoidInflight(hold_id, "", "")])
        assert again.error is not None
        assert again.error.code == "TXN_ALREADY_VOIDED"
        assert await remote_amount(api, destination) == 200
        (refund,) = await remote.execute(
            [RefundTransaction(commit.body["transaction_id"], "", skip_queue=True)]
        )
        assert refund.status_code == 201
        assert await remote_amount(api, destination) == 0
        assert await remote_amount(api, source) == 1_000

    async def test_atomic_bulk_is_all_or_nothing(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A client's atomic bulk with one refusal moves nothing and answers Blnk's bulk error."""
        source = await remote_funded(remote, api, 100)
        destination = await remote_balance(api)
        items = (transfer(source, destination, 60), transfer(source, destination, 60))
        (outcome,) = await remote.execute(
            [PostBulk(f"bulk_{uuid.uuid4()}", items, atomic=True, inflight=False)]
        )
        assert outcome.status_code == 400
        assert outcome.body is not None
        assert outcome.body["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        assert await remote_amount(api, destination) == 0


class TestLostAnswers:
    async def test_a_transfer_whose_answer_was_lost_is_not_applied_twice(
        self, ledger_url: str, api: httpx.AsyncClient
    ) -> None:
        """A lost answer is retried and resolved by reference, applied once."""
        destination = await remote_balance(api)
        transport = LossyTransport(lambda r: r.url.path == "/transactions", losses=1)
        async with httpx.AsyncClient(transport=transport) as http:
            port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url), http=http, sleep=no_sleep)
            (outcome,) = await port.execute(
                [transfer("@WorldUSD", destination, 777, allow_overdraft=True)]
            )
        assert outcome.status_code == 201, outcome.error
        assert await remote_amount(api, destination) == 777

    async def test_a_lost_bulk_answer_is_resolved_by_reference(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A bulk whose answer was lost is retried; every item reports success exactly once."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        transport = LossyTransport(lambda r: r.url.path == "/transactions/bulk", losses=1)
        async with httpx.AsyncClient(transport=transport) as http:
            port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url), http=http, sleep=no_sleep)
            outcomes = await port.execute([transfer(source, destination, 100) for _ in range(3)])
        assert [o.status_code for o in outcomes] == [201, 201, 201]
        assert await remote_amount(api, destination) == 300

    async def test_a_lost_atomic_bulk_answer_is_resolved_by_reference(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """An atomic bulk that applied but whose answer was lost: the retry is refused (its
        references are taken), and the port finds every item stored as sent: one success,
        the money moved once."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        transport = LossyTransport(lambda r: r.url.path == "/transactions/bulk", losses=1)
        items = (transfer(source, destination, 100), transfer(source, destination, 150))
        async with httpx.AsyncClient(transport=transport) as http:
            port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url), http=http, sleep=no_sleep)
            (outcome,) = await port.execute(
                [PostBulk(f"bulk_{uuid.uuid4()}", items, atomic=True, inflight=False)]
            )
        assert transport.losses == 0
        assert outcome.status_code == 201, outcome.body
        assert outcome.body is not None
        assert (outcome.body["status"], outcome.body["transaction_count"]) == ("applied", 2)
        assert await remote_amount(api, destination) == 250
        assert await remote_amount(api, source) == 750

    async def test_a_lost_refund_answer_is_resolved_by_reference(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A refund that applied but whose answer was lost: the retry is 409 already refunded,
        and the port answers the stored refund (`<id>_refund`) instead: refunded once."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        (paid,) = await remote.execute([transfer(source, destination, 400)])
        assert paid.body is not None
        paid_id = paid.body["transaction_id"]
        transport = LossyTransport(lambda r: r.url.path.startswith("/refund-transaction/"), 1)
        async with httpx.AsyncClient(transport=transport) as http:
            port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url), http=http, sleep=no_sleep)
            (refund,) = await port.execute([RefundTransaction(paid_id, "", skip_queue=True)])
        assert transport.losses == 0
        assert refund.status_code == 201, refund.error
        assert refund.body is not None
        assert refund.body["reference"] == paid_id + "_refund"
        assert (refund.body["source"], refund.body["destination"]) == (destination, source)
        assert await remote_amount(api, destination) == 0
        assert await remote_amount(api, source) == 1_000

    async def test_a_partial_commit_whose_answer_was_lost_is_not_retried(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Retrying a partial commit could commit twice: its outcome is reported unknown."""
        source = await remote_funded(remote, api, 1_000)
        (hold,) = await remote.execute(
            [transfer(source, await remote_balance(api), 500, inflight=True)]
        )
        assert hold.body is not None
        transport = LossyTransport(
            lambda r: r.url.path.startswith("/transactions/inflight/"), losses=1
        )
        async with httpx.AsyncClient(transport=transport) as http:
            port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url), http=http, sleep=no_sleep)
            (outcome,) = await port.execute(
                [CommitInflight(hold.body["transaction_id"], "", "", precise_amount=100)]
            )
        assert outcome.error is not None
        assert outcome.error.code == "LEDGER_OUTCOME_UNKNOWN"
        assert outcome.status_code == 503


class TestCompensation:
    async def test_failed_leg_reverses_the_legs_before_it(
        self, ledger_url: str, api: httpx.AsyncClient, db: Database, remote: BlnkHttpLedger
    ) -> None:
        """Leg 2 of 3 fails: leg 1 is reversed with a COMP_ transaction, recorded as posted."""
        source = await remote_funded(remote, api, 100)
        first, second = await remote_balance(api), await remote_balance(api)
        legs = [
            transfer(source, first, 70),
            transfer(source, second, 70),
            transfer(source, first, 1),
        ]
        port = BlnkHttpLedger(
            RemoteConfig(base_url=ledger_url, native_atomic_bulk=False),
            journal=PgCompensationJournal(db),
            sleep=no_sleep,
        )
        operation = f"bulk_{uuid.uuid4()}"
        try:
            (outcome,) = await port.execute(
                [PostBulk(operation, tuple(legs), atomic=True, inflight=False)]
            )
        finally:
            await port.aclose()
        assert outcome.status_code == 400
        assert outcome.body is not None
        assert outcome.body["failed_reference"] == legs[1].reference
        assert outcome.body["compensations"] == [
            {
                "original_reference": legs[0].reference,
                "reference": "COMP_" + legs[0].reference,
                "status": "posted",
            }
        ]
        assert await remote_amount(api, first) == 0
        assert await remote_amount(api, source) == 100
        reversal = (await api.get(f"/transactions/reference/COMP_{legs[0].reference}")).json()
        assert reversal["meta_data"]["compensation"] is True
        assert reversal["meta_data"]["original_reference"] == legs[0].reference
        async with db.connection() as conn:
            recorded = await fx_repository.compensations_of(conn, operation)
        assert [(r["original_reference"], r["status"]) for r in recorded] == [
            (legs[0].reference, "posted")
        ]
        assert recorded[0]["compensating_transaction_id"] == reversal["transaction_id"]


def _mock(
    handler: Callable[[httpx.Request], httpx.Response], **config: Any
) -> tuple[BlnkHttpLedger, FrozenClock]:
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    port = BlnkHttpLedger(
        RemoteConfig(base_url="https://blnk.test", api_key="key", **config),
        http=http,
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout_s=30, clock=clock),
        sleep=no_sleep,
    )
    return port, clock


def _state(port: BlnkHttpLedger) -> CircuitState:
    """The breaker's state, read fresh (a property that moves with the clock)."""
    return port.breaker.state


def _created(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        201, json={"transaction_id": f"txn_{uuid.uuid4()}", "reference": "r", "status": "APPLIED"}
    )


class TestFailureInjection:
    async def test_a_5xx_burst_is_retried(self) -> None:
        """Two 503s then a 201: the call succeeds, sending X-Blnk-Key each time."""
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(503) if len(seen) <= 2 else _created(request)

        port, _ = _mock(handler)
        (outcome,) = await port.execute([transfer("@WorldUSD", "bln_x", 1, allow_overdraft=True)])
        assert outcome.status_code == 201
        assert len(seen) == 3
        assert all(r.headers["X-Blnk-Key"] == "key" for r in seen)

    async def test_timeouts_exhaust_the_retries_then_503(self) -> None:
        """A server that never answers costs 1 + retries attempts, then LEDGER_UNAVAILABLE."""
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ReadTimeout("slow", request=request)

        port, _ = _mock(handler, retries_max=1)
        (outcome,) = await port.execute([transfer("@WorldUSD", "bln_x", 1, allow_overdraft=True)])
        assert calls == 2
        assert outcome.status_code == 503
        assert outcome.error is not None
        assert outcome.error.code == "LEDGER_UNAVAILABLE"

    async def test_breaker_opens_fails_fast_and_closes_after_a_good_trial(self) -> None:
        """The breaker opens, fails fast, then closes after a good half-open trial."""
        healthy = False
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return _created(request) if healthy else httpx.Response(500)

        port, clock = _mock(handler, retries_max=0)
        command = transfer("@WorldUSD", "bln_x", 1, allow_overdraft=True)
        for _ in range(3):
            await port.execute([command])
        assert _state(port) is CircuitState.OPEN
        (refused,) = await port.execute([command])
        assert calls == 3
        assert refused.error is not None
        assert refused.error.code == "LEDGER_CIRCUIT_OPEN"
        clock.advance(31)
        assert _state(port) is CircuitState.HALF_OPEN
        healthy = True
        (trial,) = await port.execute([command])
        assert trial.status_code == 201
        assert _state(port) is CircuitState.CLOSED

    async def test_a_failed_trial_reopens(self) -> None:
        """A half-open circuit whose trial fails opens again at once."""
        breaker = CircuitBreaker(
            failure_threshold=1,
            reset_timeout_s=10,
            clock=FrozenClock(datetime(2026, 1, 1, tzinfo=UTC)),
        )
        breaker.record_failure()
        assert breaker.state is CircuitState.OPEN
        breaker.clock.advance(10)  # type: ignore[attr-defined]
        breaker.before_call()
        breaker.record_failure()
        assert breaker.state is CircuitState.OPEN

    async def test_commands_become_blnks_requests(self) -> None:
        """Commit, void and refund map to Blnk's paths and bodies."""
        seen: list[tuple[str, str, bytes]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append((request.method, request.url.path, request.content))
            return httpx.Response(200, json={"status": "APPLIED"})

        port, _ = _mock(handler)
        await port.execute(
            [
                CommitInflight("txn_h", "", "", precise_amount=5),
                VoidInflight("txn_h", "", ""),
                RefundTransaction("txn_o", "", description="why"),
            ]
        )
        assert [(m, p) for m, p, _ in seen] == [
            ("PUT", "/transactions/inflight/txn_h"),
            ("PUT", "/transactions/inflight/txn_h"),
            ("POST", "/refund-transaction/txn_o"),
        ]
        assert b'"status":"commit"' in seen[0][2]
        assert b'"precise_amount":5' in seen[0][2]
        assert b'"status":"void"' in seen[1][2]
        assert isinstance(transfer("a", "b", 1), PostTransaction)
