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
from ledger.dispatcher import DispatcherConfig, EventDispatcher
from ledger.engine import LedgerEngine
from ledger.models import GENERAL_LEDGER_ID, PostTransaction
from ledger.remote import BlnkHttpLedger, PgCompensationJournal, RemoteConfig
from tests.ledger.hook_receiver import HookReceiver
from tests.ledger.servers import (
    MASTER_KEY,
    UA,
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
def http(ledger_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the ledger server, as Blnk's SDK (its User-Agent); modules that
    want another client define their own."""
    with httpx.Client(base_url=ledger_url, headers=UA, timeout=30) as client:
        yield client


@pytest.fixture
def blnk(ledger_url: str) -> Iterator[Any]:
    """The official blnk-python SDK pointed at our ledger."""
    client = blnk_init("", BlnkClientOptions(base_url=ledger_url, retry_count=1))
    yield client
    client.close()


def create_sdk_balance(client: Any, ledger_name: str) -> str:
    """A USD balance in a new ledger named `ledger_name`, made through Blnk's SDK `client`."""
    ledger_id = client.ledgers.create({"name": ledger_name}).data["ledger_id"]
    balance_id: str = client.ledger_balances.create(
        {"ledger_id": ledger_id, "currency": "USD"}
    ).data["balance_id"]
    return balance_id


def fund_through_sdk(
    client: Any, balance_id: str, amount: int, description: str, **extra: Any
) -> dict[str, Any]:
    """Move `amount` (precision 100) USD from @WorldUSD to `balance_id` through Blnk's SDK
    `client`, skipping the queue, with a fresh reference unless `extra` names one (`extra` adds
    or replaces fields of the body); the transaction, which must be created."""
    body = {
        "precise_amount": amount,
        "precision": 100,
        "reference": f"ref-{uuid.uuid4()}",
        "currency": "USD",
        "description": description,
        "source": "@WorldUSD",
        "destination": balance_id,
        "allow_overdraft": True,
        "skip_queue": True,
    }
    body.update(extra)
    response = client.transactions.create(body)
    assert response.status == 201, response.to_dict()
    data: dict[str, Any] = response.data
    return data


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


@pytest.fixture(scope="module")
def hook_receiver() -> Iterator[HookReceiver]:
    """A transaction-hook endpoint (tests/ledger/hook_receiver.py), one per test module."""
    receiver = HookReceiver()
    yield receiver
    receiver.close()


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


async def fan_out_backlog(events: EventDispatcher) -> None:
    """Fan out, through `events`, what earlier tests committed while no subscription of this
    test was listening, so that the subscriptions a test makes see only its own events."""
    for _ in range(CATCH_UP_ROUNDS_MAX):
        if not (await events.fan_out()).is_full:
            break


@pytest.fixture
async def dispatcher(db: Database) -> AsyncIterator[EventDispatcher]:
    """An event dispatcher on the test database with short backoffs and few attempts."""
    config = DispatcherConfig(
        poll_interval_s=0.02,
        delivery_timeout_s=2.0,
        lease_s=5.0,
        attempts_max=3,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    events = EventDispatcher(db, config=config)
    await fan_out_backlog(events)
    yield events
    await events.aclose()


@pytest.fixture
async def events_api(events_ledger_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the events ledger server; deletes the webhook subscriptions a test
    made."""
    async with httpx.AsyncClient(base_url=events_ledger_url, timeout=10) as client:
        yield client
        for subscription in (await client.get("/webhooks")).json():
            await client.delete(f"/webhooks/{subscription['subscription_id']}")


async def subscribe_webhook(api: httpx.AsyncClient, url: str, event_types: Any) -> dict[str, Any]:
    """Subscribe `url` to `event_types` (a list of patterns, or "*") through the API; the
    created subscription, its secret included."""
    response = await api.post("/webhooks", json={"url": url, "event_types": event_types})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def webhook_deliveries(api: httpx.AsyncClient, subscription_id: str) -> list[dict[str, Any]]:
    """The deliveries of a subscription, as the API lists them."""
    response = await api.get(f"/webhooks/{subscription_id}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


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
    """A plain HTTP client on the ledger server (setup and checks); `events_api` is the one on
    the events ledger server."""
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
