"""The event dispatcher: committed batches and outbox rows in, signed webhooks out.

Pure Python (no Ray): `actors/event_dispatcher.py` hosts one in a named actor; tests drive it
directly. Each round has two steps, each bounded:

1. **Fan-out** (one database transaction). Claim committed batches not yet fanned out and
   undispatched outbox rows (`FOR UPDATE SKIP LOCKED`), turn every transaction row of those
   batches and every outbox row into events, and write one delivery row per (event, matching
   subscription). Progress is recorded per batch (`dispatched_batches`), never per
   transaction: the ledger's hot path writes nothing for events beyond its batch row. Batch
   ids become visible out of order under concurrent writers, so batches are found by the
   transaction id that wrote them above a floor that only moves past a transaction-id horizon
   every writer below has finished (see `webhooks_repository.advance_floor`).
2. **Delivery**. Claim due deliveries (each claim counts the attempt and takes a lease), POST
   them concurrently (bounded) with bounded timeouts, then record the results in one statement:
   delivered, retry later (exponential backoff with jitter), or dead after the last attempt.
   A dispatcher that dies mid-send loses nothing: the lease runs out and the delivery is due
   again. Delivery is therefore at least once; receivers drop repeats by `X-Blnk-Event-Id`.

While a round finds a full batch of work, the next round starts at once (up to
`rounds_per_pass_max`); otherwise the dispatcher sleeps for the poll interval or until woken.

3. **Retention** (every `PRUNE_INTERVAL_S`, bounded). Outbox rows fanned out more than
   `outbox_retention_s` ago, deliveries delivered more than `delivered_retention_s` ago and
   dead ones that died more than `dead_retention_s` ago (long enough to redrive them) are
   deleted, at most `prune_rows_max` of each a step. Event bodies copy what the events were
   about (an `identity.created` body holds the identity's fields as they were at creation),
   so nothing keeps them longer than delivery and its audit need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import httpx

from kit.clock import Clock, SystemClock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.errors import AppError
from kit.metrics import counter
from ledger import webhooks_repository as repo
from ledger.webhooks import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    DELIVERY_ATTEMPTS_MAX,
    SUBSCRIPTIONS_LIST_MAX,
    delivery_headers,
    error_text,
    event_body,
    matches,
    open_secret,
    retry_at,
    transaction_event_id,
    transaction_event_type,
)
from ledger.webhooks_repository import AttemptResult, ClaimedDelivery, NewDelivery, Subscription
from ledger.wire import transaction_json

logger = logging.getLogger(__name__)

POLL_INTERVAL_S: Final = 0.2  # idle wait between rounds; a wake-up cuts it short
BATCHES_PER_ROUND_MAX: Final = 64  # commit batches fanned out per round (<= 512 postings each)
OUTBOX_PER_ROUND_MAX: Final = 1_000  # outbox rows fanned out per round
DELIVERIES_PER_ROUND_MAX: Final = 512  # attempts claimed per round
# Requests in flight at once. Past a few dozen, httpx's pool costs more than it overlaps (on two
# cores: ~300-500 deliveries/s per dispatcher to a local receiver); slow receivers are what
# concurrency is for. More throughput comes from more dispatcher actors (claims skip locked rows).
DELIVERY_CONCURRENCY_MAX: Final = 32
DELIVERY_TIMEOUT_S: Final = 5.0  # a receiver that takes longer is a failed attempt
CONNECT_TIMEOUT_S: Final = 2.0
LEASE_S: Final = 60.0  # a claimed attempt is due again after this (must exceed the timeout)
ROUNDS_PER_PASS_MAX: Final = 50  # back-to-back rounds while work keeps coming, then a breath
SECRETS_CACHED_MAX: Final = 10_000  # opened signing secrets kept per process
FAILURE_PAUSE_CAP_S: Final = 10.0  # longest pause after consecutive failed rounds
FLOOR_IDLE_INTERVAL_S: Final = 10.0  # how often an idle dispatcher moves (and prunes) the floor
_DAY_S: Final = 86_400.0
OUTBOX_RETENTION_S: Final = 7 * _DAY_S  # a fanned-out outbox row is kept this long
DELIVERED_RETENTION_S: Final = 7 * _DAY_S  # a delivered delivery (the subscriber's audit trail)
DEAD_RETENTION_S: Final = 30 * _DAY_S  # a dead delivery stays this long to be redriven
PRUNE_INTERVAL_S: Final = 60.0  # how often a dispatcher deletes what is past retention
PRUNE_ROWS_MAX: Final = 1_000  # rows of each kind deleted per retention step

DELIVERIES = counter(
    "ledger_webhook_attempts_total", "Webhook delivery attempts by result", ["result"]
)
FANNED_OUT = counter(
    "ledger_webhook_events_total", "Events fanned out to subscriptions", ["source"]
)
PRUNED = counter(
    "ledger_webhook_pruned_total", "Outbox rows and deliveries deleted past retention", ["kind"]
)


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """Every limit of a dispatcher (the defaults are the module's constants)."""

    poll_interval_s: float = POLL_INTERVAL_S
    batches_per_round_max: int = BATCHES_PER_ROUND_MAX
    outbox_per_round_max: int = OUTBOX_PER_ROUND_MAX
    deliveries_per_round_max: int = DELIVERIES_PER_ROUND_MAX
    delivery_concurrency_max: int = DELIVERY_CONCURRENCY_MAX
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    lease_s: float = LEASE_S
    attempts_max: int = DELIVERY_ATTEMPTS_MAX
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    rounds_per_pass_max: int = ROUNDS_PER_PASS_MAX
    outbox_retention_s: float = OUTBOX_RETENTION_S
    delivered_retention_s: float = DELIVERED_RETENTION_S
    dead_retention_s: float = DEAD_RETENTION_S
    prune_interval_s: float = PRUNE_INTERVAL_S
    prune_rows_max: int = PRUNE_ROWS_MAX

    def __post_init__(self) -> None:
        if not 0 < self.delivery_timeout_s < self.lease_s:
            raise ValueError("the lease must outlast one delivery attempt, which takes time")
        if (
            min(
                self.batches_per_round_max,
                self.deliveries_per_round_max,
                self.delivery_concurrency_max,
                self.attempts_max,
            )
            < 1
        ):
            raise ValueError("round sizes, concurrency and attempts must be at least 1")
        retention = (self.outbox_retention_s, self.delivered_retention_s, self.dead_retention_s)
        if min(retention) <= 0 or self.prune_interval_s <= 0 or self.prune_rows_max < 1:
            raise ValueError("retention periods, the prune interval and its size must be positive")

    @property
    def deliveries_per_claim_max(self) -> int:
        """Deliveries one round claims: no more than its slots can send, and the round can record,
        before their lease runs out. A slot sends its claims one after another, each within
        the delivery timeout, and the results are recorded once all are sent; a claim whose
        lease ran out first is claimed and sent again by another dispatcher, and the first
        result is dropped as stale. `waves` keeps one timeout of the lease for the rest."""
        waves = max(1, math.floor(self.lease_s / self.delivery_timeout_s) - 1)
        return min(self.deliveries_per_round_max, self.delivery_concurrency_max * waves)


@dataclass(slots=True)
class RoundReport:
    """What one round did."""

    batches: int = 0
    outbox_events: int = 0
    deliveries_created: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    pruned: int = 0  # rows deleted past retention
    is_full: bool = False

    def add(self, other: RoundReport) -> None:
        """Accumulate another round."""
        for name in (
            "batches",
            "outbox_events",
            "deliveries_created",
            "attempts",
            "delivered",
            "failed",
            "dead",
            "pruned",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _FanOut:
    deliveries: list[NewDelivery] = field(default_factory=list)
    events: int = 0

    def add(self, targets: list[Subscription], event_type: str, event_id: str, data: Any) -> None:
        body = event_body(event_type, data)
        self.events += 1
        self.deliveries.extend(
            NewDelivery(s.subscription_id, event_id, event_type, body) for s in targets
        )


def _targets(subscriptions: list[Subscription], event_type: str) -> list[Subscription]:
    return [s for s in subscriptions if matches(s.event_types, event_type)]


class EventDispatcher:
    """Fans out committed events to subscriptions and delivers them."""

    def __init__(
        self,
        db: Database,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        cipher: EnvelopeCipher | None = None,
        config: DispatcherConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.config = config or DispatcherConfig()
        self.clock = clock or SystemClock()
        self.cipher = cipher
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                self.config.delivery_timeout_s, connect=self.config.connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=self.config.delivery_concurrency_max,
                max_keepalive_connections=self.config.delivery_concurrency_max,
            ),
            follow_redirects=False,
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._slots = asyncio.Semaphore(self.config.delivery_concurrency_max)
        self._secrets: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._floor_moved_at = float("-inf")
        self._pruned_at = float("-inf")
        self.totals = RoundReport()

    async def aclose(self) -> None:
        """Close the HTTP client if this dispatcher made it."""
        if self._owns_http:
            await self.http.aclose()

    def wake(self) -> None:
        """Start the next round now instead of after the poll interval."""
        self._wake.set()

    # ------------------------------------------------------------ fan-out

    async def fan_out(self) -> RoundReport:
        """One fan-out step: claimed batches and outbox rows become deliveries."""
        report = RoundReport()
        now = self.clock.now()
        async with self.db.transaction() as conn:
            xmin = await repo.snapshot_xmin(conn)
            floor = await repo.batch_floor(conn)
            batches = await repo.claim_batches(
                conn, floor=floor, limit=self.config.batches_per_round_max
            )
            outbox = await repo.claim_outbox(conn, limit=self.config.outbox_per_round_max)
            subscriptions = await repo.active_subscriptions(conn, limit=SUBSCRIPTIONS_LIST_MAX)
            plan = _FanOut()
            marks: list[tuple[int, int, int]] = []
            if batches and subscriptions:
                by_batch = await repo.batch_transactions(
                    conn, [batch_id for batch_id, _ in batches]
                )
            else:
                by_batch = {}
            for batch_id, txid in batches:
                before = plan.events
                for record in by_batch.get(batch_id, ()):
                    event_type = transaction_event_type(record)
                    targets = _targets(subscriptions, event_type)
                    if targets:
                        event_id = transaction_event_id(event_type, record.transaction_id)
                        plan.add(targets, event_type, event_id, transaction_json(record))
                marks.append((batch_id, txid, plan.events - before))
            for event in outbox:
                targets = _targets(subscriptions, event.event_type)
                if targets:
                    payload = (
                        event.payload if event.payload is not None else {"id": event.entity_id}
                    )
                    plan.add(targets, event.event_type, event.event_id, payload)
            report.deliveries_created = await repo.insert_deliveries(conn, plan.deliveries, now=now)
            await repo.mark_batches_dispatched(conn, marks)
            await repo.mark_outbox_dispatched(conn, [e.event_id for e in outbox], now=now)
            # An idle dispatcher moves the floor now and then, not every poll: the move is a
            # write, and a write of its own would move xmin again by the next poll.
            started = self.clock.monotonic()
            if batches or started - self._floor_moved_at >= FLOOR_IDLE_INTERVAL_S:
                await repo.advance_floor(conn, floor=floor, xmin=xmin)
                self._floor_moved_at = started
        report.batches, report.outbox_events = len(batches), len(outbox)
        report.is_full = (
            len(batches) >= self.config.batches_per_round_max
            or len(outbox) >= self.config.outbox_per_round_max
        )
        FANNED_OUT.labels("batches").inc(len(batches))
        FANNED_OUT.labels("outbox").inc(len(outbox))
        return report

    # ------------------------------------------------------------ delivery

    async def deliver(self) -> RoundReport:
        """One delivery step: claim due deliveries, send them, record the results."""
        report = RoundReport()
        now = self.clock.now()
        async with self.db.transaction() as conn:
            claimed = await repo.claim_deliveries(
                conn,
                now=now,
                lease_until=now + timedelta(seconds=self.config.lease_s),
                limit=self.config.deliveries_per_claim_max,
            )
        if not claimed:
            return report
        results = await asyncio.gather(*(self._attempt(item) for item in claimed))
        async with self.db.transaction() as conn:
            await repo.finish_attempts(conn, results)
        report.attempts = len(results)
        for result in results:
            if result.status == "delivered":
                report.delivered += 1
            elif result.status == "dead":
                report.dead += 1
            else:
                report.failed += 1
            DELIVERIES.labels(result.status).inc()
        report.is_full = len(claimed) >= self.config.deliveries_per_claim_max
        return report

    def _secret(self, subscription: Subscription) -> str:
        key = subscription.subscription_id
        secret = self._secrets.get(key)
        if secret is None:
            if len(self._secrets) >= SECRETS_CACHED_MAX:
                self._secrets.clear()
            secret = open_secret(subscription, self.cipher)
            self._secrets[key] = secret
        return secret

    async def _attempt(self, claimed: ClaimedDelivery) -> AttemptResult:
        delivery = claimed.delivery
        status_code: int | None = None
        async with self._slots:
            try:
                headers = delivery_headers(
                    delivery, self._secret(claimed.subscription), int(self.clock.now().timestamp())
                )
                # The client's timeouts bound each read, not the attempt: a receiver sending a
                # byte now and then would hold the round (and outlive the lease) for ever. The
                # status is the receiver's answer; its body, of any size, is never read.
                async with (
                    asyncio.timeout(self.config.delivery_timeout_s),
                    self.http.stream(
                        "POST",
                        claimed.subscription.url,
                        content=delivery.body.encode(),
                        headers=headers,
                    ) as response,
                ):
                    status_code = response.status_code
                error = None if response.is_success else f"HTTP {status_code}"
            # One delivery's failure, not the round's. A host the client parses but cannot
            # encode (`xn--` with nothing after it) raises an IDNAError, a UnicodeError.
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                error = f"TimeoutError: no answer within {self.config.delivery_timeout_s} s"
            except AppError as exc:
                error = f"{exc.code}: {exc.message}"
        finished = self.clock.now()
        if error is None:
            return AttemptResult(
                delivery.delivery_id,
                delivery.attempts,
                "delivered",
                finished,
                None,
                status_code,
                finished,
            )
        is_dead = delivery.attempts >= self.config.attempts_max
        next_at = (
            finished
            if is_dead
            else retry_at(
                finished,
                delivery.attempts,
                self._rng,
                base_s=self.config.backoff_base_s,
                cap_s=self.config.backoff_cap_s,
            )
        )
        return AttemptResult(
            delivery.delivery_id,
            delivery.attempts,
            "dead" if is_dead else "pending",
            next_at,
            error_text(error),
            status_code,
            None,
        )

    # ------------------------------------------------------------ retention

    async def prune(self) -> int:
        """Delete what is past retention (see the module's docstring); returns the rows deleted.
        A kind that had more than a step's worth is pruned again at the next round, not after
        the interval."""
        now = self.clock.now()
        config = self.config
        async with self.db.transaction() as conn:
            counts = (
                await repo.prune_outbox(
                    conn,
                    before=now - timedelta(seconds=config.outbox_retention_s),
                    limit=config.prune_rows_max,
                ),
                await repo.prune_deliveries(
                    conn,
                    status="delivered",
                    before=now - timedelta(seconds=config.delivered_retention_s),
                    limit=config.prune_rows_max,
                ),
                await repo.prune_deliveries(
                    conn,
                    status="dead",
                    before=now - timedelta(seconds=config.dead_retention_s),
                    limit=config.prune_rows_max,
                ),
            )
        if max(counts) < config.prune_rows_max:
            self._pruned_at = self.clock.monotonic()
        PRUNED.labels("outbox").inc(counts[0])
        PRUNED.labels("delivered").inc(counts[1])
        PRUNED.labels("dead").inc(counts[2])
        return sum(counts)

    # ------------------------------------------------------------ loop

    async def run_once(self) -> RoundReport:
        """A fan-out step, then a delivery step; a retention step when one is due."""
        report = await self.fan_out()
        delivered = await self.deliver()
        report.add(delivered)
        report.is_full = report.is_full or delivered.is_full
        if self.clock.monotonic() - self._pruned_at >= self.config.prune_interval_s:
            report.pruned = await self.prune()
        self.totals.add(report)
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until `stop` is set; a failing round is logged and retried after a pause
        that doubles with each consecutive failure (up to `FAILURE_PAUSE_CAP_S`)."""
        failures = 0
        while not stop.is_set():
            for _ in range(self.config.rounds_per_pass_max):
                try:
                    report = await self.run_once()
                except Exception:  # the loop's last resort: log it, wait, go on
                    failures += 1
                    logger.exception(
                        "an event dispatcher round failed", extra={"failures": failures}
                    )
                    break
                failures = 0
                if not report.is_full or stop.is_set():
                    break
            pause = self.config.poll_interval_s
            if failures:
                pause = min(FAILURE_PAUSE_CAP_S, pause * float(2 ** min(failures, 16)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)
            self._wake.clear()
