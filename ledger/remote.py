"""`BlnkHttpLedger`: the `LedgerPort` that posts to a remote Blnk server over HTTP.

With `BLNK_URL` set, the ledger's commands go to a real Blnk server (`X-Blnk-Key` from
`BLNK_API_KEY`) instead of the embedded engine:

* Plain immediate transfers (skip_queue, no schedule, no Idempotency-Key) of one `execute`
  call travel together as non-atomic `POST /transactions/bulk` calls (they are independent
  callers' requests; one refusal must not sink the others). Each item's outcome is then read
  back in pages through `POST /transactions/filter` by reference; an item Blnk did not record
  is posted alone to learn its own answer. Everything else goes one request per command:
  `POST /transactions`, `PUT /transactions/inflight/{id}`, `POST /refund-transaction/{id}`,
  `POST /transactions/bulk` for a client's bulk.
* Transport errors and 5xx answers are retried a bounded number of times with exponential
  backoff and jitter, but only where a retry cannot apply anything twice: anything that never
  reached the server, anything idempotent by reference (transactions, bulks, refunds: Blnk's
  unique reference refuses a second copy, and a refusal whose stored transaction matches the
  request is the first attempt's success), voids and whole-remainder commits (a repeat is
  refused as already done, and the child row the first attempt made is the answer; for a
  queued one, the hold with `queued` and that row's outcome, as Blnk answers a queued action,
  after asking again while Blnk's queue still holds it). A partial commit whose answer was
  lost is not retried: its outcome is reported as unknown (503) rather than risk committing
  twice. An answer that does not decode counts as lost; a success whose
  body is not a JSON object is unknown (503) for its own command alone.
* A circuit breaker (closed / open / half-open) stops calling a server that keeps failing:
  after `BREAKER_FAILURE_THRESHOLD` consecutive failures calls fail at once with 503 for
  `BREAKER_RESET_TIMEOUT_S`, then one trial call decides whether to close it again (a trial
  that never reports, its caller cancelled, is presumed lost after that timeout again).
* Compensating transactions (the seed's Task 4.6): `post_with_compensation` posts the legs of
  a multi-step operation one by one and, if one fails, reverses the legs that succeeded (a
  reverse posting with reference `COMP_<reference>`, or a void for a hold) and records each
  compensation in `ledger.compensations`. An atomic bulk uses it when the server's own atomic
  bulk is not to be trusted (`native_atomic_bulk=False`; Blnk before 0.12.2 refused split legs
  in atomic bulks).

Remote bodies are passed through: an outcome carries Blnk's JSON (`Outcome.body`), and a
refusal carries the domain error of Blnk's code (`ledger.errors` mirrors Blnk's codes).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

import httpx

from kit import json_exact
from kit.clock import Clock, SystemClock
from kit.db import Database
from kit.errors import AppError, ConflictError, DomainError, NotFoundError, iter_error_classes
from kit.ids import IdPrefix, new_id, uuid4_text
from kit.json_exact import dumps
from kit.settings import Settings
from ledger import errors as ledger_errors
from ledger import fx_repository
from ledger.errors import InvalidStatusActionError, LedgerUnavailableError
from ledger.models import (
    Command,
    CommitInflight,
    Leg,
    Outcome,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    RunScheduled,
    VoidInflight,
)
from ledger.posting import REFUND_SUFFIX

logger = logging.getLogger(__name__)

TIMEOUT_S: Final = 10.0  # one request to Blnk, end to end
CONNECT_TIMEOUT_S: Final = 3.0
RETRIES_MAX: Final = 3  # retries after the first attempt
BACKOFF_BASE_S: Final = 0.2  # first retry after ~0.2 s, doubling
BACKOFF_CAP_S: Final = 5.0
BULK_ITEMS_MAX: Final = 1_000  # transfers per bulk call (Blnk accepts 10,000)
FILTER_PAGE_MAX: Final = 100  # Blnk's largest filter page
BREAKER_FAILURE_THRESHOLD: Final = 5  # consecutive failures that open the circuit
BREAKER_RESET_TIMEOUT_S: Final = 30.0  # how long an open circuit refuses before a trial
BREAKER_HALF_OPEN_CALLS_MAX: Final = 1  # trial calls let through while half-open
CONNECTIONS_MAX: Final = 64
SINGLES_CONCURRENCY_MAX: Final = 16  # requests of one execute call in flight at once
QUEUED_SETTLE_POLLS_MAX: Final = 10  # repeats of a lost queued void or commit still queued
QUEUED_SETTLE_POLL_S: Final = 0.2  # wait before each (Blnk's queue runs within ~a second)
QUEUED_CONFLICT_CODE: Final = "GEN_CONFLICT"  # "a commit or void is already queued ..."
COMPENSATION_PREFIX: Final = "COMP_"
KEY_HEADER: Final = "X-Blnk-Key"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_SCHEDULE_LAYOUT: Final = "%Y-%m-%dT%H:%M:%SZ"  # Go's 2006-01-02T15:04:05Z07:00, in UTC


# ---------------------------------------------------------------- the circuit breaker


class CircuitState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"  # calls go through; failures are counted
    OPEN = "open"  # calls are refused at once until the reset timeout passes
    HALF_OPEN = "half_open"  # a few trial calls decide: success closes, failure reopens


class CircuitOpenError(LedgerUnavailableError):
    """The remote ledger failed repeatedly; calls are refused for a while."""

    code = "LEDGER_CIRCUIT_OPEN"
    default_message = "the remote ledger is failing; retry shortly"


class CircuitBreaker:
    """Counts consecutive failures of calls to one server and stops calling it when they pile up."""

    def __init__(
        self,
        *,
        failure_threshold: int = BREAKER_FAILURE_THRESHOLD,
        reset_timeout_s: float = BREAKER_RESET_TIMEOUT_S,
        half_open_calls_max: int = BREAKER_HALF_OPEN_CALLS_MAX,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_calls_max < 1:
            raise ValueError("thresholds must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_calls_max = half_open_calls_max
        self.clock = clock or SystemClock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._trial_at = 0.0

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its timeout reads as half-open)."""
        if (
            self._state is CircuitState.OPEN
            and self.clock.monotonic() - self._opened_at >= self.reset_timeout_s
        ):
            self._state, self._trials = CircuitState.HALF_OPEN, 0
        return self._state

    def before_call(self) -> None:
        """Admit a call, or raise `CircuitOpenError`."""
        state = self.state
        if state is CircuitState.OPEN:
            raise CircuitOpenError(retry_after_s=self.reset_timeout_s)
        if state is CircuitState.HALF_OPEN:
            now = self.clock.monotonic()
            if self._trials >= self.half_open_calls_max:
                if now - self._trial_at < self.reset_timeout_s:
                    raise CircuitOpenError("the remote ledger is on trial; retry shortly")
                # The trials never reported (a caller cancelled them): presume them lost,
                # or the circuit would stay half-open, refusing everything, for good.
                self._trials = 0
            self._trials += 1
            self._trial_at = now

    def record_success(self) -> None:
        """A call got an answer (any answer but a 5xx)."""
        self._state, self._failures, self._trials = CircuitState.CLOSED, 0, 0

    def record_failure(self) -> None:
        """A call failed in transport or with a 5xx."""
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state, self._opened_at = CircuitState.OPEN, self.clock.monotonic()


