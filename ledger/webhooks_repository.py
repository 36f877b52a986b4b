"""Every SQL statement of webhooks: subscriptions, deliveries, and the dispatcher's progress.

Claims use `FOR UPDATE SKIP LOCKED`, so several dispatchers (an old actor still draining while
its replacement starts) never fan out or send the same thing at the same moment; writes take
whole columns as arrays, one round trip per statement whatever the size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from ledger.models import TransactionRecord
from ledger.repository import transaction_from_row

BATCH_CURSOR: Final = "batches"
DELIVERY_ID_MAX: Final = 2**63 - 1  # a BIGSERIAL: no delivery has a larger id


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook subscription as stored (`secret` may be a sealed envelope)."""

    subscription_id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    secret_is_sealed: bool
    active: bool
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, and its delivery state."""

    delivery_id: int
    subscription_id: str
    event_id: str
    event_type: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery claimed for one attempt, with where and how to send it."""

    delivery: Delivery
    subscription: Subscription


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery row to create."""

    subscription_id: str
    event_id: str
    event_type: str
    body: str


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt ended with."""

    delivery_id: int
    attempts: int  # the attempt count the claim set; guards against a stale lease
    status: str  # delivered, pending (retry later) or dead
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox row."""

    event_id: str
    event_type: str
    entity_id: str
    payload: Any


_SUBSCRIPTION_COLUMNS = (
    "subscription_id, url, event_types, secret, secret_is_sealed, active, description,"
    " created_at, updated_at"
)
_DELIVERY_COLUMNS = (
    "delivery_id, subscription_id, event_id, event_type, body, status, attempts,"
    " next_attempt_at, last_error, last_status_code, created_at, delivered_at"
)


def _subscription(row: asyncpg.Record, prefix: str = "") -> Subscription:
    return Subscription(
        subscription_id=row[prefix + "subscription_id"],
        url=row[prefix + "url"],
        event_types=tuple(row[prefix + "event_types"]),
        secret=row[prefix + "secret"],
        secret_is_sealed=row[prefix + "secret_is_sealed"],
        active=row[prefix + "active"],
        description=row[prefix + "description"],
        created_at=row[prefix + "created_at"],
        updated_at=row[prefix + "updated_at"],
    )


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        subscription_id=row["subscription_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        body=row["body"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        last_status_code=row["last_status_code"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
    )


# ---------------------------------------------------------------- subscriptions


async def insert_subscription(conn: asyncpg.Connection, subscription: Subscription) -> None:
    """Store a new subscription."""
    await conn.execute(
        f"INSERT INTO ledger.webhook_subscriptions ({_SUBSCRIPTION_COLUMNS})"  # noqa: S608
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        subscription.subscription_id,
        subscription.url,
        list(subscription.event_types),
        subscription.secret,
        subscription.secret_is_sealed,
        subscription.active,
        subscription.description,
        subscription.created_at,
        subscription.updated_at,
    )


async def find_subscription(
    conn: asyncpg.Connection, subscription_id: str, *, for_update: bool = False
) -> Subscription | None:
    """A subscription by id, locked for the rest of the transaction when `for_update`."""
    row = await conn.fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM ledger.webhook_subscriptions"  # noqa: S608
        " WHERE subscription_id = $1" + (" FOR UPDATE" if for_update else ""),
        subscription_id,
    )
    return None if row is None else _subscription(row)


async def list_subscriptions(conn: asyncpg.Connection, *, limit: int) -> list[Subscription]:
    """Subscriptions, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM ledger.webhook_subscriptions"  # noqa: S608
        " ORDER BY created_at, subscription_id LIMIT $1",
        limit,
    )
    return [_subscription(row) for row in rows]


async def active_subscriptions(conn: asyncpg.Connection, *, limit: int) -> list[Subscription]:
    """Every active subscription (the dispatcher matches events against them)."""
    rows = await conn.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM ledger.webhook_subscriptions"  # noqa: S608
        " WHERE active ORDER BY subscription_id LIMIT $1",
        limit,
    )
    return [_subscription(row) for row in rows]


