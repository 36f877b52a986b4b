"""An exact sliding-log rate limiter over several windows at once. Pure; the clock is injected.

A policy is a named set of windows, each "at most `limit` hits in any `window_s` seconds" (for
example 5 per 15 minutes and 20 per day). For every key the limiter keeps the times of the hits
it admitted, newest last. A hit is admitted only when, for every window, the hits inside the
window plus this one stay within its limit; an admitted hit is recorded, a refused one is not
(a client that keeps knocking while refused does not push its own reset further away).

Memory is bounded twice: a key's log never holds more entries than the largest limit of its
policy (an older entry can no longer decide anything), and the limiter holds at most
`keys_max` keys. When it is full, keys whose logs have fully expired are dropped first, then the
least recently used key. Dropping a key forgets its hits, so the bound must be sized above the
number of keys active within the longest window; the default is far above one shard's share.

The decision carries what the IETF `RateLimit` / `RateLimit-Policy` headers need
(draft-ietf-httpapi-ratelimit-headers): per window its limit, what remains and when it resets,
and for a refusal `retry_after_s`. `RateLimitDecision.headers()` renders them.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final

from kit.clock import Clock

WINDOWS_MAX: Final = 8  # a policy with more windows than this is a configuration mistake
LIMIT_MAX: Final = 100_000  # a log entry per admitted hit: this bounds one key's memory
WINDOW_S_MAX: Final = 7 * 24 * 3600.0  # a week; longer windows belong in a database
KEYS_MAX_DEFAULT: Final = 200_000  # keys one limiter tracks at once
KEY_LENGTH_MAX: Final = 256  # keys are built from ids and hashes
COST_MAX: Final = 1_000  # one call may consume several units (a batch), never unboundedly many
POLICY_NAME_LENGTH_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class Window:
    """At most `limit` hits in any `window_s` seconds."""

    limit: int
    window_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= LIMIT_MAX:
            raise ValueError(f"a window's limit must be between 1 and {LIMIT_MAX}")
        if not 0 < self.window_s <= WINDOW_S_MAX:
            raise ValueError(f"a window must last between 0 and {WINDOW_S_MAX:g} seconds")


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """A named set of windows that all apply to one key."""

    name: str
    windows: tuple[Window, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.windows) <= WINDOWS_MAX:
            raise ValueError(f"a policy has between 1 and {WINDOWS_MAX} windows")
        if not self.name or len(self.name) > POLICY_NAME_LENGTH_MAX or '"' in self.name:
            raise ValueError("a policy name is 1-64 characters without quotes")

    @property
    def log_size_max(self) -> int:
        """The most entries a key's log needs: the largest limit."""
        return max(window.limit for window in self.windows)

    @property
    def horizon_s(self) -> float:
        """The longest window; older entries never matter."""
        return max(window.window_s for window in self.windows)