# ---------------------------------------------------------------- errors and bodies


class RemoteRefusedError(DomainError):
    """The remote ledger refused the request with a code we do not know."""

    code = "GEN_BAD_REQUEST"
    status = 400


class RemoteNotFoundError(NotFoundError):
    """The remote ledger answered 404 with a code we do not know."""


class RemoteConflictError(ConflictError):
    """The remote ledger answered 409 with a code we do not know."""


class OutcomeUnknownError(LedgerUnavailableError):
    """The request reached the remote ledger but its answer was lost, and retrying could apply
    it twice; look the transaction up before trying again."""

    code = "LEDGER_OUTCOME_UNKNOWN"


def _known_errors() -> dict[str, type[AppError]]:
    """Our error class for each of Blnk's codes. Where several share a code, the most general
    one in the standard body wins: a subclass or an older body (a filter's parse errors) is
    what one endpoint answers, not what the code means."""
    by_code: dict[str, type[AppError]] = {}
    for cls in iter_error_classes():
        if cls.__module__ != ledger_errors.__name__ or not issubclass(cls, DomainError):
            continue
        held = by_code.get(cls.code)
        if held is None or _generality(cls) < _generality(held):
            by_code[cls.code] = cls
    return by_code


def _generality(cls: type[AppError]) -> tuple[bool, int]:
    return cls.body_variant is not None, len(cls.__mro__)