async def update_subscription(conn: asyncpg.Connection, subscription: Subscription) -> None:
    """Write a subscription's url, event types, description and active flag."""
    await conn.execute(
        "UPDATE ledger.webhook_subscriptions SET url = $2, event_types = $3, active = $4,"
        " description = $5, updated_at = $6 WHERE subscription_id = $1",
        subscription.subscription_id,
        subscription.url,
        list(subscription.event_types),
        subscription.active,
        subscription.description,
        subscription.updated_at,
    )


async def delete_subscription(conn: asyncpg.Connection, subscription_id: str) -> bool:
    """Delete a subscription; False when it does not exist."""
    status: str = await conn.execute(
        "DELETE FROM ledger.webhook_subscriptions WHERE subscription_id = $1", subscription_id
    )
    return status.endswith(" 1")


# ---------------------------------------------------------------- deliveries (API)


async def list_deliveries(
    conn: asyncpg.Connection, subscription_id: str, *, status: str | None, limit: int, offset: int
) -> list[Delivery]:
    """A page of a subscription's deliveries, newest first."""
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM ledger.webhook_deliveries"  # noqa: S608
        " WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2)"
        " ORDER BY delivery_id DESC LIMIT $3 OFFSET $4",
        subscription_id,
        status,
        limit,
        offset,
    )
    return [_delivery(row) for row in rows]


async def find_delivery(
    conn: asyncpg.Connection, subscription_id: str, delivery_id: int
) -> Delivery | None:
    """One delivery of a subscription (none for an id no BIGINT holds)."""
    if not 0 < delivery_id <= DELIVERY_ID_MAX:
        return None
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM ledger.webhook_deliveries"  # noqa: S608
        " WHERE delivery_id = $1 AND subscription_id = $2",
        delivery_id,
        subscription_id,
    )
    return None if row is None else _delivery(row)


async def redrive_delivery(
    conn: asyncpg.Connection, delivery_id: int, *, now: datetime
) -> Delivery | None:
    """A dead delivery back to pending, due now, attempts from zero."""
    row = await conn.fetchrow(
        "UPDATE ledger.webhook_deliveries SET status = 'pending', attempts = 0,"  # noqa: S608
        " next_attempt_at = $2 WHERE delivery_id = $1 AND status = 'dead'"
        f" RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
        now,
    )
    return None if row is None else _delivery(row)


# ---------------------------------------------------------------- fan-out


async def snapshot_xmin(conn: asyncpg.Connection) -> int:
    """The oldest transaction id still running: every id below it has finished."""
    xmin: int = await conn.fetchval("SELECT txid_snapshot_xmin(txid_current_snapshot())")
    return xmin


async def batch_floor(conn: asyncpg.Connection) -> int:
    """The transaction-id floor below which every batch is fanned out."""
    floor: int | None = await conn.fetchval(
        "SELECT txid_floor FROM ledger.event_cursor WHERE name = $1", BATCH_CURSOR
    )
    return 0 if floor is None else floor


async def claim_batches(
    conn: asyncpg.Connection, *, floor: int, limit: int
) -> list[tuple[int, int]]:
    """(batch id, txid) of committed batches not yet fanned out, oldest first, locked."""
    rows = await conn.fetch(
        "SELECT b.batch_id, b.txid FROM ledger.commit_batches b"
        " WHERE b.txid >= $1 AND NOT EXISTS"
        " (SELECT 1 FROM ledger.dispatched_batches d WHERE d.batch_id = b.batch_id)"
        " ORDER BY b.txid, b.batch_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        floor,
        limit,
    )
    return [(row["batch_id"], row["txid"]) for row in rows]