@dataclass(frozen=True, slots=True)
class WindowState:
    """One window after a decision."""

    limit: int
    window_s: float
    remaining: int
    reset_s: float  # until one more unit frees up (0 when the window is empty)


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """Whether a hit was admitted, and the state of every window of the policy."""

    policy: str
    is_allowed: bool
    windows: tuple[WindowState, ...]
    retry_after_s: float  # 0 when allowed; otherwise when the same hit would be admitted

    @property
    def allowed(self) -> bool:
        """Alias of `is_allowed` for callers that read the decision as a record."""
        return self.is_allowed

    @property
    def tightest(self) -> WindowState:
        """The window with the fewest remaining units (the one headers report)."""
        return min(self.windows, key=lambda w: (w.remaining, -w.reset_s))

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy`, `RateLimit` and, when refused, `Retry-After`."""
        policy = ", ".join(
            f'"{self.policy}-{index}";q={w.limit};w={math.ceil(w.window_s)}'
            for index, w in enumerate(self.windows)
        )
        index = self.windows.index(self.tightest)
        tight = self.tightest
        reset = math.ceil(tight.reset_s)
        headers = {
            "RateLimit-Policy": policy,
            "RateLimit": f'"{self.policy}-{index}";r={tight.remaining};t={reset}',
        }
        if not self.is_allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class SlidingLogLimiter:
    """Exact multi-window limits per key, in memory; not thread-safe (one event loop owns it)."""

    def __init__(self, clock: Clock, *, keys_max: int = KEYS_MAX_DEFAULT) -> None:
        if keys_max < 1:
            raise ValueError("keys_max must be at least 1")
        self._clock = clock
        self._keys_max = keys_max
        # key -> (log of admitted hit times, the policy's horizon in seconds)
        self._logs: OrderedDict[str, tuple[deque[float], float]] = OrderedDict()

    @property
    def key_count(self) -> int:
        """Keys currently tracked."""
        return len(self._logs)

    def hit(self, key: str, policy: RateLimitPolicy, *, cost: int = 1) -> RateLimitDecision:
        """Admit and record `cost` units for `key` if every window allows it."""
        return self._decide(key, policy, cost=cost, is_recorded=True)

    def peek(self, key: str, policy: RateLimitPolicy) -> RateLimitDecision:
        """The decision one more unit would get, recording nothing."""
        return self._decide(key, policy, cost=1, is_recorded=False)

    def reset(self, key: str) -> None:
        """Forget every hit of `key`."""
        self._logs.pop(key, None)

    def _decide(
        self, key: str, policy: RateLimitPolicy, *, cost: int, is_recorded: bool
    ) -> RateLimitDecision:
        if not key or len(key) > KEY_LENGTH_MAX:
            raise ValueError(f"a rate-limit key is 1-{KEY_LENGTH_MAX} characters")
        if not 1 <= cost <= min(COST_MAX, policy.log_size_max):
            raise ValueError("cost must be at least 1 and within the policy's largest limit")
        now = self._clock.monotonic()
        found = self._logs.get(key)
        log = deque(maxlen=policy.log_size_max) if found is None else found[0]
        if log.maxlen != policy.log_size_max:
            log = deque(log, maxlen=policy.log_size_max)  # the key changed policy
        horizon = now - policy.horizon_s
        while log and log[0] <= horizon:
            log.popleft()
        entries = list(log)
        blocking = [_wait_s(entries, w, now, cost) for w in policy.windows]
        is_allowed = all(wait == 0.0 for wait in blocking)
        if is_allowed and is_recorded:
            log.extend([now] * cost)
            entries = list(log)
        states = tuple(_state(entries, w, now) for w in policy.windows)
        if log:
            self._remember(key, log, policy.horizon_s)
        else:
            self._logs.pop(key, None)
        return RateLimitDecision(
            policy=policy.name,
            is_allowed=is_allowed,
            windows=states,
            retry_after_s=0.0 if is_allowed else max(blocking),
        )

    def _remember(self, key: str, log: deque[float], horizon_s: float) -> None:
        self._logs[key] = (log, horizon_s)
        self._logs.move_to_end(key)
        if len(self._logs) <= self._keys_max:
            return
        now = self._clock.monotonic()
        # Expired logs first (they decide nothing), then the least recently used key.
        stale = [k for k, (v, horizon) in self._logs.items() if not v or v[-1] <= now - horizon]
        for name in stale:
            del self._logs[name]
        while len(self._logs) > self._keys_max:
            self._logs.popitem(last=False)


def _in_window(entries: list[float], window: Window, now: float) -> list[float]:
    start = now - window.window_s
    return [t for t in entries if t > start]


def _wait_s(entries: list[float], window: Window, now: float, cost: int) -> float:
    """Seconds until `cost` more units fit in `window` (0 when they fit now)."""
    if cost > window.limit:
        return window.window_s  # never fits; report the window so callers back off
    inside = _in_window(entries, window, now)
    excess = len(inside) + cost - window.limit
    if excess <= 0:
        return 0.0
    # The excess-th oldest entry must leave the window first.
    return max(inside[excess - 1] + window.window_s - now, 0.0)


def _state(entries: list[float], window: Window, now: float) -> WindowState:
    inside = _in_window(entries, window, now)
    reset_s = inside[0] + window.window_s - now if inside else 0.0
    return WindowState(
        limit=window.limit,
        window_s=window.window_s,
        remaining=max(window.limit - len(inside), 0),
        reset_s=max(reset_s, 0.0),
    )
