"""Post-transaction hooks at shutdown: drained before the pool and the HTTP client close.

Goal: a POST_TRANSACTION hook call still running when a replica stops is given a bounded time
to finish, instead of being lost when the ledger's HTTP client and database pool close under
it. Method: the composition root (`deployments.ledger_wiring`) builds the ledger app, with the
in-process engine in place of the shard actors' port (so no Ray is needed) and everything else
as in production; a transaction posted through it schedules a post hook on a real local
receiver that answers after a short delay, and closing the replica's resources must let that
call reach the receiver. The replica's runner signs with its own master key, so the receiver
tells its calls from those of the other ledger servers of the test run, which share the
database and so the hook. Then the runner alone: a receiver that never answers is cancelled
once the drain's bound runs out, and a call scheduled during or after the drain never starts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import asyncpg
import httpx
import pytest
import yaml
from pydantic import SecretStr

from deployments import ledger_wiring
from deployments.ledger_wiring import HOOK_DRAIN_TIMEOUT_S
from deployments.resources import Resources
from gateway.app import create_app
from gateway.policy import BodyLimitPolicy, BotPolicy, GatewayPolicy
from gateway.problems import ErrorStyle
from kit.clock import SystemClock
from kit.db import Database
from kit.settings import Settings
from ledger import hook_repository
from ledger.engine import LedgerEngine
from ledger.hooks import (
    HOOK_CANCEL_WAIT_S,
    HOOK_TIMEOUT_S_MAX,
    HookIn,
    HookRecord,
    HookRunner,
    create_hook,
)
from ledger.hooks import delete_hook as remove_hook
from ledger.port import LedgerPort
from tests.ledger.conftest import MakeBalance
from tests.ledger.hook_receiver import (
    CALL_WAIT_S,
    Call,
    HookReceiver,
    Reply,
    blnk_signature,
    direct_hook,
)

pytestmark = pytest.mark.db

ROOT: Final = Path(__file__).resolve().parents[2]
REPLY_DELAY_S: Final = 0.3  # the receiver answers this long after a call arrives
SMALL_DRAIN_S: Final = 0.2  # the drain's bound when a receiver never answers
POLICY: Final = GatewayPolicy(
    body_limit=BodyLimitPolicy(bytes_max=5 * 1024 * 1024),
    bots=BotPolicy(allow=(r"^python-httpx/",)),
)


def _approve_slowly(_: int) -> Reply:
    """Approve, `REPLY_DELAY_S` after the call arrived (it is recorded on arrival)."""
    return 200, b'{"success": true}', REPLY_DELAY_S


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/never"
    finally:
        listener.close()


@pytest.fixture
async def idle_hook(db: Database, hook_receiver: HookReceiver) -> AsyncIterator[HookRecord]:
    """A registered but inactive post hook answered slowly: its run stamps land in its row,
    and no ledger server's runner calls it on its own."""
    url = hook_receiver.url("slow", _approve_slowly)
    body = HookIn(url=url, type="POST_TRANSACTION", active=False, timeout=5)
    async with db.transaction() as conn:
        hook_id = (await create_hook(conn, body, now=datetime.now(UTC)))["id"]
        row = await hook_repository.find_hook(conn, hook_id)
    assert row is not None
    yield HookRecord.from_row(row)
    async with db.transaction() as conn:
        await remove_hook(conn, hook_id)


def _silent_hook(url: str) -> HookRecord:
    """A hook the runner is handed directly, with the longest timeout and no retries."""
    return direct_hook(url, name="silent", timeout_s=HOOK_TIMEOUT_S_MAX)


def _is_signed_by(call: Call, key: str) -> bool:
    """Whether `call` carries Blnk's signature under `key` (a runner with that master key)."""
    return hmac.compare_digest(call.header("X-Blnk-Signature"), blnk_signature(call, key))


