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
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from kit.clock import Clock

WINDOWS_MAX: Final = 8  # a policy with more windows than this is a configuration mistake
LIMIT_MAX: Final = 100_000  # a log entry per admitted hit: this bounds one key's memory
WINDOW_S_MAX: Final = 7 * 24 * 3600.0  # a week; longer windows belong in a database
KEYS_MAX_DEFAULT: Final = 200_000  # keys one limiter tracks at once
KEY_LENGTH_MAX: Final = 256  # keys are built from ids and hashes
COST_MAX: Final = 1_000  # one call may consume several units (a batch), never unboundedly many
POLICY_NAME_LENGTH_MAX: Final = 64
COMPACT_AFTER: Final = 1_024  # expired entries a log keeps before it is compacted


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
    # Derived once (every decision reads them): the most entries a key's log needs (the
    # largest limit), the longest window (older entries never matter) and the largest cost.
    log_size_max: int = field(init=False, compare=False, repr=False)
    horizon_s: float = field(init=False, compare=False, repr=False)
    cost_max: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.windows) <= WINDOWS_MAX:
            raise ValueError(f"a policy has between 1 and {WINDOWS_MAX} windows")
        if not self.name or len(self.name) > POLICY_NAME_LENGTH_MAX or '"' in self.name:
            raise ValueError("a policy name is 1-64 characters without quotes")
        object.__setattr__(self, "log_size_max", max(w.limit for w in self.windows))
        object.__setattr__(self, "horizon_s", max(w.window_s for w in self.windows))
        object.__setattr__(self, "cost_max", min(COST_MAX, self.log_size_max))


# A decision and its window states are built for every hit: immutable named tuples, which cost
# a third of a frozen dataclass to build.


class WindowState(NamedTuple):
    """One window after a decision."""

    limit: int
    window_s: float
    remaining: int
    reset_s: float  # until one more unit frees up (0 when the window is empty)


class RateLimitDecision(NamedTuple):
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


# Builds a named tuple from a tuple of its fields without the Python-level `__new__` frame.
_new_named_tuple: Final = tuple.__new__


class _Log:
    """One key's admitted hit times, oldest first, in a list with a moving head: counting the
    hits inside a window is a binary search, so a decision costs O(log n) however large the
    limit (the times come from a monotonic clock, so the list stays sorted)."""

    __slots__ = ("head", "horizon_s", "size_max", "times")

    def __init__(self, size_max: int, horizon_s: float) -> None:
        self.times: list[float] = []
        self.head = 0  # times[:head] have expired
        self.size_max = size_max
        self.horizon_s = horizon_s

    def __len__(self) -> int:
        return len(self.times) - self.head

    @property
    def newest(self) -> float:
        return self.times[-1]

    def drop_to(self, head: int) -> None:
        """Move the head to `head`, or further so at most `size_max` times remain; compact."""
        self.head = max(head, len(self.times) - self.size_max)
        if self.head > COMPACT_AFTER and self.head * 2 > len(self.times):
            del self.times[: self.head]
            self.head = 0


class SlidingLogLimiter:
    """Exact multi-window limits per key, in memory; not thread-safe (one event loop owns it)."""

    def __init__(self, clock: Clock, *, keys_max: int = KEYS_MAX_DEFAULT) -> None:
        if keys_max < 1:
            raise ValueError("keys_max must be at least 1")
        self._clock = clock
        self._keys_max = keys_max
        self._logs: OrderedDict[str, _Log] = OrderedDict()

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
        if not 1 <= cost <= policy.cost_max:
            raise ValueError("cost must be at least 1 and within the policy's largest limit")
        now = self._clock.monotonic()
        size_max, horizon_s = policy.log_size_max, policy.horizon_s
        logs = self._logs
        stored = logs.get(key)
        log = _fitted(stored, size_max, horizon_s)
        # One binary search per window, before the log moves: the index of its oldest hit.
        # Expiring and recording afterwards change nothing these say: expired hits are outside
        # every window, an admitted hit is appended (the clock is monotonic), and the size cap
        # drops only hits older than every window's newest `limit`.
        times, head, count = log.times, log.head, len(log.times)
        windows = policy.windows
        firsts: list[int] = []
        is_allowed = True
        retry_after_s = 0.0
        for window in windows:
            first = bisect_right(times, now - window.window_s, head)
            firsts.append(first)
            excess = count - first + cost - window.limit
            if excess > 0:
                is_allowed = False
                # Never fits: report the window so callers back off; else the excess-th oldest
                # hit inside the window must leave it first.
                wait_s = (
                    window.window_s
                    if cost > window.limit
                    else times[first + excess - 1] + window.window_s - now
                )
                retry_after_s = max(retry_after_s, wait_s)
        added = cost if is_allowed and is_recorded else 0
        states = _states(windows, firsts, times, count + added, now)
        if added == 1:
            times.append(now)
        elif added:
            times.extend([now] * added)
        # The common hit expires nothing and stays within the cap: the log keeps its head.
        if (head < count and times[head] <= now - horizon_s) or len(times) - head > size_max:
            log.drop_to(bisect_right(times, now - horizon_s, head))
        if len(times) > log.head:
            if log is stored:
                logs.move_to_end(key)
            else:
                self._remember(key, log)
        elif stored is not None:
            del logs[key]
        return _new_named_tuple(RateLimitDecision, (policy.name, is_allowed, states, retry_after_s))

    def _remember(self, key: str, log: _Log) -> None:
        self._logs[key] = log
        self._logs.move_to_end(key)
        if len(self._logs) <= self._keys_max:
            return
        now = self._clock.monotonic()
        # Expired logs first (they decide nothing), then the least recently used key.
        stale = [k for k, v in self._logs.items() if not v or v.newest <= now - v.horizon_s]
        for name in stale:
            del self._logs[name]
        while len(self._logs) > self._keys_max:
            self._logs.popitem(last=False)


def _states(
    windows: tuple[Window, ...], firsts: list[int], times: list[float], total: int, now: float
) -> tuple[WindowState, ...]:
    """Every window's state after a decision, in one call (this runs on every request the edge
    limits): `firsts[i]` is the index of window i's oldest hit in `times`, and `total` counts
    the log's hits with this decision's own (recorded at `now`, possibly not yet in `times`)."""
    count = len(times)
    states: list[WindowState] = []
    for window, first in zip(windows, firsts, strict=True):
        limit, window_s = window.limit, window.window_s
        inside = total - first
        if not inside:
            reset_s = 0.0
        elif first < count:  # its oldest hit leaves it first
            reset_s = max(times[first] + window_s - now, 0.0)
        else:  # only this decision's own hits
            reset_s = window_s
        states.append(
            _new_named_tuple(WindowState, (limit, window_s, max(limit - inside, 0), reset_s))
        )
    return tuple(states)


def _fitted(log: _Log | None, size_max: int, horizon_s: float) -> _Log:
    """`log` ready for a policy keeping `size_max` hits over `horizon_s`: itself when it already
    fits, else a fresh log (a new key, or one whose policy changed)."""
    if log is not None and log.size_max == size_max:
        if log.horizon_s != horizon_s:
            log.horizon_s = horizon_s
        return log
    fresh = _Log(size_max, horizon_s)
    if log is not None:
        # Only the newest `size_max` hits can decide anything under the new policy.
        fresh.times = log.times[max(log.head, len(log.times) - size_max) :]
    return fresh
