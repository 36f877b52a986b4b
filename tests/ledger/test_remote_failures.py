"""`BlnkHttpLedger` against a Blnk server that is slow, restarting or answering oddly.

Goal: prove that every retry is bounded and happens only where it cannot apply anything twice,
that a lost answer (a dropped connection, a 502, an answer that does not decode) is resolved to
the request's real outcome, that an answer that is not Blnk's JSON fails its own command and no
other, that the circuit breaker cannot be wedged half-open, that Blnk's error bodies become the
errors our embedded ledger answers, that amounts past 64 bits stay exact integers both ways,
and that a compensating transaction is posted exactly once and only for a leg that applied.
Method: the remote server is our own ledger app over real HTTP (tests/ledger/conftest.py), with
answers lost or garbled by a transport that wraps the real one after the server acted; where
Blnk itself must misbehave, a raw local HTTP server (`MisbehavingServer`) stands in for it and
answers each request as its script says: bytes, a dropped connection, or a stall.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway.problems import blnk_body
from kit.clock import FrozenClock, SystemClock
from kit.db import Database
from kit.settings import Settings
from ledger import fx_repository
from ledger.api_port import ApiLedgerPort
from ledger.hooks import HookIn, HookRunner, create_hook, delete_hook
from ledger.models import (
    CommitInflight,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    VoidInflight,
)
from ledger.remote import (
    QUEUED_SETTLE_POLLS_MAX,
    BlnkHttpLedger,
    CircuitBreaker,
    CircuitState,
    PgCompensationJournal,
    RemoteConfig,
    transaction_body,
)
from tests.ledger.conftest import (
    no_sleep,
    remote_amount,
    remote_balance,
    remote_funded,
    transfer,
)
from tests.ports import free_port

pytestmark = pytest.mark.db

HUGE = 123_456_789_012_345_678_901_234_567_890  # past 2^64 (and past a double's 53 bits)


# ---------------------------------------------------------------- a Blnk that misbehaves


DROP = "drop"  # read the request, then close the connection without a word
STALL = "stall"  # read the request, then never answer

Reply = bytes | str


def _answer(status: int, body: Any, *, headers: dict[str, str] | None = None) -> bytes:
    """Raw HTTP/1.1 answer bytes; `body` as bytes is sent verbatim, anything else as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(content)}", "Connection: close"]
    if not isinstance(body, bytes):
        lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + content


@dataclass
class Seen:
    """One request the server read."""

    method: str
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class MisbehavingServer:
    """A raw HTTP server on a local port; `script(seen, index)` picks each request's reply."""

    script: Callable[[Seen, int], Reply]
    seen: list[Seen] = field(default_factory=list)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode().split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path, _ = request_line.split(" ", 2)
            seen = Seen(method, path, body)
            self.seen.append(seen)
            reply = self.script(seen, len(self.seen) - 1)
            if reply == STALL:
                self.stalled.set()
                await reader.read()  # until the client gives up and closes
            elif isinstance(reply, bytes):
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> MisbehavingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()


def _port_on(server: MisbehavingServer, **config: Any) -> BlnkHttpLedger:
    clock = config.pop("clock", None)
    journal = config.pop("journal", None)
    return BlnkHttpLedger(
        RemoteConfig(base_url=server.url, **config),
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout_s=30, clock=clock),
        journal=journal,
        sleep=no_sleep,
    )


def _stored(seen: Seen, **extra: Any) -> bytes:
    """Blnk's 201 for a posted transaction: the request echoed with an id and a status."""
    body = seen.json()
    body.update({"transaction_id": f"txn_{uuid.uuid4()}", "status": "APPLIED", **extra})
    return _answer(201, body)


def _refusal(status: int, code: str, message: str) -> bytes:
    return _answer(status, {"error": message, "error_detail": {"code": code, "message": message}})


def _queued_refusal() -> bytes:
    """Blnk's 409 to a commit or void while one for the same hold waits in its queue."""
    return _refusal(409, "GEN_CONFLICT", "a commit or void is already queued for this transaction")


# ---------------------------------------------------------------- the stand-in Blnk