class TestReplicaShutdown:
    """The composition root drains the hook runner before closing what its calls use."""

    async def test_a_pending_post_hook_is_delivered_when_the_replica_closes(
        self,
        settings: Settings,
        db: Database,
        make_balance: MakeBalance,
        hook_receiver: HookReceiver,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A post hook still waiting for its slow receiver when the replica's resources close
        reaches the receiver and its run is stamped: the drain runs before the HTTP client and
        the pool close."""

        async def in_process_port(resources: Resources, _database_url: str) -> LedgerPort:
            return LedgerEngine(resources.db, writer="shutdown-test")

        # The shard actors' port, swapped for its in-process twin (no Ray); the rest is the
        # production wiring: the replica's pool, HTTP client, hook runner and closers.
        monkeypatch.setattr(ledger_wiring, "_embedded_port", in_process_port)
        master_key = "replica-master-" + secrets.token_urlsafe(16)
        replica_settings = settings.model_copy(update={"ledger_master_key": SecretStr(master_key)})
        destination = await make_balance()
        url = hook_receiver.url("slow", _approve_slowly)
        resources = await Resources.open(replica_settings)
        hook_id = ""
        stamped: asyncpg.Record | None = None
        try:
            app = create_app(
                title="ledger-shutdown-test",
                version="test",
                routers=await ledger_wiring.ledger_routers(resources),
                checks=list,
                error_style=ErrorStyle.BLNK,
                policy=POLICY,
                service="ledger",
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://replica",
                headers={"X-Blnk-Key": master_key},
            ) as client:
                hook = {"url": url, "type": "POST_TRANSACTION", "active": True, "timeout": 5}
                created = await client.post("/hooks", json=hook)
                assert created.status_code == 201, created.text
                hook_id = created.json()["id"]
                posted = await client.post(
                    "/transactions",
                    json={
                        "precise_amount": 500,
                        "precision": 100,
                        "reference": f"ref-{uuid.uuid4()}",
                        "currency": "USD",
                        "source": "@WorldUSD",
                        "destination": destination,
                        "allow_overdraft": True,
                        "skip_queue": True,
                    },
                )
                assert posted.status_code == 201, posted.text
        finally:
            await resources.close()
            if hook_id:
                async with db.transaction() as conn:
                    stamped = await hook_repository.find_hook(conn, hook_id)
                    await remove_hook(conn, hook_id)
        # Other ledger servers of the test run share the database (and so this hook); only the
        # replica's runner signs with this master key.
        calls = hook_receiver.calls_to(url, wait_s=0)
        from_replica = [call for call in calls if _is_signed_by(call, master_key)]
        assert len(from_replica) == 1
        transaction_id = posted.json()["transaction_id"]
        assert from_replica[0].json()["transaction_id"] == transaction_id
        assert stamped is not None
        assert stamped["last_success"] is True  # the run stamp was written before the pool closed

    def test_the_drain_fits_in_serves_graceful_shutdown(self) -> None:
        """The drain and the cancellation after it end before Serve stops the ledger replica."""
        config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        (ledger,) = [app for app in config["applications"] if app["name"] == "ledger"]
        for deployment in ledger["deployments"]:
            assert (
                deployment["graceful_shutdown_timeout_s"]
                > HOOK_DRAIN_TIMEOUT_S + HOOK_CANCEL_WAIT_S
            )


class TestRunnerClose:
    """`HookRunner.aclose`: stop taking post-hook calls, wait (bounded), cancel the rest."""

    async def test_a_slow_post_hook_is_delivered_and_stamped(
        self, db: Database, hook_receiver: HookReceiver, idle_hook: HookRecord
    ) -> None:
        """A post hook waiting for a slow reply is delivered and its run stamped before the
        drain returns; nothing is abandoned."""
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            runner.schedule_post([idle_hook], "txn_slow", {"amount": 1})
            abandoned = await runner.aclose(timeout_s=CALL_WAIT_S)
        assert abandoned == 0
        assert len(hook_receiver.calls_to(idle_hook.url, wait_s=0)) == 1
        async with db.connection() as conn:
            row = await hook_repository.find_hook(conn, idle_hook.hook_id)
        assert row is not None
        assert row["last_run"] is not None
        assert row["last_success"] is True

    async def test_a_silent_receiver_is_cancelled_at_the_bound(
        self, db: Database, silent_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A call to a receiver that never answers (hook timeout 30 s) is cancelled once the
        drain's bound runs out; the drain returns and logs the count, not the URL."""
        hook = _silent_hook(silent_url)
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            runner.schedule_post([hook], "txn_silent", {})
            with caplog.at_level(logging.INFO, logger="ledger.hooks"):
                abandoned = await runner.aclose(timeout_s=SMALL_DRAIN_S)
            assert runner.pending == 0
        assert abandoned == 1
        (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert record.getMessage() == "hook calls abandoned at shutdown"
        assert getattr(record, "deliveries_abandoned", None) == 1
        assert silent_url not in str(record.__dict__)

    async def test_a_call_scheduled_during_the_drain_is_refused(
        self, db: Database, silent_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Once the drain has begun, a new post-hook call is refused quietly (logged at info)."""
        hook = _silent_hook(silent_url)
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            runner.schedule_post([hook], "txn_before", {})
            closing = asyncio.ensure_future(runner.aclose(timeout_s=SMALL_DRAIN_S))
            await asyncio.sleep(0)  # the drain has begun
            with caplog.at_level(logging.INFO, logger="ledger.hooks"):
                runner.schedule_post([hook], "txn_during", {})
            assert runner.pending == 1  # the first call alone
            assert await closing == 1
        refusals = [r for r in caplog.records if r.levelno == logging.INFO]
        assert [(r.getMessage(), getattr(r, "transaction_id", None)) for r in refusals] == [
            ("post-transaction hooks refused: shutting down", "txn_during")
        ]

    async def test_no_call_starts_after_the_drain(
        self, db: Database, hook_receiver: HookReceiver, idle_hook: HookRecord
    ) -> None:
        """After the drain a post hook is not called and nothing is left running."""
        async with httpx.AsyncClient(trust_env=False) as http:
            runner = HookRunner(db, clock=SystemClock(), secret=None, http=http)
            assert await runner.aclose(timeout_s=SMALL_DRAIN_S) == 0
            runner.schedule_post([idle_hook], "txn_after", {})
            assert runner.pending == 0
            assert await runner.aclose(timeout_s=SMALL_DRAIN_S) == 0
        assert hook_receiver.calls_to(idle_hook.url, wait_s=0) == []
