"""Transaction hooks: URLs called before and after a transaction, signed like Blnk.

A hook is PRE_TRANSACTION or POST_TRANSACTION, with a timeout (seconds) and a retry count.
Each call POSTs `{transaction_id, hook_type, timestamp, data}` with Blnk's headers:
`X-Blnk-Timestamp` (unix seconds), `X-Blnk-Signature` (lowercase hex HMAC-SHA256, keyed by the
server secret, i.e. the master key, over `"{timestamp}.{body}"`), `X-Hook-ID`, `X-Hook-Type`.
The reply is `{success, message, data?}`; as in Blnk, an empty or non-JSON 2xx reply counts as
success, `null` as a refusal, and a JSON object counts as success only with `success: true`. A
4xx reply is a refusal whatever its body (Blnk reads a JSON body whatever the status); 408, 429
and 5xx are retried; any other status, or a reply past 1 MiB, is no answer.

Unlike Blnk, whose pre-transaction hooks are fire-and-forget, a PRE_TRANSACTION hook here is a
gate: the transaction is recorded only after every active pre hook said yes. A no
(`success: false`, `null`, a 4xx) refuses it (400 TXN_HOOK_REJECTED, with the hook's message); a
hook that gives no answer within its timeout and retries refuses it too (503 HOOK_UNAVAILABLE:
a gate fails closed). POST hooks run after the transaction is durable, in the background, with
bounded concurrency and a bounded backlog; one that cannot be delivered is recorded as a failed
run and logged, not retried later (use webhooks from the outbox for at-least-once delivery).

At shutdown the replica closes the runner (`aclose`) before its HTTP client and database pool:
from then on a new post-hook call is refused (logged at info; post hooks are best effort, and
running one inline would hold a request past the replica's stop), the calls and run stamps
already pending get a bounded time to finish, and whatever is left is cancelled and counted in
one warning (counts only: a hook's URL may carry credentials).

Every run updates the hook's `last_run` and `last_success`. The active hooks are cached in
memory for two seconds, so a transaction with no hooks registered costs no query; a change made
through this replica is seen at once, through another within the cache's lifetime.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, SecretStr, StrictBool

from kit.clock import Clock
from kit.db import Database
from kit.errors import AppError
from kit.http_urls import is_requestable
from kit.ids import IdPrefix, new_id
from kit.json_exact import dumps
from ledger import hook_repository as repository
from ledger.single_flight import SingleFlight
from ledger.surface_errors import (
    HookInvalidError,
    HookNotFoundError,
    HookRejectedError,
    HookUnavailableError,
)
from ledger.wire import timestamp

logger = logging.getLogger(__name__)

HOOK_TIMEOUT_S_DEFAULT: Final = 30  # Blnk's default when none (or <= 0) is given
HOOK_TIMEOUT_S_MAX: Final = 30  # a pre hook holds a transaction request for at most this long
HOOK_RETRY_COUNT_DEFAULT: Final = 3  # Blnk's default when a negative count is given
HOOK_RETRY_COUNT_MAX: Final = 5
HOOKS_MAX: Final = 50  # registered hooks; each pre hook is one call per transaction
HOOK_URL_LENGTH_MAX: Final = 2048
HOOK_NAME_LENGTH_MAX: Final = 255
HOOK_RESPONSE_BYTES_MAX: Final = 1 << 20  # Blnk's maxHookResponseBytes
HOOK_RETRY_BACKOFF_S: Final = 0.2  # doubled per retry
HOOK_RETRY_BACKOFF_MAX_S: Final = 2.0
HOOK_CACHE_TTL_S: Final = 2.0
PRE_HOOKS_BUDGET_S: Final = 45.0  # all pre hooks of one transaction, retries included
POST_HOOK_CONCURRENCY_MAX: Final = 16  # post-hook calls in flight per replica
POST_HOOK_BACKLOG_MAX: Final = 1_000  # post-hook deliveries waiting; more are dropped (logged)
HOOK_RUN_WRITES_MAX: Final = 1_000  # pending last_run writes; more are dropped (logged)
HOOK_CONNECTIONS_MAX: Final = 64  # of the runner's own HTTP client, when none is injected
# After the drain's bound, cancelled calls get this long to unwind (release their connections)
# before the pool they use is closed; a call cannot refuse a cancellation for long.
HOOK_CANCEL_WAIT_S: Final = 1.0
_RETRYABLE_STATUSES: Final = frozenset({408, 429})


class HookType(StrEnum):
    """When a hook runs."""

    PRE_TRANSACTION = "PRE_TRANSACTION"
    POST_TRANSACTION = "POST_TRANSACTION"


class HookIn(BaseModel):
    """POST /hooks and PUT /hooks/{id} (PUT replaces every setting, as Blnk's does)."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    url: str = ""
    type: str = ""
    active: StrictBool = False
    timeout: int = 0
    retry_count: int = 0


@dataclass(frozen=True, slots=True)
class HookRecord:
    """A registered hook."""

    hook_id: str
    name: str
    url: str
    hook_type: HookType
    active: bool
    timeout_s: int
    retry_count: int
    created_at: datetime
    last_run: datetime | None
    last_success: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> HookRecord:
        """Map a `ledger.hooks` row."""
        return cls(
            hook_id=row["hook_id"],
            name=row["name"],
            url=row["url"],
            hook_type=HookType(row["hook_type"]),
            active=row["active"],
            timeout_s=row["timeout_s"],
            retry_count=row["retry_count"],
            created_at=row["created_at"],
            last_run=row["last_run"],
            last_success=row["last_success"],
        )


def hook_json(record: HookRecord) -> dict[str, Any]:
    """A hook as Blnk returns it."""
    return {
        "id": record.hook_id,
        "name": record.name,
        "url": record.url,
        "type": record.hook_type.value,
        "active": record.active,
        "timeout": record.timeout_s,
        "retry_count": record.retry_count,
        "created_at": timestamp(record.created_at),
        "last_run": timestamp(record.last_run),
        "last_success": record.last_success,
    }


def sign(secret: bytes, unix_s: str, body: bytes) -> str:
    """Blnk's signature: lowercase hex HMAC-SHA256 over `"{timestamp}.{body}"`."""
    return hmac.new(secret, unix_s.encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_hook_type(value: str) -> HookType:
    """A hook type from its name."""
    try:
        return HookType(value)
    except ValueError as exc:
        raise HookInvalidError(f"invalid hook type: {value[:40]}") from exc


def _settings(body: HookIn) -> dict[str, Any]:
    url = body.url.strip()
    if not url:
        raise HookInvalidError("hook URL is required")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise HookInvalidError("hook URL is not a valid URL") from exc
    if (
        len(url) > HOOK_URL_LENGTH_MAX
        or parts.scheme not in {"http", "https"}
        or not parts.netloc
        or not is_requestable(url)
    ):
        raise HookInvalidError(
            f"hook URL must be an http(s) URL of at most {HOOK_URL_LENGTH_MAX} characters"
        )
    if len(body.name) > HOOK_NAME_LENGTH_MAX:
        raise HookInvalidError(f"name is longer than {HOOK_NAME_LENGTH_MAX} characters")
    timeout_s = body.timeout if body.timeout > 0 else HOOK_TIMEOUT_S_DEFAULT
    retry_count = body.retry_count if body.retry_count >= 0 else HOOK_RETRY_COUNT_DEFAULT
    if timeout_s > HOOK_TIMEOUT_S_MAX:
        raise HookInvalidError(f"timeout is at most {HOOK_TIMEOUT_S_MAX} seconds")
    if retry_count > HOOK_RETRY_COUNT_MAX:
        raise HookInvalidError(f"retry_count is at most {HOOK_RETRY_COUNT_MAX}")
    return {
        "name": body.name,
        "url": url,
        "hook_type": parse_hook_type(body.type).value,
        "active": body.active,
        "timeout_s": timeout_s,
        "retry_count": retry_count,
    }


# ---------------------------------------------------------------- management (service)


async def create_hook(conn: asyncpg.Connection, body: HookIn, *, now: datetime) -> dict[str, Any]:
    """POST /hooks."""
    settings = _settings(body)
    if await repository.lock_hook_count(conn) >= HOOKS_MAX:
        raise HookInvalidError(f"at most {HOOKS_MAX} hooks may be registered")
    row = await repository.insert_hook(
        conn, hook_id=new_id(IdPrefix.HOOK), created_at=now, **settings
    )
    return hook_json(HookRecord.from_row(row))


async def update_hook(conn: asyncpg.Connection, hook_id: str, body: HookIn) -> dict[str, Any]:
    """PUT /hooks/{id}."""
    settings = _settings(body)
    row = await repository.replace_hook(conn, hook_id, **settings)
    if row is None:
        raise HookNotFoundError(f"hook not found: {hook_id}", hook_id=hook_id)
    return hook_json(HookRecord.from_row(row))


async def get_hook(conn: asyncpg.Connection, hook_id: str) -> dict[str, Any]:
    """GET /hooks/{id}."""
    row = await repository.find_hook(conn, hook_id)
    if row is None:
        raise HookNotFoundError(f"hook not found: {hook_id}", hook_id=hook_id)
    return hook_json(HookRecord.from_row(row))


async def list_hooks(conn: asyncpg.Connection, hook_type: HookType | None) -> list[dict[str, Any]]:
    """GET /hooks (?type=)."""
    rows = await repository.list_hooks(
        conn, None if hook_type is None else hook_type.value, active_only=False, limit=HOOKS_MAX
    )
    return [hook_json(HookRecord.from_row(row)) for row in rows]


async def delete_hook(conn: asyncpg.Connection, hook_id: str) -> None:
    """DELETE /hooks/{id}."""
    if not await repository.delete_hook(conn, hook_id):
        raise HookNotFoundError(f"hook not found: {hook_id}", hook_id=hook_id)


# ---------------------------------------------------------------- invocation


@dataclass(frozen=True, slots=True)
class HookReply:
    """What a hook said: `answered` is False when it gave no usable reply."""

    answered: bool
    success: bool = False
    message: str = ""


_NO_ANSWER: Final = HookReply(answered=False)


class _RetryableError(Exception):
    """One attempt failed in a way worth another try."""


class HookRunner:
    """Calls hooks: pre hooks inline (raising to refuse), post hooks in the background."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        secret: SecretStr | None,
        http: httpx.AsyncClient | None,
        cache_ttl_s: float = HOOK_CACHE_TTL_S,
    ) -> None:
        self._db = db
        self._clock = clock
        # Blnk signs with its server secret (the master key); without one, hooks go unsigned.
        raw_secret = secret.get_secret_value() if secret is not None else ""
        self._secret = raw_secret.encode() if raw_secret else None
        self._http = http
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[HookType, tuple[float, tuple[HookRecord, ...]]] = {}
        self._loads: SingleFlight[HookType, tuple[HookRecord, ...]] = SingleFlight()
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()  # deliveries and run stamps
        self._deliveries: set[asyncio.Task[None]] = set()
        self._post_slots: asyncio.Semaphore | None = None
        self._owns_http = http is None
        self._is_draining = False  # new post-hook calls are refused
        self._is_closed = False  # nothing new starts, run stamps included

    # ------------------------------------------------------------ the active set

    async def active(self, hook_type: HookType) -> tuple[HookRecord, ...]:
        """The active hooks of a type (cached briefly)."""
        cached = self._cache.get(hook_type)
        if cached is not None and self._clock.monotonic() - cached[0] < self._cache_ttl_s:
            return cached[1]
        return await self._loads.run(hook_type, lambda: self._load(hook_type, self._generation))

    async def _load(self, hook_type: HookType, generation: int) -> tuple[HookRecord, ...]:
        started_s = self._clock.monotonic()
        async with self._db.connection() as conn:
            rows = await repository.list_hooks(
                conn, hook_type.value, active_only=True, limit=HOOKS_MAX
            )
        hooks = tuple(HookRecord.from_row(row) for row in rows)
        if generation == self._generation:  # no change here since the read began
            self._cache[hook_type] = (started_s, hooks)
        return hooks

    def invalidate(self) -> None:
        """Forget the cached hooks (they were just changed here); reads in flight are not cached."""
        self._generation += 1
        self._cache.clear()
        self._loads.forget()

    # ------------------------------------------------------------ phases

    async def run_pre(self, hooks: Sequence[HookRecord], transaction_id: str, data: Any) -> None:
        """Ask every pre hook; raise if one refuses or cannot answer."""
        body = self._payload(HookType.PRE_TRANSACTION, transaction_id, data)
        try:
            async with asyncio.timeout(PRE_HOOKS_BUDGET_S):
                replies = await asyncio.gather(*(self.call(hook, body) for hook in hooks))
        except TimeoutError as exc:
            raise HookUnavailableError(transaction_id=transaction_id) from exc
        for hook, reply in zip(hooks, replies, strict=True):
            if reply.answered and not reply.success:
                raise HookRejectedError(
                    f"pre-transaction hook {hook.name or hook.hook_id} refused the transaction: "
                    f"{reply.message[:500]}",
                    hook_id=hook.hook_id,
                    hook_message=reply.message[:500],
                )
        for hook, reply in zip(hooks, replies, strict=True):
            if not reply.answered:
                raise HookUnavailableError(
                    f"pre-transaction hook {hook.name or hook.hook_id} did not answer; retry later",
                    hook_id=hook.hook_id,
                )

    def schedule_post(self, hooks: Sequence[HookRecord], transaction_id: str, data: Any) -> None:
        """Call every post hook in the background (bounded; dropped and logged when full)."""
        if not hooks:
            return
        if self._is_draining:
            logger.info(
                "post-transaction hooks refused: shutting down",
                extra={"transaction_id": transaction_id},
            )
            return
        if len(self._tasks) >= POST_HOOK_BACKLOG_MAX:
            logger.warning(
                "post-transaction hooks dropped: backlog full",
                extra={"transaction_id": transaction_id},
            )
            return
        body = self._payload(HookType.POST_TRANSACTION, transaction_id, data)
        delivery = self._spawn(self._deliver_post(hooks, body))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver_post(self, hooks: Sequence[HookRecord], body: bytes) -> None:
        if self._post_slots is None:
            self._post_slots = asyncio.Semaphore(POST_HOOK_CONCURRENCY_MAX)
        async with self._post_slots:
            await asyncio.gather(*(self.call(hook, body) for hook in hooks))

    def _payload(self, hook_type: HookType, transaction_id: str, data: Any) -> bytes:
        return dumps(
            {
                "transaction_id": transaction_id,
                "hook_type": hook_type.value,
                "timestamp": timestamp(self._clock.now()),
                "data": data,
            }
        )

    # ------------------------------------------------------------ one hook

    async def call(self, hook: HookRecord, body: bytes) -> HookReply:
        """Call one hook with its timeout and retries; record the run."""
        reply = _NO_ANSWER
        for attempt in range(hook.retry_count + 1):
            if attempt:
                await asyncio.sleep(
                    min(HOOK_RETRY_BACKOFF_S * 2 ** (attempt - 1), HOOK_RETRY_BACKOFF_MAX_S)
                )
            try:
                async with asyncio.timeout(hook.timeout_s):
                    reply = await self._attempt(hook, body)
                break
            except (_RetryableError, httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
                logger.info(
                    "hook call failed",
                    extra={
                        "hook_id": hook.hook_id,
                        "attempt": attempt,
                        "error": type(exc).__name__,
                    },
                )
                reply = _NO_ANSWER
        self._record_run(hook.hook_id, success=reply.answered and reply.success)
        return reply

    async def _attempt(self, hook: HookRecord, body: bytes) -> HookReply:
        unix_s = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Blnk-Timestamp": unix_s,
            "X-Hook-ID": hook.hook_id,
            "X-Hook-Type": hook.hook_type.value,
        }
        if self._secret is not None:
            headers["X-Blnk-Signature"] = sign(self._secret, unix_s, body)
        async with self._client().stream(
            "POST", hook.url, content=body, headers=headers, timeout=float(hook.timeout_s)
        ) as response:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > HOOK_RESPONSE_BYTES_MAX:
                    return _NO_ANSWER
        if response.status_code >= 500 or response.status_code in _RETRYABLE_STATUSES:
            raise _RetryableError(f"status {response.status_code}")
        if 400 <= response.status_code < 500:
            return _read_refusal(bytes(received), response.status_code)
        if not 200 <= response.status_code < 300:
            return _NO_ANSWER
        return _read_reply(bytes(received))

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(float(HOOK_TIMEOUT_S_MAX)),
                limits=httpx.Limits(max_connections=HOOK_CONNECTIONS_MAX),
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    # ------------------------------------------------------------ bookkeeping

    def _record_run(self, hook_id: str, *, success: bool) -> None:
        if self._is_closed:
            logger.info("hook run not recorded: shutting down", extra={"hook_id": hook_id})
            return
        if len(self._tasks) >= POST_HOOK_BACKLOG_MAX + HOOK_RUN_WRITES_MAX:
            logger.warning(
                "hook run not recorded: too many writes pending", extra={"hook_id": hook_id}
            )
            return
        self._spawn(self._write_run(hook_id, self._clock.now(), success=success))

    async def _write_run(self, hook_id: str, at: datetime, *, success: bool) -> None:
        try:
            async with self._db.connection() as conn:
                await repository.record_run(conn, hook_id, at, success=success)
        except (AppError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A lost run stamp must not fail a transaction; the next run writes a new one.
            logger.warning("hook run not recorded", extra={"hook_id": hook_id}, exc_info=True)

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        """Background post-hook deliveries and run stamps not finished yet."""
        return len(self._tasks)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the background calls and writes pending now; for tests (a
        shutdown uses `aclose`)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def aclose(self, *, timeout_s: float, cancel_wait_s: float = HOOK_CANCEL_WAIT_S) -> int:
        """Stop taking post-hook calls, let the pending ones finish, cancel what is left.

        Call it before closing the HTTP client and the database pool the calls use. Calling it
        again is harmless.

        Args:
            timeout_s: how long the pending deliveries and their run stamps may take, in all.
            cancel_wait_s: how long the cancelled ones may take to unwind.

        Returns:
            How many background calls and run stamps were cancelled (0 when all finished).
        """
        self._is_draining = True
        try:
            async with asyncio.timeout(timeout_s):
                # A delivery that finishes spawns its run stamp: wait again for what it added.
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            pass
        self._is_closed = True
        left = {task for task in self._tasks if not task.done()}
        deliveries = len(left & self._deliveries)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=cancel_wait_s)
            logger.warning(
                "hook calls abandoned at shutdown",
                extra={
                    "deliveries_abandoned": deliveries,
                    "run_stamps_abandoned": len(left) - deliveries,
                },
            )
        if self._owns_http and self._http is not None:
            await self._http.aclose()
        return len(left)


def _read_reply(body: bytes) -> HookReply:
    """Blnk's reading of a 2xx reply."""
    if not body.strip():
        return HookReply(answered=True, success=True)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return HookReply(answered=True, success=True, message="non-JSON reply")
    if parsed is None:  # Go decodes `null` to a reply whose `success` is false
        return HookReply(answered=True, success=False)
    if not isinstance(parsed, dict):
        return HookReply(answered=True, success=True)
    return HookReply(
        answered=True,
        success=parsed.get("success") is True,
        message=str(parsed.get("message") or ""),
    )


def _read_refusal(body: bytes, status: int) -> HookReply:
    """A 4xx reply: the hook answered no (whatever its body says), with the `message` of a JSON
    object body, else its status. Asking again would get the same answer."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return HookReply(answered=True, success=False, message=str(message or f"HTTP {status}"))
