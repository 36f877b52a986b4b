"""Ledger fixtures: an engine on the test database and helpers to make balances."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from blnk_sdk import BlnkClientOptions, blnk_init

from kit.db import Database
from kit.settings import Settings
from ledger import repository
from ledger.engine import LedgerEngine
from ledger.models import GENERAL_LEDGER_ID, PostTransaction
from ledger.remote import BlnkHttpLedger, PgCompensationJournal, RemoteConfig
from tests.ledger.servers import (
    MASTER_KEY,
    run_events_ledger_server,
    run_ledger_server,
    run_secure_ledger_server,
)

MakeBalance = Callable[..., Awaitable[str]]


async def insert_reconciliation_run(db: Database, *, status: str, heartbeat_at: datetime) -> str:
    """A reconciliation run row written with SQL (over an empty upload), as a runner that has
    since stopped would have left it; finished runs get their end time and, failed, a reason."""
    upload_id, reconciliation_id = f"upload_{uuid.uuid4()}", f"recon_{uuid.uuid4()}"
    finished = status in {"completed", "failed"}
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.reconciliation_uploads (upload_id, record_count) VALUES ($1, 0)",
            upload_id,
        )
        await conn.execute(
            "INSERT INTO ledger.reconciliations (reconciliation_id, upload_id, strategy,"
            " matching_rule_ids, rules, is_dry_run, status, error, started_at, updated_at,"
            " completed_at, heartbeat_at) VALUES ($1, $2, 'one_to_one', '{rule_x}', '[]', false,"
            " $3, $4, $5, $5, $6, $7)",
            reconciliation_id,
            upload_id,
            status,
            "boom" if status == "failed" else None,
            heartbeat_at - timedelta(hours=1),
            heartbeat_at if finished else None,
            heartbeat_at,
        )
    return reconciliation_id


@pytest.fixture
async def engine(db: Database) -> LedgerEngine:
    """An in-process engine writing to the test database."""
    return LedgerEngine(db, writer="test")


@pytest.fixture
def make_balance(db: Database) -> MakeBalance:
    """Create a balance in the General Ledger; returns its id."""

    async def make(currency: str = "USD") -> str:
        balance_id = f"bln_{uuid.uuid4()}"
        async with db.transaction() as conn:
            await repository.insert_balance(
                conn,
                balance_id=balance_id,
                ledger_id=GENERAL_LEDGER_ID,
                currency=currency,
                identity_id=None,
                indicator=None,
                track_fund_lineage=False,
                allocation_strategy="FIFO",
                meta_data={},
                created_at=datetime.now(UTC),
            )
        return balance_id

    return make


def transfer(source: str, destination: str, amount: int, **overrides: object) -> PostTransaction:
    """A skip_queue transfer command with a fresh id and reference."""
    fields: dict[str, object] = {
        "transaction_id": f"txn_{uuid.uuid4()}",
        "reference": f"ref-{uuid.uuid4()}",
        "precise_amount": amount,
        "precision": 100,
        "currency": "USD",
        "description": "test",
        "source": source,
        "destination": destination,
        "skip_queue": True,
    }
    fields.update(overrides)
    return PostTransaction(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def ledger_url(database_dsn: str, settings: Settings) -> Iterator[str]:
    """Blnk's API on a real local HTTP server (uvicorn in a thread, in-process engine)."""
    with run_ledger_server(settings, database_dsn) as url:
        yield url


@pytest.fixture
def blnk(ledger_url: str) -> Iterator[Any]:
    """The official blnk-python SDK pointed at our ledger."""
    client = blnk_init("", BlnkClientOptions(base_url=ledger_url, retry_count=1))
    yield client
    client.close()


@pytest.fixture(scope="session")
def secure_ledger_url(database_dsn: str, settings: Settings) -> Iterator[str]:
    """Blnk's API in secure mode (a master key), with tokenization and outbound HTTP for hooks."""
    with run_secure_ledger_server(settings, database_dsn) as url:
        yield url


