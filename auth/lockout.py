"""Login lockout and throttling: the `LoginGuard` protocol, its rules, and an in-process guard.

Rules (the seed's `account_lockout`, Keycloak's algorithm with a strict bound):

* An account key is the SHA-256 of the normalised email, whether or not such a user exists,
  so an unknown address is throttled and locked exactly like a real one.
* A password guess must first be *admitted*. Admission reserves one of the `threshold` slots
  (failures so far plus guesses in flight), so however many requests arrive at once, at most
  `threshold` guesses are ever checked before the lock: 20 parallel wrong passwords produce
  exactly 5 failures and one lock. A reservation that is never reported lapses after
  `ATTEMPT_LEASE_S`.
* Progressive delays: after the n-th failure the next guess waits `delays_s[n-1]` seconds.
* The `threshold`-th failure within `window_s` locks the account for `duration_s`. Failures
  while locked are not counted and do not extend the lock. Success clears everything.
* The state is written through to Redis on every change (`RedisLockoutStore`), so a lock
  survives a restart of the actor, of the process, or of the whole cluster.

Serialisation per account is the caller's job: the `UserShard` actors run every operation of
one account through its virtual actor's mailbox; `InProcessLoginGuard` (tests, a single
process) uses a lock per account.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Final, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis

from kit.clock import Clock
from kit.errors import DependencyError
from kit.ratelimit import RateLimitDecision, RateLimitPolicy, SlidingLogLimiter
from kit.redis_client import KeySpace, translated
from kit.settings import Settings

T = TypeVar("T")
ATTEMPT_LEASE_S: Final = 30.0  # a guess not reported within this is forgotten
DELAYS_S: Final = (0.0, 1.0, 2.0, 4.0)  # after failure 1, 2, 3, 4 (then the lock)
STATE_CACHE_MAX: Final = 50_000  # accounts whose state an actor keeps in memory
KEYS_LOCKED_MAX: Final = 100_000  # accounts an in-process guard serialises at once


class GuardOverloadedError(DependencyError):
    """Too many accounts are being serialised at once in this process."""

    code: ClassVar[str] = "AUTH_GUARD_OVERLOADED"
    retry_after_s: ClassVar[int] = 1


def account_key(email: str) -> str:
    """The lockout and rate-limit key of an email (whether or not the user exists)."""
    return "acct-" + hashlib.sha256(email.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Thresholds and durations."""

    threshold: int = 5
    window_s: float = 900.0
    duration_s: float = 1800.0
    delays_s: tuple[float, ...] = DELAYS_S
    lease_s: float = ATTEMPT_LEASE_S

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        """The policy configured for this process."""
        return cls(
            threshold=settings.auth_lockout_threshold,
            window_s=settings.auth_lockout_window_s,
            duration_s=settings.auth_lockout_duration_s,
        )

    @property
    def ttl_s(self) -> int:
        """How long a state matters in Redis."""
        return int(max(self.window_s, self.duration_s) + self.lease_s) + 1


