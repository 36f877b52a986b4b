"""`UserShard`: per-user (and per-IP) rate limits and login lockouts, serialised per key.

A fixed number of named actors, `user-shard-000` ... (`actors.routing.actor_name("user", i)`,
namespace `actors.routing.NAMESPACE`), each hosting many per-key "virtual actors": every
operation on one account runs through that account's `KeyedMailbox` lane, so 20 parallel login
attempts on one account are counted strictly one after another, while other accounts proceed
concurrently. Keys are routed by `shard_for(key, settings.user_shard_count)` in the caller
(`actors/user_client.py`, which also coalesces calls per shard).

Operations (one `run_batch` call carries many; it answers one result per item, in order, and an
item's result may be the exception that item raised):

* `RateCheck(key, policy, cost)` -> `kit.ratelimit.RateLimitDecision`: an exact sliding-log,
  multi-window limit, held in the actor's memory (a restart forgets recent hits; limits are a
  throttle, not a record).
* `LoginAdmit(account)` -> `auth.lockout.Admission`, `LoginReport(account, ticket,
  is_success)` -> `auth.lockout.AttemptResult`: lockout accounting (`auth/lockout.py`). Each
  change is written through to Redis before it is answered, so a lock survives a restart of
  the actor, of its process, or of the cluster; the actor's memory only caches it.

Actor options, all explicit: detached (the shard outlives the replica that created it),
get-or-create by name, restarted without limit (`max_restarts=-1`) but calls never retried
(`max_task_retries=0`: a lockout report must not be counted twice; the caller sees a 503),
`max_concurrency` bounded, a small CPU share. The actor reads its settings (Redis URL, key
prefix, lockout policy) from the environment of the Ray cluster, like every replica.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Final

import ray
import redis.asyncio as aioredis

from actors.mailbox import KeyedMailbox
from actors.routing import NAMESPACE, actor_name
from auth.lockout import (
    STATE_CACHE_MAX,
    AccountLockouts,
    Admission,
    AttemptResult,
    LockoutPolicy,
    RedisLockoutStore,
)
from kit.clock import Clock, SystemClock
from kit.errors import ConfigurationError, InvariantError
from kit.heap import freeze_startup_heap
from kit.ratelimit import RateLimitDecision, RateLimitPolicy, SlidingLogLimiter
from kit.redis_client import KeySpace, create_redis
from kit.settings import Settings

logger = logging.getLogger(__name__)

SHARD_KIND: Final = "user"
MAX_CONCURRENCY: Final = 1_000  # concurrent batches one shard interleaves (async actor)
NUM_CPUS: Final = 0.1  # mostly waiting on Redis; a small share keeps 2-core machines free
BATCH_SIZE_MAX: Final = 256  # operations one call may carry
RATE_KEYS_MAX: Final = 200_000  # rate-limit keys one shard tracks


@dataclass(frozen=True, slots=True)
class RateCheck:
    """Count `cost` hits of `key` against `policy`."""

    key: str
    policy: RateLimitPolicy
    cost: int = 1

    @property
    def route_key(self) -> str:
        """The key that picks the shard."""
        return self.key


@dataclass(frozen=True, slots=True)
class LoginAdmit:
    """Admit or refuse one password guess for `account`."""

    account: str

    @property
    def route_key(self) -> str:
        """The key that picks the shard."""
        return self.account


@dataclass(frozen=True, slots=True)
class LoginReport:
    """Report an admitted guess's outcome."""

    account: str
    ticket: str
    is_success: bool

    @property
    def route_key(self) -> str:
        """The key that picks the shard."""
        return self.account


@dataclass(frozen=True, slots=True)
class RatePeek:
    """The state of `key` under `policy`, counting nothing (the admin view)."""

    key: str
    policy: RateLimitPolicy

    @property
    def route_key(self) -> str:
        """The key that picks the shard."""
        return self.key