_BY_CODE: Final = _known_errors()
# Refusals of this server rather than of a request: its credentials, or a server asking it to
# slow down (rate limited, 423 lock contention).
_SERVER_SIDE_STATUSES: Final = frozenset({401, 403, 423, 429})


def _may_have_applied(failure: AppError) -> bool:
    """Whether a failed post may have applied on the server: it went unanswered (an open
    circuit sent nothing, so it cannot have)."""
    return isinstance(failure, LedgerUnavailableError) and not isinstance(failure, CircuitOpenError)


def _still_queued(response: httpx.Response) -> bool:
    """Blnk's refusal of a commit or void while one for the same hold waits in its queue."""
    if response.status_code != 409:
        return False
    body = _json_object(response) or {}
    detail = body.get("error_detail")
    return isinstance(detail, dict) and detail.get("code") == QUEUED_CONFLICT_CODE


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's JSON object, integers exact at any size; None if it is not one."""
    try:
        body = json_exact.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _success_body(response: httpx.Response) -> dict[str, Any]:
    """A success answer's JSON object. The request was applied, but an answer that is not
    Blnk's JSON says nothing of how: the outcome is unknown (for this command alone)."""
    body = _json_object(response)
    if body is None:
        raise OutcomeUnknownError(
            f"the remote ledger answered {response.status_code} without a JSON object"
        )
    return body


def error_from_response(response: httpx.Response) -> AppError:
    """The domain error a Blnk error body stands for (Blnk's codes are ours)."""
    body = _json_object(response) or {}
    detail = body.get("error_detail")
    code = detail.get("code") if isinstance(detail, dict) else None
    message = (detail.get("message") if isinstance(detail, dict) else None) or body.get("error")
    text = str(message or f"the remote ledger answered {response.status_code}")[:512]
    if response.status_code in _SERVER_SIDE_STATUSES:
        # This server's credentials were refused (a wrong BLNK_API_KEY, a key without the
        # scope) or it is asked to slow down: nothing the client sent was wrong, and its own
        # key must not look refused. It retries shortly; the operator reads the log.
        logger.warning(
            "the remote ledger refused this server",
            extra={"remote_status": response.status_code, "remote_code": code},
        )
        return LedgerUnavailableError(
            f"the remote ledger cannot take requests from this server now ({text})",
            remote_status=response.status_code,
            remote_code=code,
        )
    cls = _BY_CODE.get(str(code)) if code else None
    if cls is None:
        cls = {404: RemoteNotFoundError, 409: RemoteConflictError}.get(
            response.status_code, RemoteRefusedError
        )
    return cls(text, remote_status=response.status_code, remote_code=code)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(_SCHEDULE_LAYOUT)


def _legs(legs: tuple[Leg, ...] | None) -> list[dict[str, Any]] | None:
    if legs is None:
        return None
    out = []
    for leg in legs:
        item: dict[str, Any] = {"identifier": leg.identifier}
        if leg.distribution is not None:
            item["distribution"] = leg.distribution
        if leg.precise_distribution is not None:
            item["precise_distribution"] = str(leg.precise_distribution)
        if leg.narration:
            item["narration"] = leg.narration
        out.append(item)
    return out