@pytest.fixture
def blnk_master(secure_ledger_url: str) -> Iterator[Any]:
    """The blnk-python SDK on the secure-mode server, with the master key."""
    client = blnk_init(MASTER_KEY, BlnkClientOptions(base_url=secure_ledger_url, retry_count=1))
    yield client
    client.close()


# ---------------------------------------------------------------- events (monitors, webhooks)


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[Any]:
    """A real HTTP server that records webhook requests (tests/ledger/webhook_receiver.py)."""
    from tests.ledger.webhook_receiver import WebhookReceiver  # noqa: PLC0415 - only these tests

    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def events_ledger_url(database_dsn: str, settings: Settings) -> Iterator[str]:
    """The ledger app over real HTTP, its engine evaluating balance monitors after each batch."""
    with run_events_ledger_server(settings, database_dsn) as url:
        yield url


CATCH_UP_ROUNDS_MAX = 10_000


@pytest.fixture
async def dispatcher(db: Database) -> AsyncIterator[Any]:
    """An event dispatcher on the test database with short backoffs and few attempts."""
    from ledger.dispatcher import DispatcherConfig, EventDispatcher  # noqa: PLC0415

    config = DispatcherConfig(
        poll_interval_s=0.02,
        delivery_timeout_s=2.0,
        lease_s=5.0,
        attempts_max=3,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    events = EventDispatcher(db, config=config)
    # Fan out what earlier tests committed while no subscription is listening, so a test's
    # subscriptions see only its own events.
    for _ in range(CATCH_UP_ROUNDS_MAX):
        if not (await events.fan_out()).is_full:
            break
    yield events
    await events.aclose()


@pytest.fixture
def blnk_events(events_ledger_url: str) -> Iterator[Any]:
    """The blnk-python SDK on the server whose engine evaluates balance monitors."""
    client = blnk_init("", BlnkClientOptions(base_url=events_ledger_url, retry_count=1))
    yield client
    client.close()


async def funded_balance(engine: LedgerEngine, make_balance: MakeBalance, amount: int) -> str:
    """A new balance holding `amount` minor units, funded from @WorldUSD through `engine`."""
    balance_id = await make_balance()
    (outcome,) = await engine.execute(
        [transfer("@WorldUSD", balance_id, amount, allow_overdraft=True)]
    )
    assert outcome.error is None
    return balance_id


# ---------------------------------------------------------------- the remote Blnk adapter
# Our own ledger app stands in for the remote Blnk server (`ledger_url`).


async def no_sleep(_: float) -> None:
    """The adapter's backoff, without the wait."""
    return


@pytest.fixture
async def api(ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the ledger server (setup and checks); modules whose server is
    another one define their own."""
    async with httpx.AsyncClient(base_url=ledger_url, timeout=10) as client:
        yield client


@pytest.fixture
async def remote(ledger_url: str, db: Database) -> AsyncIterator[BlnkHttpLedger]:
    """The remote adapter on the stand-in server, recording compensations in PostgreSQL."""
    port = BlnkHttpLedger(
        RemoteConfig(base_url=ledger_url), journal=PgCompensationJournal(db), sleep=no_sleep
    )
    yield port
    await port.aclose()


async def remote_balance(api: httpx.AsyncClient, currency: str = "USD") -> str:
    """A fresh balance in a fresh ledger on the stand-in server."""
    ledger = (await api.post("/ledgers", json={"name": "remote"})).json()["ledger_id"]
    balance_id: str = (
        await api.post("/balances", json={"ledger_id": ledger, "currency": currency})
    ).json()["balance_id"]
    return balance_id


async def remote_amount(api: httpx.AsyncClient, balance_id: str, name: str = "balance") -> int:
    """One figure of a balance on the stand-in server."""
    amount: int = (await api.get(f"/balances/{balance_id}")).json()[name]
    return amount


async def remote_funded(remote: BlnkHttpLedger, api: httpx.AsyncClient, units: int) -> str:
    """A fresh balance funded with `units` through the adapter."""
    balance_id = await remote_balance(api)
    (outcome,) = await remote.execute(
        [transfer("@WorldUSD", balance_id, units, allow_overdraft=True)]
    )
    assert outcome.error is None, outcome.error
    return balance_id