async def batch_transactions(
    conn: asyncpg.Connection, batch_ids: Sequence[int]
) -> dict[int, list[TransactionRecord]]:
    """The transactions each batch wrote, in id order within a batch."""
    if not batch_ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM ledger.transactions"
        " WHERE batch_id = ANY($1::bigint[]) ORDER BY batch_id, created_at, transaction_id",
        list(batch_ids),
    )
    found: dict[int, list[TransactionRecord]] = {}
    for row in rows:
        found.setdefault(row["batch_id"], []).append(transaction_from_row(row))
    return found


async def mark_batches_dispatched(
    conn: asyncpg.Connection, batches: Sequence[tuple[int, int, int]]
) -> None:
    """Record (batch id, txid, event count) of batches fanned out."""
    if not batches:
        return
    await conn.execute(
        "INSERT INTO ledger.dispatched_batches (batch_id, txid, event_count)"
        " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[]) ON CONFLICT DO NOTHING",
        [b[0] for b in batches],
        [b[1] for b in batches],
        [b[2] for b in batches],
    )


async def advance_floor(conn: asyncpg.Connection, *, floor: int, xmin: int) -> bool:
    """Move the floor to `xmin` when every batch below it is fanned out; prune below it.

    Every transaction with an id below `xmin` has finished, so the batches below it are all the
    batches there will ever be below it; once each is in `dispatched_batches` (including those
    this transaction just added) nothing below `xmin` is left to find.
    """
    if xmin <= floor:
        return False
    pending: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger.commit_batches b"
        " WHERE b.txid >= $1 AND b.txid < $2 AND NOT EXISTS"
        " (SELECT 1 FROM ledger.dispatched_batches d WHERE d.batch_id = b.batch_id))",
        floor,
        xmin,
    )
    if pending:
        return False
    await conn.execute(
        "UPDATE ledger.event_cursor SET txid_floor = greatest(txid_floor, $2), updated_at = now()"
        " WHERE name = $1",
        BATCH_CURSOR,
        xmin,
    )
    await conn.execute("DELETE FROM ledger.dispatched_batches WHERE txid < $1", xmin)
    return True