def transaction_body(command: PostTransaction) -> dict[str, Any]:
    """Blnk's request body for a transaction command."""
    body: dict[str, Any] = {
        "precise_amount": command.precise_amount,
        "precision": command.precision,
        "reference": command.reference,
        "currency": command.currency,
        "description": command.description,
        "allow_overdraft": command.allow_overdraft,
        "inflight": command.inflight,
        "skip_queue": command.skip_queue,
        "atomic": command.atomic,
        "meta_data": command.meta_data,
    }
    if command.overdraft_limit > 0:
        body["overdraft_limit"] = float(
            command.overdraft_limit
        )  # Blnk takes major units as a float
    optional: dict[str, Any] = {
        "source": command.source,
        "destination": command.destination,
        "sources": _legs(command.sources),
        "destinations": _legs(command.destinations),
        "scheduled_for": _time(command.scheduled_for),
        "inflight_expiry_date": _time(command.inflight_expiry_date),
        "inflight_commit_date": _time(command.inflight_commit_date),
        "effective_date": None
        if command.effective_date is None
        else command.effective_date.isoformat(),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def _matches(stored: dict[str, Any], command: PostTransaction) -> bool:
    """True when a stored transaction is this command's (a replay, not a stranger's reference)."""
    return (
        int(stored.get("precise_amount", -1)) == command.precise_amount
        and stored.get("currency") == command.currency
    )


def _is_bulk_eligible(command: Command) -> bool:
    return (
        isinstance(command, PostTransaction)
        and command.skip_queue
        and command.scheduled_for is None
        and command.idempotency is None
    )


# ---------------------------------------------------------------- compensation journal


class CompensationJournal(Protocol):
    """Where compensating transactions are recorded."""

    async def record(
        self,
        *,
        operation_id: str,
        original: dict[str, Any],
        compensating_reference: str,
        compensating_transaction_id: str,
        reason: str,
        error: str | None,
    ) -> None:
        """Record one compensation (posted when `error` is None, failed otherwise)."""
        ...


class PgCompensationJournal:
    """Records compensations in `ledger.compensations`."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def record(
        self,
        *,
        operation_id: str,
        original: dict[str, Any],
        compensating_reference: str,
        compensating_transaction_id: str,
        reason: str,
        error: str | None,
    ) -> None:
        """Insert the compensation row."""
        async with self.db.transaction() as conn:
            await fx_repository.insert_compensation(
                conn,
                compensation_id=f"cmp_{uuid4_text()}",
                operation_id=operation_id[:255],
                original_reference=str(original.get("reference", ""))[:255],
                original_transaction_id=str(original.get("transaction_id", "")),
                compensating_reference=compensating_reference[:255],
                compensating_transaction_id=compensating_transaction_id,
                reason=reason[:1024],
                status="posted" if error is None else "failed",
                error=None if error is None else error[:1024],
                created_at=self.clock.now(),
            )


# ---------------------------------------------------------------- the port


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """Where the remote Blnk is and every limit of talking to it."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    retries_max: int = RETRIES_MAX
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    bulk_items_max: int = BULK_ITEMS_MAX
    native_atomic_bulk: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RemoteConfig:
        """`BLNK_URL` and `BLNK_API_KEY` from the settings."""
        if not settings.blnk_url:
            raise ValueError("BLNK_URL is not set")
        key = settings.blnk_api_key.get_secret_value() if settings.blnk_api_key else None
        return cls(base_url=settings.blnk_url.rstrip("/"), api_key=key, **overrides)


class _Retry(StrEnum):
    UNSENT_ONLY = "unsent_only"  # retry only what never reached the server
    IDEMPOTENT = "idempotent"  # retry anything (the server refuses a second copy)


class BlnkHttpLedger:
    """A `LedgerPort` over a remote Blnk server."""

    def __init__(
        self,
        config: RemoteConfig,
        *,
        http: httpx.AsyncClient | None = None,
        breaker: CircuitBreaker | None = None,
        journal: CompensationJournal | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._owns_http = http is None
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers[KEY_HEADER] = config.api_key
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=CONNECTIONS_MAX, max_keepalive_connections=CONNECTIONS_MAX
            ),
        )
        self._headers = headers
        self.breaker = breaker or CircuitBreaker()
        self.journal = journal
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._singles = asyncio.Semaphore(SINGLES_CONCURRENCY_MAX)
        self.requests_sent = 0

    async def aclose(self) -> None:
        """Close the HTTP client if this port made it."""
        if self._owns_http:
            await self.http.aclose()

    # ------------------------------------------------------------ HTTP with retries

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retry: _Retry,
        headers: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, bool]:
        """Send one request with bounded retries; returns the answer and whether an earlier
        attempt may have reached the server without its answer coming back."""
        url = f"{self.config.base_url}{path}"
        content = None if body is None else dumps(body)
        ambiguous = False
        for attempt in range(self.config.retries_max + 1):
            self.breaker.before_call()
            self.requests_sent += 1
            try:
                response = await self.http.request(
                    method, url, content=content, headers={**self._headers, **(headers or {})}
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure: str = type(exc).__name__
            except (httpx.TransportError, httpx.DecodingError) as exc:
                # The request may have reached the server: its answer was lost, or came back
                # in an encoding that does not decode.
                failure = type(exc).__name__
                if retry is _Retry.UNSENT_ONLY:
                    self.breaker.record_failure()
                    raise OutcomeUnknownError(
                        f"the remote ledger's answer was lost ({failure})"
                    ) from exc
                ambiguous = True
            else:
                if response.status_code < 500:
                    self.breaker.record_success()
                    return response, ambiguous
                failure = f"HTTP {response.status_code}"
                if retry is _Retry.UNSENT_ONLY:
                    self.breaker.record_failure()
                    raise OutcomeUnknownError(f"the remote ledger failed ({failure})")
                ambiguous = True
            self.breaker.record_failure()
            if attempt < self.config.retries_max:
                ceiling = min(
                    self.config.backoff_cap_s, self.config.backoff_base_s * float(2**attempt)
                )
                await self._sleep(ceiling / 2 + self._rng.uniform(0, ceiling / 2))
        raise LedgerUnavailableError(f"the remote ledger did not answer ({failure})", path=path)

    async def _json(
        self, method: str, path: str, body: Any = None, *, retry: _Retry = _Retry.IDEMPOTENT
    ) -> Any:
        response, _ = await self._call(method, path, body, retry=retry)
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            return json_exact.loads(response.content) if response.content else None
        except ValueError as exc:
            raise OutcomeUnknownError("the remote ledger's answer is not JSON") from exc

    # ------------------------------------------------------------ the port

    async def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Run the commands on the remote server; one outcome per command, in order.

        The commands of one call are independent (different callers' requests, as a shard's
        batch is): they may run concurrently and in any order.
        """
        outcomes: list[Outcome | None] = [None] * len(commands)
        groups: dict[bool, list[int]] = {}
        for index, command in enumerate(commands):
            if _is_bulk_eligible(command):
                groups.setdefault(bool(getattr(command, "inflight", False)), []).append(index)
        singles = [i for i in range(len(commands)) if not _is_bulk_eligible(commands[i])]
        for indexes in groups.values():
            if len(indexes) == 1:
                singles.append(indexes[0])
                continue
            for start in range(0, len(indexes), self.config.bulk_items_max):
                chunk = indexes[start : start + self.config.bulk_items_max]
                items = [commands[i] for i in chunk]
                results = await self._guard(self._post_independent(items), len(items))
                for i, outcome in zip(chunk, results, strict=True):
                    outcomes[i] = outcome

        async def run_single(index: int) -> None:
            async with self._singles:
                outcomes[index] = (await self._guard(self._one(commands[index]), 1))[0]

        await asyncio.gather(*(run_single(index) for index in sorted(singles)))
        return [
            o if o is not None else Outcome(500, error=LedgerUnavailableError()) for o in outcomes
        ]

    @staticmethod
    async def _guard(work: Awaitable[Outcome | list[Outcome]], count: int) -> list[Outcome]:
        """The work's outcomes; an error raised by it (unavailable, circuit open) becomes the
        outcome of each of its `count` commands."""
        try:
            result = await work
        except AppError as error:
            return [Outcome(error.status, error=error) for _ in range(count)]
        return result if isinstance(result, list) else [result]

    async def _one(self, command: Command) -> Outcome:
        if isinstance(command, PostTransaction):
            return await self._post_one(command)
        if isinstance(command, CommitInflight | VoidInflight):
            return await self._settle(command)
        if isinstance(command, RefundTransaction):
            return await self._refund(command)
        if isinstance(command, PostBulk):
            return await self._bulk(command)
        if isinstance(command, RunScheduled):
            error = InvalidStatusActionError(
                "scheduled transactions run on the remote Blnk server itself"
            )
            return Outcome(error.status, error=error)
        raise TypeError(f"unknown command {type(command).__name__}")

    async def _post_one(self, command: PostTransaction) -> Outcome:
        headers = {IDEMPOTENCY_HEADER: command.idempotency.key} if command.idempotency else None
        response, ambiguous = await self._call(
            "POST",
            "/transactions",
            transaction_body(command),
            retry=_Retry.IDEMPOTENT,
            headers=headers,
        )
        if response.status_code < 400:
            return Outcome(response.status_code, body=_success_body(response))
        error = error_from_response(response)
        if ambiguous and error.code == ledger_errors.DuplicateReferenceError.code:
            stored = await self._by_reference(command.reference)
            if stored is not None and _matches(stored, command):
                return Outcome(201, body=stored)
        return Outcome(error.status, error=error)

    async def _by_reference(self, reference: str) -> dict[str, Any] | None:
        response, _ = await self._call(
            "GET", f"/transactions/reference/{reference}", retry=_Retry.IDEMPOTENT
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise error_from_response(response)
        return _success_body(response)

    async def _by_references(self, references: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored transactions by reference, read a page of `FILTER_PAGE_MAX` at a time."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(references), FILTER_PAGE_MAX):
            page = list(references[start : start + FILTER_PAGE_MAX])
            body = {
                "filters": [{"field": "reference", "operator": "in", "values": page}],
                "limit": FILTER_PAGE_MAX,
            }
            rows = await self._json("POST", "/transactions/filter", body)
            for row in rows.get("data", []) if isinstance(rows, dict) else rows or []:
                if isinstance(row, dict) and isinstance(row.get("reference"), str):
                    found[row["reference"]] = row
        return found

    async def _post_independent(self, items: list[Command]) -> list[Outcome]:
        """Independent transfers in one non-atomic bulk call, then per-item answers."""
        commands = [c for c in items if isinstance(c, PostTransaction)]
        body = {
            "transactions": [transaction_body(c) for c in commands],
            "atomic": False,
            "inflight": commands[0].inflight,
            "skip_queue": True,
        }
        response, _ = await self._call("POST", "/transactions/bulk", body, retry=_Retry.IDEMPOTENT)
        # The answer is only a hint (the stored transactions are the truth), so one that is
        # not Blnk's JSON is read as saying nothing.
        results = (_json_object(response) or {}).get("results")
        per_item = {
            r.get("reference"): r
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict)
        }
        stored = await self._by_references([c.reference for c in commands])
        outcomes: list[Outcome] = []
        for command in commands:
            record = stored.get(command.reference)
            result = per_item.get(command.reference)
            if record is not None and _matches(record, command):
                outcomes.append(Outcome(201, body=record))
            elif result is not None and result.get("status") == "failed":
                cls = _BY_CODE.get(str(result.get("code")), RemoteRefusedError)
                error = cls(str(result.get("message") or "refused by the remote ledger"))
                outcomes.append(Outcome(error.status, error=error))
            else:  # Blnk did not say: ask it alone (its failure is its own, not its batch's)
                outcomes.extend(await self._guard(self._post_one(command), 1))
        return outcomes

    async def _settle(self, command: CommitInflight | VoidInflight) -> Outcome:
        body: dict[str, Any] = {"skip_queue": command.skip_queue}
        retry = _Retry.IDEMPOTENT
        if isinstance(command, CommitInflight):
            body["status"] = "commit"
            if command.precise_amount is not None:
                body["precise_amount"] = command.precise_amount
                retry = _Retry.UNSENT_ONLY  # a repeated partial commit would commit twice
            elif command.amount is not None and command.amount != 0:
                body["amount"] = float(command.amount)  # Blnk takes major units as a float
                retry = _Retry.UNSENT_ONLY
        else:
            body["status"] = "void"
        path = f"/transactions/inflight/{command.target_id}"
        response, ambiguous = await self._call("PUT", path, body, retry=retry)
        # A queued void or whole commit whose answer was lost: while it waits in Blnk's queue a
        # repeat is refused as "already queued", which says neither whose action waits nor how
        # it ends. Ask again, a bounded number of times, until it has run: then the repeat is
        # refused as done (resolved below from the row it made) or the other action's refusal.
        polls = 0
        while ambiguous and _still_queued(response) and polls < QUEUED_SETTLE_POLLS_MAX:
            polls += 1
            await self._sleep(QUEUED_SETTLE_POLL_S)
            response, _ = await self._call("PUT", path, body, retry=retry)
        if response.status_code < 400:
            return Outcome(response.status_code, body=_success_body(response))
        if ambiguous and _still_queued(response):
            unknown = OutcomeUnknownError(
                "the remote ledger still holds a queued commit or void for this transaction; "
                "read the transaction later for its outcome",
                transaction_id=command.target_id,
            )
            return Outcome(unknown.status, error=unknown)
        error = error_from_response(response)
        if ambiguous:
            settled = await self._settled_by_lost_attempt(command, error)
            if settled is not None:
                return settled
        return Outcome(error.status, error=error)

    async def _settled_by_lost_attempt(
        self, command: CommitInflight | VoidInflight, error: AppError
    ) -> Outcome | None:
        """The answer to a void or whole commit that an attempt whose answer was lost made: a
        repeat is refused as already done, and the child row that attempt made is the answer
        (the newest one of its status: nothing can follow a void or a whole commit). A queued
        command answers as Blnk answers one: the hold, with `queued` and that row's outcome."""
        done, status = (
            (ledger_errors.AlreadyVoidedError, "VOID")
            if isinstance(command, VoidInflight)
            else (ledger_errors.AlreadyCommittedError, "APPLIED")
        )
        if not isinstance(error, done):
            return None
        child = await self._newest_child(command.target_id, status)
        if child is None:
            return None
        if command.skip_queue:
            return Outcome(200, body=child)
        hold = await self._json("GET", f"/transactions/{command.target_id}")
        if not isinstance(hold, dict):
            return None
        outcome = {"status": child.get("status"), "transaction_id": child.get("transaction_id")}
        return Outcome(200, body={**hold, "queued": True, "outcome": outcome})

    async def _newest_child(self, parent_id: str, status: str) -> dict[str, Any] | None:
        """The newest transaction of `status` whose parent is the hold `parent_id`."""
        body = {
            "filters": [
                {"field": "parent_transaction", "operator": "eq", "value": parent_id},
                {"field": "status", "operator": "eq", "value": status},
            ],
            "limit": 1,
            "sort_by": "created_at",
            "sort_order": "desc",
        }
        rows = await self._json("POST", "/transactions/filter", body)
        rows = rows.get("data", []) if isinstance(rows, dict) else rows
        first = rows[0] if isinstance(rows, list) and rows else None
        return first if isinstance(first, dict) else None

    async def _refund(self, command: RefundTransaction) -> Outcome:
        body: dict[str, Any] = {"skip_queue": command.skip_queue, "meta_data": command.meta_data}
        if command.description:
            body["description"] = command.description
        response, ambiguous = await self._call(
            "POST", f"/refund-transaction/{command.original_id}", body, retry=_Retry.IDEMPOTENT
        )
        if response.status_code < 400:
            return Outcome(response.status_code, body=_success_body(response))
        error = error_from_response(response)
        if ambiguous and isinstance(error, ConflictError):
            stored = await self._by_reference(command.original_id + REFUND_SUFFIX)
            if stored is not None:
                return Outcome(201, body=stored)
        return Outcome(error.status, error=error)

    async def _bulk(self, command: PostBulk) -> Outcome:
        if command.atomic and not self.config.native_atomic_bulk:
            return await self.post_with_compensation(
                command.batch_id, list(command.items), reason="atomic bulk"
            )
        body = {
            "transactions": [transaction_body(item) for item in command.items],
            "atomic": command.atomic,
            "inflight": command.inflight,
            "skip_queue": True,
        }
        response, ambiguous = await self._call(
            "POST", "/transactions/bulk", body, retry=_Retry.IDEMPOTENT
        )
        if response.status_code < 400:
            return Outcome(response.status_code, body=_success_body(response))
        if ambiguous:
            # A repeat of a bulk that applied is refused (its references are taken): if every
            # item is stored as sent, the first attempt was the bulk's success.
            stored = await self._by_references([item.reference for item in command.items])
            if all(
                item.reference in stored and _matches(stored[item.reference], item)
                for item in command.items
            ):
                first = stored[command.items[0].reference]
                batch_id = first.get("parent_transaction") or command.batch_id
                status = "inflight" if command.inflight else "applied"
                return Outcome(
                    201,
                    body={
                        "batch_id": batch_id,
                        "status": status,
                        "transaction_count": len(command.items),
                    },
                )
        answer = _json_object(response)
        if answer is None:  # not Blnk's bulk error body: the error its status stands for
            error = error_from_response(response)
            return Outcome(error.status, error=error)
        return Outcome(response.status_code, body=answer)

    # ------------------------------------------------------------ compensation

    async def post_with_compensation(
        self, operation_id: str, legs: list[PostTransaction], *, reason: str
    ) -> Outcome:
        """Post `legs` one by one; if one fails, reverse those that succeeded (newest first),
        record every compensation, and answer the failure in Blnk's bulk error shape."""
        done: list[tuple[PostTransaction, dict[str, Any]]] = []
        for leg in legs:
            (result,) = await self._guard(self._post_one(leg), 1)
            if result.error is None and result.body is not None:
                done.append((leg, result.body))
                continue
            failure = result.error or RemoteRefusedError("the remote ledger refused a leg")
            unknown: list[dict[str, Any]] = []
            if _may_have_applied(failure):
                # Unanswered (every attempt failed or its answer was lost): the leg may have
                # applied all the same. The stored transaction says; if it cannot be read the
                # leg is left for an operator, never reversed blind.
                try:
                    stored = await self._by_reference(leg.reference)
                except AppError as exc:
                    unknown.append(await self._unresolved(operation_id, leg, failure, exc))
                else:
                    if stored is not None and _matches(stored, leg):
                        done.append((leg, stored))
                        continue
            compensated = [
                await self._compensate(operation_id, leg_done, stored, failure)
                for leg_done, stored in reversed(done)
            ]
            compensated += unknown
            detail = {"code": failure.code, "message": failure.public_message}
            body = {
                "error": failure.public_message,
                "batch_id": operation_id,
                "error_detail": detail,
                "failed_reference": leg.reference,
                "compensations": compensated,
            }
            return Outcome(failure.status, body=body)
        status = "inflight" if any(leg.inflight for leg in legs) else "applied"
        return Outcome(
            201, body={"batch_id": operation_id, "status": status, "transaction_count": len(legs)}
        )

    async def _unresolved(
        self, operation_id: str, leg: PostTransaction, failure: AppError, lookup: AppError
    ) -> dict[str, Any]:
        """Record a leg whose outcome could not be learned (so not compensated): an operator
        settles it from the journal's failed rows."""
        reference = COMPENSATION_PREFIX + leg.reference
        logger.error(
            "a leg's outcome is unknown and was not compensated",
            extra={"operation_id": operation_id, "reference": leg.reference},
        )
        if self.journal is not None:
            await self.journal.record(
                operation_id=operation_id,
                original={"reference": leg.reference},
                compensating_reference=reference,
                compensating_transaction_id="",
                reason=f"{failure.code}: {failure.public_message}"[:1024],
                error=f"{OutcomeUnknownError.code}: the leg's outcome is unknown ({lookup.code});"
                " not compensated",
            )
        return {"original_reference": leg.reference, "reference": reference, "status": "unknown"}

    async def _compensate(
        self, operation_id: str, leg: PostTransaction, stored: dict[str, Any], failure: AppError
    ) -> dict[str, Any]:
        reason = f"{failure.code}: {failure.public_message}"[:1024]
        reference = COMPENSATION_PREFIX + leg.reference
        transaction_id = str(stored.get("transaction_id", ""))
        if leg.inflight:
            command: Command = VoidInflight(
                transaction_id, new_id(IdPrefix.TRANSACTION), reference, skip_queue=True
            )
        else:
            command = PostTransaction(
                transaction_id=new_id(IdPrefix.TRANSACTION),
                reference=reference,
                precise_amount=int(stored.get("precise_amount", leg.precise_amount)),
                precision=int(stored.get("precision", leg.precision)),
                currency=leg.currency,
                description=f"Compensation for failed operation {operation_id}",
                source=str(stored.get("destination") or leg.destination),
                destination=str(stored.get("source") or leg.source),
                allow_overdraft=True,
                skip_queue=True,
                meta_data={
                    "compensation": True,
                    "original_transaction": transaction_id,
                    "original_reference": leg.reference,
                    "compensation_reason": reason,
                    "operation_id": operation_id,
                },
            )
        (outcome,) = await self._guard(self._one(command), 1)
        error = None if outcome.error is None else f"{outcome.error.code}: {outcome.error.message}"
        posted_id = str((outcome.body or {}).get("transaction_id", "")) if error is None else ""
        if error is not None:
            logger.error(
                "a compensation failed",
                extra={"operation_id": operation_id, "reference": reference},
            )
        if self.journal is not None:
            await self.journal.record(
                operation_id=operation_id,
                original=stored,
                compensating_reference=reference,
                compensating_transaction_id=posted_id,
                reason=reason,
                error=error,
            )
        return {
            "original_reference": leg.reference,
            "reference": reference,
            "status": "posted" if error is None else "failed",
        }