@dataclass(frozen=True, slots=True)
class LockoutState:
    """One account's counters; times are Unix seconds."""

    failures: int = 0
    first_failure_at: float = 0.0
    last_failure_at: float = 0.0
    locked_until: float = 0.0
    pending: tuple[tuple[str, float], ...] = ()  # (ticket, lease expiry)

    def to_json(self) -> bytes:
        """The Redis value."""
        return orjson.dumps(
            {
                "failures": self.failures,
                "first": self.first_failure_at,
                "last": self.last_failure_at,
                "locked_until": self.locked_until,
                "pending": [list(p) for p in self.pending],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> LockoutState:
        """Parse a Redis value."""
        data = orjson.loads(raw)
        return cls(
            failures=int(data["failures"]),
            first_failure_at=float(data["first"]),
            last_failure_at=float(data["last"]),
            locked_until=float(data["locked_until"]),
            pending=tuple((str(t), float(e)) for t, e in data["pending"]),
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a password guess may be checked now."""

    is_admitted: bool
    ticket: str | None = None
    is_locked: bool = False
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The account after a reported guess."""

    failures: int
    is_locked: bool
    is_newly_locked: bool = False


def _current(state: LockoutState, policy: LockoutPolicy, now: float) -> LockoutState:
    pending = tuple(p for p in state.pending if p[1] > now)
    if state.locked_until and state.locked_until <= now:
        return LockoutState(pending=pending)  # the lock is over: a clean slate
    if state.failures and not state.locked_until and now - state.first_failure_at > policy.window_s:
        return LockoutState(pending=pending)  # the failures left the window
    return replace(state, pending=pending)


def admit(
    state: LockoutState, policy: LockoutPolicy, now: float, ticket: str
) -> tuple[LockoutState, Admission]:
    """Reserve a guess if the account is neither locked, nor waiting, nor full."""
    state = _current(state, policy, now)
    if state.locked_until > now:
        return state, Admission(False, is_locked=True, retry_after_s=state.locked_until - now)
    if state.failures:
        delay = policy.delays_s[min(state.failures, len(policy.delays_s)) - 1]
        wait_s = state.last_failure_at + delay - now
        if wait_s > 0:
            return state, Admission(False, retry_after_s=wait_s)
    if state.failures + len(state.pending) >= policy.threshold:
        soonest = min(e for _, e in state.pending) - now if state.pending else policy.lease_s
        return state, Admission(False, retry_after_s=max(soonest, 0.0))
    state = replace(state, pending=(*state.pending, (ticket, now + policy.lease_s)))
    return state, Admission(True, ticket=ticket)


def report(
    state: LockoutState, policy: LockoutPolicy, now: float, ticket: str, *, is_success: bool
) -> tuple[LockoutState, AttemptResult]:
    """Record the outcome of an admitted guess."""
    state = _current(state, policy, now)
    pending = tuple(p for p in state.pending if p[0] != ticket)
    if is_success:
        return LockoutState(pending=pending), AttemptResult(failures=0, is_locked=False)
    if state.locked_until > now:  # failures while locked neither count nor extend the lock
        locked = replace(state, pending=pending)
        return locked, AttemptResult(failures=state.failures, is_locked=True)
    failures = state.failures + 1
    first = state.first_failure_at if state.failures else now
    locked_until = now + policy.duration_s if failures >= policy.threshold else 0.0
    new_state = LockoutState(failures, first, now, locked_until, pending)
    return new_state, AttemptResult(
        failures, bool(locked_until), is_newly_locked=bool(locked_until)
    )


class LockoutStore(Protocol):
    """Where lockout states persist."""

    async def load(self, account: str) -> LockoutState:
        """The stored state (a clean one when none)."""
        ...

    async def save(self, account: str, state: LockoutState) -> None:
        """Persist the state."""
        ...


class RedisLockoutStore:
    """Lockout states in Redis under `lockout:<account>`, expiring when they stop mattering."""

    def __init__(self, client: aioredis.Redis, keys: KeySpace, policy: LockoutPolicy) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_s = policy.ttl_s

    async def load(self, account: str) -> LockoutState:
        """The stored state."""
        async with translated():
            raw = await self._redis.get(self._keys.key("lockout", account))
        return LockoutState() if raw is None else LockoutState.from_json(raw)

    async def save(self, account: str, state: LockoutState) -> None:
        """Write through (or delete a clean state)."""
        key = self._keys.key("lockout", account)
        async with translated():
            if state == LockoutState():
                await self._redis.delete(key)
            else:
                await self._redis.set(key, state.to_json(), ex=self._ttl_s)


class AccountLockouts:
    """Applies the rules to stored states; callers serialise per account.

    With `cache_max` > 0 states are kept in memory between operations (valid only for the single
    writer of an account, a UserShard); every change is still written through before it is
    answered.
    """

    def __init__(
        self, store: LockoutStore, policy: LockoutPolicy, clock: Clock, *, cache_max: int = 0
    ) -> None:
        self._store = store
        self.policy = policy
        self._clock = clock
        self._cache: OrderedDict[str, LockoutState] = OrderedDict()
        self._cache_max = cache_max

    async def _load(self, account: str) -> LockoutState:
        cached = self._cache.get(account)
        if cached is not None:
            self._cache.move_to_end(account)
            return cached
        return await self._store.load(account)

    async def _save(self, account: str, before: LockoutState, after: LockoutState) -> None:
        if after != before:
            await self._store.save(account, after)
        if self._cache_max:
            self._cache[account] = after
            self._cache.move_to_end(account)
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)

    async def admit(self, account: str) -> Admission:
        """Admit or refuse one guess."""
        before = await self._load(account)
        now = self._clock.now().timestamp()
        after, admission = admit(before, self.policy, now, secrets.token_hex(8))
        await self._save(account, before, after)
        return admission

    async def report(self, account: str, *, ticket: str, is_success: bool) -> AttemptResult:
        """Record an admitted guess's outcome."""
        before = await self._load(account)
        now = self._clock.now().timestamp()
        after, result = report(before, self.policy, now, ticket, is_success=is_success)
        await self._save(account, before, after)
        return result

    async def reset(self, account: str) -> None:
        """Clear an account's failures and lock (an administrator's unlock)."""
        before = await self._load(account)
        await self._save(account, before, LockoutState())

    def forget_cache(self) -> None:
        """Drop the in-memory states (they are reloaded from the store)."""
        self._cache.clear()


class LoginGuard(Protocol):
    """Per-account serialised lockout accounting and rate limits (the UserShard's service)."""

    async def admit_login(self, account: str) -> Admission:
        """Admit or refuse one password guess for `account`."""
        ...

    async def report_login(self, account: str, *, ticket: str, is_success: bool) -> AttemptResult:
        """Report an admitted guess's outcome."""
        ...

    async def check_rate(self, key: str, policy: RateLimitPolicy) -> RateLimitDecision:
        """Count one hit of `key` against `policy`."""
        ...

    async def reset_lockout(self, account: str) -> None:
        """Clear an account's failures and lock."""
        ...


class InProcessLoginGuard:
    """A `LoginGuard` for one process: a lock per account, states in Redis, limits in memory.

    Correct only while one process serves every request of an account (tests, a single
    replica); a deployment injects the UserShard-backed guard instead.
    """

    def __init__(self, lockouts: AccountLockouts, limiter: SlidingLogLimiter) -> None:
        self._lockouts = lockouts
        self._limiter = limiter
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def _serialised(self, account: str, operation: Callable[[], Awaitable[T]]) -> T:
        lock, users = self._locks.get(account, (asyncio.Lock(), 0))
        if users == 0 and len(self._locks) >= KEYS_LOCKED_MAX:
            raise GuardOverloadedError("too many accounts are signing in at once")
        self._locks[account] = (lock, users + 1)
        try:
            async with lock:
                return await operation()
        finally:
            lock, users = self._locks[account]
            if users == 1:
                del self._locks[account]
            else:
                self._locks[account] = (lock, users - 1)

    async def admit_login(self, account: str) -> Admission:
        """Admit or refuse one guess."""
        return await self._serialised(account, lambda: self._lockouts.admit(account))

    async def report_login(self, account: str, *, ticket: str, is_success: bool) -> AttemptResult:
        """Report a guess."""
        return await self._serialised(
            account,
            lambda: self._lockouts.report(account, ticket=ticket, is_success=is_success),
        )

    async def check_rate(self, key: str, policy: RateLimitPolicy) -> RateLimitDecision:
        """Count a hit."""
        return self._limiter.hit(key, policy)

    async def reset_lockout(self, account: str) -> None:
        """Clear an account's failures and lock."""
        await self._serialised(account, lambda: self._lockouts.reset(account))