async def claim_outbox(conn: asyncpg.Connection, *, limit: int) -> list[OutboxEvent]:
    """Outbox events not yet fanned out, oldest first, locked."""
    rows = await conn.fetch(
        "SELECT event_id, event_type, entity_id, payload FROM ledger.outbox"
        " WHERE dispatched_at IS NULL ORDER BY created_at, event_id LIMIT $1"
        " FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [OutboxEvent(r["event_id"], r["event_type"], r["entity_id"], r["payload"]) for r in rows]


async def mark_outbox_dispatched(
    conn: asyncpg.Connection, event_ids: Sequence[str], *, now: datetime
) -> None:
    """Mark outbox events fanned out."""
    if not event_ids:
        return
    await conn.execute(
        "UPDATE ledger.outbox SET dispatched_at = $2 WHERE event_id = ANY($1::text[])",
        list(event_ids),
        now,
    )


async def insert_deliveries(
    conn: asyncpg.Connection, deliveries: Sequence[NewDelivery], *, now: datetime
) -> int:
    """Create deliveries (an event already delivered to a subscription is skipped)."""
    if not deliveries:
        return 0
    status: str = await conn.execute(
        "INSERT INTO ledger.webhook_deliveries"
        " (subscription_id, event_id, event_type, body, next_attempt_at, created_at)"
        " SELECT s, e, t, b, $5, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
        " AS n(s, e, t, b)"
        " ON CONFLICT (subscription_id, event_id) DO NOTHING",
        [d.subscription_id for d in deliveries],
        [d.event_id for d in deliveries],
        [d.event_type for d in deliveries],
        [d.body for d in deliveries],
        now,
    )
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------- delivery


async def claim_deliveries(
    conn: asyncpg.Connection, *, now: datetime, lease_until: datetime, limit: int
) -> list[ClaimedDelivery]:
    """Take due deliveries of active subscriptions for one attempt each.

    The claim counts the attempt and pushes `next_attempt_at` to the end of a lease, so if this
    dispatcher dies mid-send the delivery becomes due again by itself (at least once).
    """
    rows = await conn.fetch(
        "WITH due AS ("
        " SELECT d.delivery_id FROM ledger.webhook_deliveries d"
        " JOIN ledger.webhook_subscriptions s ON s.subscription_id = d.subscription_id"
        " WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND s.active"
        " ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED)"
        " UPDATE ledger.webhook_deliveries w SET attempts = w.attempts + 1, next_attempt_at = $2"
        " FROM due, ledger.webhook_subscriptions s"
        " WHERE w.delivery_id = due.delivery_id AND s.subscription_id = w.subscription_id"
        " RETURNING w.delivery_id, w.subscription_id, w.event_id, w.event_type, w.body, w.status,"
        " w.attempts, w.next_attempt_at, w.last_error, w.last_status_code, w.created_at,"
        " w.delivered_at, s.url AS s_url, s.event_types AS s_event_types, s.secret AS s_secret,"
        " s.secret_is_sealed AS s_secret_is_sealed, s.active AS s_active,"
        " s.description AS s_description, s.created_at AS s_created_at,"
        " s.updated_at AS s_updated_at, s.subscription_id AS s_subscription_id",
        now,
        lease_until,
        limit,
    )
    return [ClaimedDelivery(_delivery(row), _subscription(row, "s_")) for row in rows]


async def finish_attempts(conn: asyncpg.Connection, results: Sequence[AttemptResult]) -> None:
    """Record attempts' results (skipping any whose lease another dispatcher has taken over)."""
    if not results:
        return
    await conn.execute(
        "UPDATE ledger.webhook_deliveries w SET status = r.status, next_attempt_at = r.next_at,"
        " last_error = r.error, last_status_code = r.code, delivered_at = r.delivered_at"
        " FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::text[],"
        " $6::int[], $7::timestamptz[])"
        " AS r(id, attempts, status, next_at, error, code, delivered_at)"
        " WHERE w.delivery_id = r.id AND w.attempts = r.attempts AND w.status = 'pending'",
        [r.delivery_id for r in results],
        [r.attempts for r in results],
        [r.status for r in results],
        [r.next_attempt_at for r in results],
        [r.last_error for r in results],
        [r.last_status_code for r in results],
        [r.delivered_at for r in results],
    )


# ---------------------------------------------------------------- retention


async def prune_outbox(conn: asyncpg.Connection, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` outbox rows fanned out before `before`; returns how many."""
    status: str = await conn.execute(
        "DELETE FROM ledger.outbox WHERE event_id IN (SELECT event_id FROM ledger.outbox"
        " WHERE dispatched_at < $1 ORDER BY dispatched_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])


async def prune_deliveries(
    conn: asyncpg.Connection, *, status: str, before: datetime, limit: int
) -> int:
    """Delete up to `limit` finished deliveries: `delivered` ones delivered before `before`,
    `dead` ones that died before it (a dead delivery's `next_attempt_at` is its last attempt).
    A pending delivery is never pruned."""
    if status == "delivered":
        query = (
            "DELETE FROM ledger.webhook_deliveries WHERE delivery_id IN (SELECT delivery_id"
            " FROM ledger.webhook_deliveries WHERE status = 'delivered' AND delivered_at < $1"
            " ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
    elif status == "dead":
        query = (
            "DELETE FROM ledger.webhook_deliveries WHERE delivery_id IN (SELECT delivery_id"
            " FROM ledger.webhook_deliveries WHERE status = 'dead' AND next_attempt_at < $1"
            " ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
    else:
        raise ValueError(f"only finished deliveries are pruned, not {status!r}")
    done: str = await conn.execute(query, before, limit)
    return int(done.rsplit(" ", 1)[-1])


async def delivery_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """How many deliveries are in each state (for health and tests)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM ledger.webhook_deliveries GROUP BY status"
    )
    return {row["status"]: int(row["n"]) for row in rows}