class ReplacingTransport(httpx.AsyncBaseTransport):
    """Sends every request for real, then replaces the first `count` answers to requests that
    `matches` with `replacement(request)`: the server acted, the client heard something else."""

    def __init__(
        self,
        matches: Callable[[httpx.Request], bool],
        replacement: Callable[[httpx.Request], httpx.Response],
        count: int = 1,
    ) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.matches = matches
        self.replacement = replacement
        self.count = count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.count > 0 and self.matches(request):
            self.count -= 1
            await response.aread()
            await response.aclose()
            return self.replacement(request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _bad_gateway(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, request=request)


def _bad_gzip(request: httpx.Request) -> httpx.Response:
    """A 200 whose body claims gzip but is not: the answer cannot be decoded."""
    return httpx.Response(
        200,
        headers={"Content-Encoding": "gzip"},
        stream=httpx.ByteStream(b"this is not gzip"),
        request=request,
    )


async def _hold(remote: BlnkHttpLedger, api: httpx.AsyncClient, units: int) -> tuple[str, str]:
    """A funded source's hold of `units` to a fresh balance: (hold id, destination)."""
    source = await remote_funded(remote, api, 1_000)
    destination = await remote_balance(api)
    (hold,) = await remote.execute([transfer(source, destination, units, inflight=True)])
    assert hold.body is not None, hold.error
    return hold.body["transaction_id"], destination


def _on(
    ledger_url: str, transport: httpx.AsyncBaseTransport, **config: Any
) -> tuple[BlnkHttpLedger, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=transport)
    port = BlnkHttpLedger(RemoteConfig(base_url=ledger_url, **config), http=http, sleep=no_sleep)
    return port, http


def _inflight_path(request: httpx.Request) -> bool:
    return request.url.path.startswith("/transactions/inflight/")


class TestLostAnswersResolved:
    async def test_a_void_whose_answer_was_lost_answers_the_void(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A void applied but its answer lost: the retry is refused as already voided, and the
        port answers the void it made (200, VOID), not the refusal."""
        hold_id, destination = await _hold(remote, api, 500)
        transport = ReplacingTransport(_inflight_path, _bad_gateway)
        port, http = _on(ledger_url, transport)
        async with http:
            (void,) = await port.execute([VoidInflight(hold_id, "", "")])
        assert transport.count == 0
        assert void.error is None, void.error
        assert void.status_code == 200
        assert void.body is not None
        assert (void.body["status"], void.body["parent_transaction"]) == ("VOID", hold_id)
        assert void.body["precise_amount"] == 500
        assert await remote_amount(api, destination, "inflight_balance") == 0

    async def test_a_whole_commit_whose_answer_was_lost_answers_the_commit(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A whole-remainder commit applied but its answer lost (after an earlier partial
        commit): the retry is refused as already committed, and the port answers the commit it
        made, the remainder's, committed once."""
        hold_id, destination = await _hold(remote, api, 500)
        (partial,) = await remote.execute([CommitInflight(hold_id, "", "", precise_amount=200)])
        assert partial.error is None, partial.error
        transport = ReplacingTransport(_inflight_path, _bad_gateway)
        port, http = _on(ledger_url, transport)
        async with http:
            (commit,) = await port.execute([CommitInflight(hold_id, "", "")])
        assert transport.count == 0
        assert commit.error is None, commit.error
        assert commit.body is not None
        assert (commit.body["status"], commit.body["precise_amount"]) == ("APPLIED", 300)
        assert await remote_amount(api, destination) == 500

    async def test_a_void_refused_without_a_lost_answer_stays_refused(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A second void whose first answer was heard is the client's own repeat: 409."""
        hold_id, _ = await _hold(remote, api, 500)
        (first,) = await remote.execute([VoidInflight(hold_id, "", "")])
        assert first.error is None, first.error
        (again,) = await remote.execute([VoidInflight(hold_id, "", "")])
        assert again.error is not None
        assert (again.status_code, again.error.code) == (409, "TXN_ALREADY_VOIDED")

    async def test_a_queued_void_whose_answer_was_lost_answers_as_queued(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A queued void (skip_queue false) applied but its answer lost: the repeat is refused
        as already voided, and the port answers as the first attempt would have: the hold, with
        `queued` and the outcome of the void row it made. The hold is voided once."""
        hold_id, destination = await _hold(remote, api, 500)
        transport = ReplacingTransport(_inflight_path, _bad_gateway)
        port, http = _on(ledger_url, transport)
        async with http:
            (void,) = await port.execute([VoidInflight(hold_id, "", "", skip_queue=False)])
        assert transport.count == 0
        assert void.error is None, void.error
        assert void.status_code == 200
        assert void.body is not None
        assert (void.body["transaction_id"], void.body["queued"]) == (hold_id, True)
        voids = await api.post(
            "/transactions/filter",
            json={"filters": [{"field": "parent_transaction", "operator": "eq", "value": hold_id}]},
        )
        children = voids.json()["data"] if isinstance(voids.json(), dict) else voids.json()
        assert [c["status"] for c in children] == ["VOID"]
        assert void.body["outcome"] == {
            "status": "VOID",
            "transaction_id": children[0]["transaction_id"],
        }
        assert await remote_amount(api, destination, "inflight_balance") == 0

    async def test_a_lost_non_atomic_bulk_answer_is_resolved_by_reference(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A client's non-atomic bulk applied but its answer lost: the retry's items are all
        duplicates, and the port finds every item stored as sent: one success, money moved once."""
        source = await remote_funded(remote, api, 1_000)
        destination = await remote_balance(api)
        transport = ReplacingTransport(lambda r: r.url.path == "/transactions/bulk", _bad_gateway)
        items = (transfer(source, destination, 100), transfer(source, destination, 150))
        port, http = _on(ledger_url, transport)
        async with http:
            (outcome,) = await port.execute(
                [PostBulk(f"bulk_{uuid.uuid4()}", items, atomic=False, inflight=False)]
            )
        assert transport.count == 0
        assert outcome.status_code == 201, outcome.body
        assert outcome.body is not None
        assert (outcome.body["status"], outcome.body["transaction_count"]) == ("applied", 2)
        assert await remote_amount(api, destination) == 250

    async def test_a_refused_atomic_bulk_with_a_lost_answer_is_not_claimed(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """An atomic bulk refused (no funds) whose answer was lost: the retry is refused too,
        nothing is stored, and the refusal is answered: no success for what did not apply."""
        source = await remote_funded(remote, api, 100)
        destination = await remote_balance(api)
        transport = ReplacingTransport(lambda r: r.url.path == "/transactions/bulk", _bad_gateway)
        items = (transfer(source, destination, 60), transfer(source, destination, 60))
        port, http = _on(ledger_url, transport)
        async with http:
            (outcome,) = await port.execute(
                [PostBulk(f"bulk_{uuid.uuid4()}", items, atomic=True, inflight=False)]
            )
        assert transport.count == 0
        assert outcome.status_code == 400
        assert outcome.body is not None
        assert outcome.body["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        assert await remote_amount(api, destination) == 0

    async def test_a_strangers_reference_is_not_taken_for_a_lost_answer(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A transfer whose answer was lost and whose reference another transfer (of another
        amount) already holds: the retry's duplicate is not read as our success."""
        destination = await remote_balance(api)
        taken = transfer("@WorldUSD", destination, 5, allow_overdraft=True)
        (first,) = await remote.execute([taken])
        assert first.error is None, first.error
        transport = ReplacingTransport(lambda r: r.url.path == "/transactions", _bad_gateway)
        port, http = _on(ledger_url, transport)
        async with http:
            (outcome,) = await port.execute(
                [
                    transfer(
                        "@WorldUSD",
                        destination,
                        7,
                        reference=taken.reference,
                        allow_overdraft=True,
                    )
                ]
            )
        assert transport.count == 0
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (409, "TXN_DUPLICATE_REFERENCE")
        assert await remote_amount(api, destination) == 5

    async def test_an_answer_that_does_not_decode_is_resolved_as_a_lost_one(
        self, ledger_url: str, api: httpx.AsyncClient
    ) -> None:
        """A transfer applied but answered with a body that does not decode (bad gzip): the
        port retries, finds it stored by reference, and answers it: applied once."""
        destination = await remote_balance(api)
        transport = ReplacingTransport(lambda r: r.url.path == "/transactions", _bad_gzip)
        port, http = _on(ledger_url, transport)
        command = transfer("@WorldUSD", destination, 321, allow_overdraft=True)
        async with http:
            (outcome,) = await port.execute([command])
        assert transport.count == 0
        assert outcome.error is None, outcome.error
        assert outcome.body is not None
        assert outcome.body["reference"] == command.reference
        assert await remote_amount(api, destination) == 321

    async def test_a_partial_commit_answered_undecodably_is_not_retried(
        self, ledger_url: str, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A partial commit whose answer does not decode is reported unknown, never repeated:
        the hold is committed once."""
        hold_id, destination = await _hold(remote, api, 500)
        transport = ReplacingTransport(_inflight_path, _bad_gzip)
        port, http = _on(ledger_url, transport)
        async with http:
            (outcome,) = await port.execute([CommitInflight(hold_id, "", "", precise_amount=100)])
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (503, "LEDGER_OUTCOME_UNKNOWN")
        assert await remote_amount(api, destination) == 100


class TestCompensationOnTheServer:
    async def test_legs_that_all_apply_answer_the_bulk(
        self, ledger_url: str, db: Database, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Every leg applies: 201 with the bulk's count, and no compensation is recorded."""
        source = await remote_funded(remote, api, 100)
        destination = await remote_balance(api)
        legs = (transfer(source, destination, 30), transfer(source, destination, 40))
        port = BlnkHttpLedger(
            RemoteConfig(base_url=ledger_url, native_atomic_bulk=False),
            journal=PgCompensationJournal(db),
            sleep=no_sleep,
        )
        operation = f"bulk_{uuid.uuid4()}"
        try:
            (outcome,) = await port.execute(
                [PostBulk(operation, legs, atomic=True, inflight=False)]
            )
        finally:
            await port.aclose()
        assert outcome.status_code == 201, outcome.body
        assert outcome.body == {"batch_id": operation, "status": "applied", "transaction_count": 2}
        assert await remote_amount(api, destination) == 70
        async with db.connection() as conn:
            assert await fx_repository.compensations_of(conn, operation) == []

    async def test_a_hold_is_compensated_by_a_void(
        self, ledger_url: str, db: Database, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Leg 2 of two holds fails: leg 1's hold is voided (not reversed), recorded as posted
        with the void's id."""
        source = await remote_funded(remote, api, 100)
        destination = await remote_balance(api)
        legs = (
            transfer(source, destination, 70, inflight=True),
            transfer(source, destination, 70, inflight=True),
        )
        port = BlnkHttpLedger(
            RemoteConfig(base_url=ledger_url, native_atomic_bulk=False),
            journal=PgCompensationJournal(db),
            sleep=no_sleep,
        )
        operation = f"bulk_{uuid.uuid4()}"
        try:
            (outcome,) = await port.execute([PostBulk(operation, legs, atomic=True, inflight=True)])
        finally:
            await port.aclose()
        assert outcome.status_code == 400
        assert outcome.body is not None
        assert [c["status"] for c in outcome.body["compensations"]] == ["posted"]
        assert await remote_amount(api, destination, "inflight_balance") == 0
        assert await remote_amount(api, source, "inflight_balance") == 0
        hold = (await api.get(f"/transactions/reference/{legs[0].reference}")).json()
        async with db.connection() as conn:
            (recorded,) = await fx_repository.compensations_of(conn, operation)
        void = (await api.get(f"/transactions/{recorded['compensating_transaction_id']}")).json()
        assert (void["status"], void["parent_transaction"]) == ("VOID", hold["transaction_id"])
        assert recorded["status"] == "posted"

    async def test_a_compensation_whose_answer_was_lost_is_posted_once(
        self, ledger_url: str, db: Database, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """The reversal applied but its answer was lost: the retry is a duplicate of COMP_,
        resolved by reference; one reversal, recorded as posted with its id."""
        source = await remote_funded(remote, api, 100)
        first, second = await remote_balance(api), await remote_balance(api)
        legs = [transfer(source, first, 70), transfer(source, second, 70)]
        transport = ReplacingTransport(
            lambda r: r.url.path == "/transactions" and b'"COMP_' in r.content, _bad_gateway
        )
        http = httpx.AsyncClient(transport=transport)
        port = BlnkHttpLedger(
            RemoteConfig(base_url=ledger_url),
            http=http,
            journal=PgCompensationJournal(db),
            sleep=no_sleep,
        )
        operation = f"op_{uuid.uuid4()}"
        async with http:
            outcome = await port.post_with_compensation(operation, legs, reason="test")
        assert transport.count == 0
        assert outcome.body is not None
        assert [c["status"] for c in outcome.body["compensations"]] == ["posted"]
        assert await remote_amount(api, first) == 0
        assert await remote_amount(api, source) == 100
        reversal = (await api.get(f"/transactions/reference/COMP_{legs[0].reference}")).json()
        async with db.connection() as conn:
            (recorded,) = await fx_repository.compensations_of(conn, operation)
        assert recorded["compensating_transaction_id"] == reversal["transaction_id"]

    async def test_a_first_leg_refused_compensates_nothing(
        self, db: Database, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Nothing applied, nothing reversed: the refusal is answered with no compensation."""
        source = await remote_balance(api)
        legs = [transfer(source, await remote_balance(api), 10), transfer(source, source, 1)]
        operation = f"op_{uuid.uuid4()}"
        outcome = await remote.post_with_compensation(operation, legs, reason="test")
        assert outcome.status_code == 400
        assert outcome.body is not None
        assert outcome.body["error_detail"]["code"] == "TXN_INSUFFICIENT_FUNDS"
        assert (outcome.body["failed_reference"], outcome.body["compensations"]) == (
            legs[0].reference,
            [],
        )
        async with db.connection() as conn:
            assert await fx_repository.compensations_of(conn, operation) == []

    async def test_a_leg_applied_though_every_answer_was_lost_is_not_left_behind(
        self, ledger_url: str, db: Database, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """Leg 2 applies on the server but no answer of any attempt comes back: read back by
        reference, it counts as done, so the operation completes instead of reversing leg 1
        and leaving leg 2's money moved without a word."""
        source = await remote_funded(remote, api, 100)
        first, second = await remote_balance(api), await remote_balance(api)
        legs = [transfer(source, first, 30), transfer(source, second, 40)]
        marker = legs[1].reference.encode()
        transport = ReplacingTransport(
            lambda r: r.url.path == "/transactions" and marker in r.content,
            _bad_gateway,
            count=10,
        )
        http = httpx.AsyncClient(transport=transport)
        port = BlnkHttpLedger(
            RemoteConfig(base_url=ledger_url, retries_max=2),
            http=http,
            journal=PgCompensationJournal(db),
            sleep=no_sleep,
        )
        operation = f"op_{uuid.uuid4()}"
        async with http:
            outcome = await port.post_with_compensation(operation, legs, reason="test")
        assert transport.count == 7  # three attempts, every answer lost
        assert outcome.status_code == 201, outcome.body
        assert outcome.body == {"batch_id": operation, "status": "applied", "transaction_count": 2}
        assert (await remote_amount(api, first), await remote_amount(api, second)) == (30, 40)
        assert await remote_amount(api, source) == 30
        async with db.connection() as conn:
            assert await fx_repository.compensations_of(conn, operation) == []


class TestRequestsOnTheServer:
    async def test_a_commit_in_major_units_commits_that_much(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A commit's `amount` (major units) commits amount x the hold's precision."""
        hold_id, destination = await _hold(remote, api, 500)
        (commit,) = await remote.execute([CommitInflight(hold_id, "", "", amount=Decimal("1.5"))])
        assert commit.error is None, commit.error
        assert commit.body is not None
        assert commit.body["precise_amount"] == 150
        assert await remote_amount(api, destination) == 150

    async def test_an_overdraft_limit_travels_in_major_units(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """An overdraft limit of 2.5 lets an empty balance go to -250 and no further."""
        source, destination = await remote_balance(api), await remote_balance(api)
        limited = Decimal("2.5")
        (within,) = await remote.execute(
            [transfer(source, destination, 250, overdraft_limit=limited)]
        )
        assert within.error is None, within.error
        (beyond,) = await remote.execute(
            [transfer(source, destination, 1, overdraft_limit=limited)]
        )
        assert beyond.error is not None
        assert beyond.error.code == "TXN_INSUFFICIENT_FUNDS"
        assert await remote_amount(api, source) == -250

    async def test_a_clients_bulk_answers_blnks_bulk_body(
        self, remote: BlnkHttpLedger, api: httpx.AsyncClient
    ) -> None:
        """A client's non-atomic bulk that applies answers Blnk's 201 bulk body."""
        source = await remote_funded(remote, api, 100)
        destination = await remote_balance(api)
        batch = f"bulk_{uuid.uuid4()}"
        items = (transfer(source, destination, 10), transfer(source, destination, 20))
        (outcome,) = await remote.execute([PostBulk(batch, items, atomic=False, inflight=False)])
        assert outcome.status_code == 201, outcome.body
        assert outcome.body is not None
        assert (outcome.body["status"], outcome.body["transaction_count"]) == ("applied", 2)
        assert await remote_amount(api, destination) == 30

    async def test_a_refund_of_an_unknown_transaction_is_404(self, remote: BlnkHttpLedger) -> None:
        """Blnk's 404 for a refund comes back as TXN_NOT_FOUND."""
        (refund,) = await remote.execute(
            [RefundTransaction(f"txn_{uuid.uuid4()}", "", skip_queue=True)]
        )
        assert refund.error is not None
        assert (refund.status_code, refund.error.code) == (404, "TXN_NOT_FOUND")


def _state(port: BlnkHttpLedger) -> CircuitState:
    """The breaker's state, read fresh (a property that moves with the clock)."""
    return port.breaker.state


def _hold_command() -> VoidInflight:
    return VoidInflight(f"txn_{uuid.uuid4()}", "", "")


class TestMisbehavingServer:
    async def test_a_dropped_connection_is_retried_with_the_same_reference(self) -> None:
        """The server reads the transfer and drops the connection: the port sends the same
        request again (same reference, so the server could refuse a second copy)."""
        async with MisbehavingServer(lambda seen, i: DROP if i == 0 else _stored(seen)) as server:
            port = _port_on(server)
            command = transfer("@WorldUSD", "bln_x", 5, allow_overdraft=True)
            (outcome,) = await port.execute([command])
            await port.aclose()
        assert outcome.status_code == 201, outcome.error
        assert len(server.seen) == 2
        assert server.seen[0].body == server.seen[1].body
        assert server.seen[1].json()["reference"] == command.reference

    async def test_a_partial_commit_on_a_dropped_connection_is_sent_once(self) -> None:
        """A partial commit the server read before dropping the connection is never repeated:
        one request, outcome unknown."""
        async with MisbehavingServer(lambda seen, i: DROP) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([CommitInflight("txn_h", "", "", precise_amount=7)])
            await port.aclose()
        assert len(server.seen) == 1
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (503, "LEDGER_OUTCOME_UNKNOWN")

    async def test_a_lost_queued_void_is_asked_again_until_blnks_queue_ran_it(self) -> None:
        """Blnk's queue: the void's answer is lost, and its repeats are refused as "already
        queued" until the queue runs it, then as already voided. The port asks again (bounded)
        and answers the hold as queued, with the void row's outcome."""
        hold = {"transaction_id": "txn_h", "status": "INFLIGHT", "precise_amount": 500}
        void = {"transaction_id": "txn_v", "status": "VOID", "parent_transaction": "txn_h"}

        def script(seen: Seen, index: int) -> Reply:
            if seen.method == "PUT":
                if index == 0:
                    return DROP
                if index < 3:
                    return _queued_refusal()
                return _refusal(409, "TXN_ALREADY_VOIDED", "transaction has already been voided")
            if seen.path == "/transactions/filter":
                return _answer(200, [void])
            return _answer(200, hold)

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([VoidInflight("txn_h", "", "", skip_queue=False)])
            await port.aclose()
        assert outcome.error is None, outcome.error
        assert outcome.status_code == 200
        assert outcome.body == {
            **hold,
            "queued": True,
            "outcome": {"status": "VOID", "transaction_id": "txn_v"},
        }
        assert [s.method for s in server.seen] == ["PUT"] * 4 + ["POST", "GET"]
        assert server.seen[5].path == "/transactions/txn_h"

    async def test_a_lost_queued_commit_that_a_void_beat_is_refused(self) -> None:
        """The action waiting in Blnk's queue was someone else's void: once it ran, the repeat
        of the lost commit is refused as already voided, and that is the answer (409)."""

        def script(seen: Seen, index: int) -> Reply:
            if index == 0:
                return DROP
            if index == 1:
                return _queued_refusal()
            return _refusal(409, "TXN_ALREADY_VOIDED", "transaction has already been voided")

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([CommitInflight("txn_h", "", "", skip_queue=False)])
            await port.aclose()
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (409, "TXN_ALREADY_VOIDED")
        assert [s.method for s in server.seen] == ["PUT"] * 3  # no read-back of a void row

    async def test_a_queue_that_never_runs_is_asked_a_bounded_number_of_times(self) -> None:
        """A lost void whose repeats stay "already queued": the port stops after
        QUEUED_SETTLE_POLLS_MAX more asks and says the outcome is unknown (503), not 409."""
        async with MisbehavingServer(
            lambda seen, i: DROP if i == 0 else _queued_refusal()
        ) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([VoidInflight("txn_h", "", "", skip_queue=False)])
            await port.aclose()
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (503, "LEDGER_OUTCOME_UNKNOWN")
        assert len(server.seen) == 2 + QUEUED_SETTLE_POLLS_MAX

    async def test_already_queued_without_a_lost_answer_stays_a_conflict(self) -> None:
        """A first void refused as "already queued" is the client's own conflict: one request,
        409, nothing asked again."""
        async with MisbehavingServer(lambda seen, i: _queued_refusal()) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([VoidInflight("txn_h", "", "", skip_queue=False)])
            await port.aclose()
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (409, "GEN_CONFLICT")
        assert len(server.seen) == 1

    async def test_retries_are_bounded_and_back_off_exponentially(self) -> None:
        """A server that always drops: 1 + retries_max attempts, the waits between them drawn
        from [c/2, c] for a ceiling c doubling from the base up to the cap, then 503."""
        delays: list[float] = []

        async def sleep(delay_s: float) -> None:
            delays.append(delay_s)

        async with MisbehavingServer(lambda seen, i: DROP) as server:
            port = BlnkHttpLedger(
                RemoteConfig(
                    base_url=server.url, retries_max=4, backoff_base_s=0.2, backoff_cap_s=0.5
                ),
                breaker=CircuitBreaker(failure_threshold=100),
                sleep=sleep,
            )
            (outcome,) = await port.execute([_hold_command()])
            await port.aclose()
        assert len(server.seen) == 5
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (503, "LEDGER_UNAVAILABLE")
        ceilings = [0.2, 0.4, 0.5, 0.5]
        assert len(delays) == len(ceilings)
        assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays

    async def test_an_answer_that_is_not_json_fails_only_its_command(self) -> None:
        """A 200 that is a proxy's HTML page fails its own command as unknown (503); the other
        command of the call still gets its answer."""
        void, refund = _hold_command(), RefundTransaction("txn_paid", "", skip_queue=True)

        def script(seen: Seen, _: int) -> Reply:
            if seen.path.startswith("/transactions/inflight/"):
                return _answer(200, b"<html>upstream says hello</html>")
            return _answer(201, {"transaction_id": "txn_refund", "status": "APPLIED"})

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            outcomes = await port.execute([void, refund])
            await port.aclose()
        assert outcomes[0].error is not None
        assert (outcomes[0].status_code, outcomes[0].error.code) == (503, "LEDGER_OUTCOME_UNKNOWN")
        assert (outcomes[1].status_code, outcomes[1].body) == (
            201,
            {"transaction_id": "txn_refund", "status": "APPLIED"},
        )

    async def test_an_applied_bulk_item_keeps_its_answer_when_another_fails_alone(self) -> None:
        """A Blnk-style bulk refusal without per-item results: the stored item is answered 201
        although the item posted alone then finds the server down (503 for it alone)."""
        applied, lost = (
            transfer("@WorldUSD", "bln_x", 1, allow_overdraft=True),
            transfer("@WorldUSD", "bln_y", 2, allow_overdraft=True),
        )
        row = {
            **json.loads(_json_text(applied)),
            "transaction_id": "txn_applied",
            "status": "APPLIED",
        }

        def script(seen: Seen, _: int) -> Reply:
            if seen.path == "/transactions/bulk":
                return _refusal(400, "TXN_INSUFFICIENT_FUNDS", "insufficient funds")
            if seen.path == "/transactions/filter":
                return _answer(200, [row])
            return _answer(500, b"down")

        async with MisbehavingServer(script) as server:
            port = _port_on(server, retries_max=0)
            outcomes = await port.execute([applied, lost])
            await port.aclose()
        assert outcomes[0].status_code == 201
        assert outcomes[0].body is not None
        assert outcomes[0].body["transaction_id"] == "txn_applied"
        assert outcomes[1].error is not None
        assert (outcomes[1].status_code, outcomes[1].error.code) == (503, "LEDGER_UNAVAILABLE")

    async def test_a_lagging_lookup_keeps_the_refusal(self) -> None:
        """A lost answer, a retry refused as a duplicate, and a lookup that does not find the
        reference (a lagging read): the refusal stands, nothing is claimed."""

        def script(seen: Seen, index: int) -> Reply:
            if index == 0:
                return DROP
            if seen.method == "GET":
                return _refusal(404, "TXN_NOT_FOUND", "transaction not found")
            return _refusal(409, "TXN_DUPLICATE_REFERENCE", "reference has already been used")

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            command = transfer("@WorldUSD", "bln_x", 5, allow_overdraft=True)
            (outcome,) = await port.execute([command])
            await port.aclose()
        assert [(s.method, s.path) for s in server.seen][-1] == (
            "GET",
            f"/transactions/reference/{command.reference}",
        )
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (409, "TXN_DUPLICATE_REFERENCE")

    async def test_a_partial_commit_that_never_connected_is_retried(self) -> None:
        """Nothing listens: a partial commit never reached the server, so even it is retried
        (1 + retries_max connection attempts), then 503 unavailable, not unknown."""
        attempts: list[float] = []

        async def sleep(delay_s: float) -> None:
            attempts.append(delay_s)

        port = BlnkHttpLedger(
            RemoteConfig(base_url=f"http://127.0.0.1:{free_port()}", retries_max=2),
            breaker=CircuitBreaker(failure_threshold=100),
            sleep=sleep,
        )
        (outcome,) = await port.execute([CommitInflight("txn_h", "", "", precise_amount=7)])
        await port.aclose()
        assert port.requests_sent == 3
        assert len(attempts) == 2
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (503, "LEDGER_UNAVAILABLE")

    async def test_a_read_back_that_is_not_json_fails_its_bulk_alone(self) -> None:
        """Independent transfers whose read-back answers garbage: each is unknown (503); a
        command of the same call outside the bulk still gets its answer."""
        pair = [transfer("@WorldUSD", "bln_x", n, allow_overdraft=True) for n in (1, 2)]

        def script(seen: Seen, _: int) -> Reply:
            if seen.path == "/transactions/bulk":
                return _answer(201, {"batch_id": "bulk_1", "status": "applied"})
            if seen.path == "/transactions/filter":
                return _answer(200, b"<html>gateway timeout</html>")
            return _answer(200, {"status": "VOID"})

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            outcomes = await port.execute([*pair, _hold_command()])
            await port.aclose()
        codes = [(o.status_code, o.error.code if o.error else None) for o in outcomes]
        assert codes == [(503, "LEDGER_OUTCOME_UNKNOWN")] * 2 + [(200, None)]

    async def test_a_compensation_that_fails_is_recorded_failed(self, db: Database) -> None:
        """Leg 2 is refused and the reversal of leg 1 cannot be posted (the server fails):
        answered and recorded as a failed compensation, with its error, for an operator."""
        legs = [
            transfer("bln_a", "bln_b", 10),
            transfer("bln_a", "bln_c", 20),
        ]

        def script(seen: Seen, _: int) -> Reply:
            reference = seen.json()["reference"]
            if reference == legs[0].reference:
                return _stored(seen)
            if reference == legs[1].reference:
                return _refusal(400, "TXN_INSUFFICIENT_FUNDS", "insufficient funds")
            return _answer(503, b"overloaded")

        operation = f"op_{uuid.uuid4()}"
        async with MisbehavingServer(script) as server:
            port = _port_on(server, retries_max=1, journal=PgCompensationJournal(db))
            outcome = await port.post_with_compensation(operation, legs, reason="test")
            await port.aclose()
        assert [s.json()["reference"] for s in server.seen] == [
            legs[0].reference,
            legs[1].reference,
            "COMP_" + legs[0].reference,
            "COMP_" + legs[0].reference,
        ]
        assert outcome.body is not None
        assert outcome.body["compensations"] == [
            {
                "original_reference": legs[0].reference,
                "reference": "COMP_" + legs[0].reference,
                "status": "failed",
            }
        ]
        async with db.connection() as conn:
            (recorded,) = await fx_repository.compensations_of(conn, operation)
        assert (recorded["status"], recorded["compensating_transaction_id"]) == ("failed", "")
        assert recorded["error"].startswith("LEDGER_UNAVAILABLE")

    async def test_a_compensation_without_a_journal_is_still_answered(self) -> None:
        """With no journal the compensation is still posted and reported in the answer."""
        legs = [transfer("bln_a", "bln_b", 10), transfer("bln_a", "bln_c", 20)]

        def script(seen: Seen, _: int) -> Reply:
            if seen.json()["reference"] == legs[1].reference:
                return _refusal(400, "TXN_INSUFFICIENT_FUNDS", "insufficient funds")
            return _stored(seen)

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            outcome = await port.post_with_compensation("op", legs, reason="test")
            await port.aclose()
        reversal = server.seen[2].json()
        assert (reversal["source"], reversal["destination"]) == ("bln_b", "bln_a")
        assert reversal["precise_amount"] == 10
        assert outcome.body is not None
        assert [c["status"] for c in outcome.body["compensations"]] == ["posted"]

    async def test_an_unanswered_leg_that_cannot_be_read_back_is_recorded_not_reversed(
        self, db: Database
    ) -> None:
        """Leg 2 goes unanswered and reading it back fails too: leg 1 is reversed, leg 2 is
        never reversed blind (it may not have applied) but answered and recorded as unknown."""
        legs = [transfer("bln_a", "bln_b", 10), transfer("bln_a", "bln_c", 20)]

        def script(seen: Seen, _: int) -> Reply:
            if seen.method == "GET":
                return _answer(503, b"overloaded")
            reference = seen.json()["reference"]
            if reference == legs[1].reference:
                return _answer(503, b"overloaded")
            return _stored(seen)

        operation = f"op_{uuid.uuid4()}"
        async with MisbehavingServer(script) as server:
            port = _port_on(server, retries_max=0, journal=PgCompensationJournal(db))
            outcome = await port.post_with_compensation(operation, legs, reason="test")
            await port.aclose()
        sent = [
            (s.method, s.path.split("/")[-1] if s.method == "GET" else s.json()["reference"])
            for s in server.seen
        ]
        assert sent == [
            ("POST", legs[0].reference),
            ("POST", legs[1].reference),
            ("GET", legs[1].reference),
            ("POST", "COMP_" + legs[0].reference),
        ]
        assert outcome.status_code == 503
        assert outcome.body is not None
        assert [(c["original_reference"], c["status"]) for c in outcome.body["compensations"]] == [
            (legs[0].reference, "posted"),
            (legs[1].reference, "unknown"),
        ]
        async with db.connection() as conn:
            recorded = await fx_repository.compensations_of(conn, operation)
        by_reference = {r["original_reference"]: r for r in recorded}
        assert by_reference[legs[0].reference]["status"] == "posted"
        unknown = by_reference[legs[1].reference]
        assert (unknown["status"], unknown["compensating_transaction_id"]) == ("failed", "")
        assert unknown["error"].startswith("LEDGER_OUTCOME_UNKNOWN")

    async def test_an_unanswered_leg_not_stored_fails_and_reverses_the_rest(self) -> None:
        """Leg 2 goes unanswered and the server has no such reference: it did not apply, so
        only leg 1 is reversed, and nothing is reported unknown."""
        legs = [transfer("bln_a", "bln_b", 10), transfer("bln_a", "bln_c", 20)]

        def script(seen: Seen, _: int) -> Reply:
            if seen.method == "GET":
                return _refusal(404, "TXN_NOT_FOUND", "transaction not found")
            if seen.json()["reference"] == legs[1].reference:
                return _answer(502, b"bad gateway")
            return _stored(seen)

        async with MisbehavingServer(script) as server:
            port = _port_on(server, retries_max=0)
            outcome = await port.post_with_compensation("op", legs, reason="test")
            await port.aclose()
        assert outcome.status_code == 503
        assert outcome.body is not None
        assert [(c["original_reference"], c["status"]) for c in outcome.body["compensations"]] == [
            (legs[0].reference, "posted")
        ]
        assert [s.method for s in server.seen] == ["POST", "POST", "GET", "POST"]

    async def test_post_transaction_hooks_fire_for_a_remote_transfer(self, db: Database) -> None:
        """Hooks are registered here, not on the remote server: a transfer it stored calls
        each POST_TRANSACTION hook with the stored transaction, as the embedded engine does."""

        def script(seen: Seen, _: int) -> Reply:
            if seen.path == "/hook":
                return _answer(200, {"success": True})
            return _stored(seen)

        command = transfer("bln_a", "bln_b", 10)
        async with MisbehavingServer(script) as server:
            body = HookIn(url=f"{server.url}/hook", type="POST_TRANSACTION", active=True)
            async with db.transaction() as conn:
                hook_id = (await create_hook(conn, body, now=datetime.now(UTC)))["id"]
            try:
                async with httpx.AsyncClient(trust_env=False) as http:
                    runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
                    remote = _port_on(server)
                    (outcome,) = await ApiLedgerPort(remote, runner).execute([command])
                    await runner.aclose(timeout_s=5.0)
                    await remote.aclose()
            finally:
                async with db.transaction() as conn:
                    await delete_hook(conn, hook_id)
        assert outcome.status_code == 201
        assert outcome.body is not None
        (call,) = [seen for seen in server.seen if seen.path == "/hook"]
        payload = call.json()
        assert (payload["hook_type"], payload["transaction_id"]) == (
            "POST_TRANSACTION",
            outcome.body["transaction_id"],
        )
        assert payload["data"]["reference"] == command.reference

    async def test_scheduled_runs_are_left_to_the_server(self) -> None:
        """A scheduled run is the remote server's own job: refused, and nothing is sent."""
        async with MisbehavingServer(lambda seen, i: DROP) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([RunScheduled("txn_s", "txn_c")])
            await port.aclose()
        assert server.seen == []
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == (400, "TXN_INVALID_STATUS_ACTION")


def _json_text(command: PostTransaction) -> str:
    return json.dumps(transaction_body(command))


class TestExactAmounts:
    async def test_an_amount_past_64_bits_is_exact_both_ways(self) -> None:
        """10^29-sized amounts go out as bare JSON digits and come back as the same int, on
        the single path and through the bulk path's read-back (which must still match)."""
        single = transfer("@WorldUSD", "bln_x", HUGE, allow_overdraft=True)
        pair = [transfer("@WorldUSD", "bln_y", HUGE + i, allow_overdraft=True) for i in (1, 2)]

        def script(seen: Seen, _: int) -> Reply:
            if seen.path == "/transactions/bulk":
                return _answer(201, {"batch_id": "bulk_1", "status": "applied"})
            if seen.path == "/transactions/filter":
                rows = [
                    {**json.loads(_json_text(c)), "transaction_id": f"txn_{i}"}
                    for i, c in enumerate(pair)
                ]
                return _answer(200, rows)
            return _stored(seen)

        async with MisbehavingServer(script) as server:
            port = _port_on(server)
            (one,) = await port.execute([single])
            two = await port.execute(pair)
            await port.aclose()
        assert f'"precise_amount":{HUGE}'.encode() in server.seen[0].body
        assert f'"precise_amount":{HUGE + 1}'.encode() in server.seen[1].body
        assert len(server.seen) == 3  # the pair: one bulk, one read-back, no lone retries
        bodies = [o.body for o in (one, *two)]
        assert [b["precise_amount"] if b else None for b in bodies] == [HUGE, HUGE + 1, HUGE + 2]
        assert all(type(b["precise_amount"]) is int for b in bodies if b)


class TestErrorBodies:
    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (400, b"<html>Bad Request</html>", (400, "GEN_BAD_REQUEST")),
            (404, b"404 page not found", (404, "GEN_NOT_FOUND")),
            (
                409,
                json.dumps(
                    {
                        "error": "a commit or void is already queued for this transaction",
                        "error_detail": {"code": "GEN_CONFLICT", "message": "already queued"},
                    }
                ).encode(),
                (409, "GEN_CONFLICT"),
            ),
            (
                400,
                json.dumps(
                    {
                        "errors": "cannot commit more than 5",
                        "error_detail": {
                            "code": "TXN_COMMIT_AMOUNT_EXCEEDED",
                            "message": "cannot commit more than 5",
                        },
                    }
                ).encode(),
                (400, "TXN_COMMIT_AMOUNT_EXCEEDED"),
            ),
            # Refusals of this server, not of the client's request: its credentials (a wrong
            # BLNK_API_KEY, a key without the scope), or a server asking to slow down. The
            # client is told to retry shortly, never that its own key or body was wrong.
            (
                401,
                json.dumps(
                    {
                        "error": "invalid API key",
                        "error_detail": {"code": "AUTH_INVALID_API_KEY", "message": "invalid"},
                    }
                ).encode(),
                (503, "LEDGER_UNAVAILABLE"),
            ),
            (403, b"forbidden", (503, "LEDGER_UNAVAILABLE")),
            (429, b"Too Many Requests", (503, "LEDGER_UNAVAILABLE")),
            (423, b"Locked", (503, "LEDGER_UNAVAILABLE")),
        ],
    )
    async def test_blnk_refusals_become_our_errors(
        self, status: int, body: bytes, expected: tuple[int, str]
    ) -> None:
        """Blnk's refusals, odd bodies included, keep their status and code."""
        async with MisbehavingServer(lambda seen, i: _answer(status, body)) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([_hold_command()])
            await port.aclose()
        assert outcome.error is not None
        assert (outcome.status_code, outcome.error.code) == expected
        assert outcome.error.details["remote_status"] == status

    async def test_a_validation_error_renders_as_our_ledger_renders_it(self) -> None:
        """Blnk's GEN_VALIDATION_ERROR renders in Blnk's standard body with its message, as the
        embedded ledger's validation errors do (not as a filter's parse errors)."""
        message = "currency is required"
        async with MisbehavingServer(
            lambda seen, i: _refusal(400, "GEN_VALIDATION_ERROR", message)
        ) as server:
            port = _port_on(server)
            (outcome,) = await port.execute([_hold_command()])
            await port.aclose()
        assert outcome.error is not None
        rendered = blnk_body(outcome.error)
        assert rendered["error"] == message
        assert rendered["error_detail"]["code"] == "GEN_VALIDATION_ERROR"


class TestBreakerOnTheWire:
    async def test_a_cancelled_trial_does_not_wedge_the_breaker(self) -> None:
        """The half-open trial's caller gives up mid-call: while it is out others are refused,
        and once the reset timeout passes again a new trial is let through and closes it."""
        clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))

        def script(seen: Seen, index: int) -> Reply:
            if index < 3:
                return _answer(500, b"restarting")
            if index == 3:
                return STALL
            return _answer(200, {"status": "VOID"})

        async with MisbehavingServer(script) as server:
            port = _port_on(server, retries_max=0, clock=clock)
            for _ in range(3):
                await port.execute([_hold_command()])
            assert _state(port) is CircuitState.OPEN
            clock.advance(30)
            trial = asyncio.create_task(port.execute([_hold_command()]))
            await server.stalled.wait()
            (refused,) = await port.execute([_hold_command()])
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            clock.advance(30)
            (admitted,) = await port.execute([_hold_command()])
            await port.aclose()
        assert refused.error is not None
        assert refused.error.code == "LEDGER_CIRCUIT_OPEN"
        assert admitted.error is None, admitted.error
        assert admitted.status_code == 200
        assert _state(port) is CircuitState.CLOSED
        assert len(server.seen) == 5

    def test_thresholds_below_one_are_refused(self) -> None:
        """A breaker that could never open (or never trial) is a configuration error."""
        with pytest.raises(ValueError, match="at least 1"):
            CircuitBreaker(failure_threshold=0)
        with pytest.raises(ValueError, match="at least 1"):
            CircuitBreaker(half_open_calls_max=0)


class TestConfiguration:
    def test_the_url_and_key_come_from_the_settings(self, settings: Settings) -> None:
        """BLNK_URL (trailing slash dropped) and BLNK_API_KEY; no URL is refused."""
        configured = settings.model_copy(
            update={"blnk_url": "http://blnk:5001/", "blnk_api_key": SecretStr("secret")}
        )
        config = RemoteConfig.from_settings(configured, retries_max=1)
        assert (config.base_url, config.api_key, config.retries_max) == (
            "http://blnk:5001",
            "secret",
            1,
        )
        with pytest.raises(ValueError, match="BLNK_URL"):
            RemoteConfig.from_settings(settings.model_copy(update={"blnk_url": None}))

    async def test_closing_the_port_leaves_a_callers_client_open(self) -> None:
        """A client passed in belongs to the caller: closing the port does not close it."""
        async with httpx.AsyncClient() as http:
            port = BlnkHttpLedger(RemoteConfig(base_url="http://blnk.test"), http=http)
            await port.aclose()
            assert not http.is_closed