@dataclass(frozen=True, slots=True)
class LockoutReset:
    """Clear an account's failures and lock (an administrator's unlock)."""

    account: str

    @property
    def route_key(self) -> str:
        """The key that picks the shard."""
        return self.account


UserOp = RateCheck | LoginAdmit | LoginReport | RatePeek | LockoutReset
UserResult = RateLimitDecision | Admission | AttemptResult | None


class UserShardCore:
    """The shard's behaviour in plain Python (the actor is a thin shell around it)."""

    def __init__(
        self, client: aioredis.Redis, keys: KeySpace, policy: LockoutPolicy, clock: Clock
    ) -> None:
        self._mailbox = KeyedMailbox()
        self._limiter = SlidingLogLimiter(clock, keys_max=RATE_KEYS_MAX)
        self._lockouts = AccountLockouts(
            RedisLockoutStore(client, keys, policy), policy, clock, cache_max=STATE_CACHE_MAX
        )

    async def run_batch(self, ops: list[UserOp]) -> list[UserResult | BaseException]:
        """Run every operation (per key in order, keys concurrently); one result per item."""
        if len(ops) > BATCH_SIZE_MAX:
            error = InvariantError("a user-shard batch is larger than allowed", size=len(ops))
            return [error] * len(ops)
        return list(await asyncio.gather(*(self._one(op) for op in ops)))

    async def _one(self, op: UserOp) -> UserResult | BaseException:
        try:
            if isinstance(op, RateCheck):
                # Synchronous: the event loop already serialises it, no mailbox needed.
                return self._limiter.hit(op.key, op.policy, cost=op.cost)
            if isinstance(op, RatePeek):
                return self._limiter.peek(op.key, op.policy)
            if isinstance(op, LockoutReset):
                reset = op
                await self._mailbox.run(reset.account, lambda: self._lockouts.reset(reset.account))
                return None
            if isinstance(op, LoginAdmit):
                account = op.account
                return await self._mailbox.run(account, lambda: self._lockouts.admit(account))
            report = op
            return await self._mailbox.run(
                report.account,
                lambda: self._lockouts.report(
                    report.account, ticket=report.ticket, is_success=report.is_success
                ),
            )
        except Exception as exc:  # noqa: BLE001 - an item's failure is its answer, not the batch's
            return exc

    def forget_cache(self) -> None:
        """Drop cached lockout states (they reload from Redis)."""
        self._lockouts.forget_cache()


class UserShard:
    """The Ray actor: a `UserShardCore` over the cluster's Redis."""

    def __init__(self, index: int) -> None:
        settings = Settings()
        if settings.redis_url is None:
            raise ConfigurationError("REDIS_URL must be set in the cluster's environment")
        self.index = index
        self.instance = uuid.uuid4().hex  # changes when Ray restarts the actor
        self._redis = create_redis(settings, settings.redis_url.get_secret_value())
        self._core = UserShardCore(
            self._redis,
            KeySpace(settings.redis_key_prefix),
            LockoutPolicy.from_settings(settings),
            SystemClock(),
        )
        freeze_startup_heap()  # the actor's process holds Ray and Redis: never rescan them

    async def run_batch(self, ops: list[UserOp]) -> list[UserResult | BaseException]:
        """Run a batch of operations (see the module docstring)."""
        return await self._core.run_batch(ops)

    async def ping(self) -> int:
        """The shard's index (a liveness probe)."""
        return self.index

    async def instance_id(self) -> str:
        """An id of this incarnation (a restart changes it)."""
        return self.instance

    async def forget_cache(self) -> None:
        """Drop cached lockout states (tests prove the write-through with it)."""
        self._core.forget_cache()


UserShardActor: Any = ray.remote(UserShard)


def get_or_create_shard(index: int) -> Any:
    """The handle of shard `index`, creating the detached actor if it does not exist.

    Blocking (it asks the cluster's control store); call it from a thread in async code.
    """
    return UserShardActor.options(
        name=actor_name(SHARD_KIND, index),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=NUM_CPUS,
    ).remote(index)
