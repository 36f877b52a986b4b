"""The rate-limit decision: the `RateLimiter` protocol and its exact in-process implementation.

A `LimitRequest` names a rule, a subject (`user:<uuid>` or `ip:<address>`) and the windows that
apply to this caller (the rule's limits already multiplied for the caller's tier). The answer
is a `LimitDecision`: allowed or not, and for every window its limit, what remains after this
request and when quota comes back. A refused request consumes nothing.

Decisions are exact sliding windows: a request is admitted when, for every window of `w`
seconds, the requests admitted in the half-open interval (now - w, now] plus this one stay
within the limit. `SlidingLogLimiter` keeps the log of admission times per key; it serves the
tests and a single replica. The production limiter (the identity area's per-user shard actors,
with calls coalesced per shard) implements the same protocol; the edge middleware cannot tell
them apart. Whatever implements it raises a `DependencyError` (or times out) when it cannot
decide, and the middleware then fails open or closed by route.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from gateway.constants import RATE_LIMIT_KEYS_MAX
from kit.clock import Clock
from kit.errors import check_invariant


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """At most `limit` requests in any `window_s`-second window."""

    name: str
    window_s: int
    limit: int


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """One request to count against `rule` for `subject`."""

    rule: str
    subject: str
    windows: tuple[WindowLimit, ...]
    cost: int = 1

    @property
    def key(self) -> str:
        """The counter this request is counted in."""
        return f"{self.rule}|{self.subject}"


@dataclass(frozen=True, slots=True)
class WindowState:
    """One window after the decision."""

    name: str
    window_s: int
    limit: int
    remaining: int  # what is left after this request (unchanged when it was refused)
    reset_s: int  # seconds until the oldest counted request leaves the window (0: none counted)
    is_exceeded: bool  # this window refused the request


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """The answer to a `LimitRequest`."""

    is_allowed: bool
    windows: tuple[WindowState, ...]
    retry_after_s: int  # 0 when allowed; else the seconds until every window would admit it


class RateLimiter(Protocol):
    """Decides `LimitRequest`s exactly; concurrent calls for one key are serialised.

    Raises:
        DependencyError: when no decision can be made (the shard is unreachable).
    """

    async def check(self, request: LimitRequest) -> LimitDecision:
        """Count `request` if every window admits it; say what remains either way."""
        ...


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


class SlidingLogLimiter:
    """An exact sliding-log limiter held in this process, over an injected clock.

    Each key keeps the (non-decreasing) times of its admitted requests within its longest
    window, so memory per key is bounded by that window's limit; at most `keys_max` keys are
    kept and the least recently used is dropped first (which only ever forgets old requests,
    so it can admit more than a perfect memory would, never less).
    """

    def __init__(self, clock: Clock, *, keys_max: int = RATE_LIMIT_KEYS_MAX) -> None:
        check_invariant(keys_max >= 1, "a limiter needs room for one key", keys_max=keys_max)
        self._clock = clock
        self._keys_max = keys_max
        self._logs: OrderedDict[str, list[float]] = OrderedDict()

    async def check(self, request: LimitRequest) -> LimitDecision:
        """The decision for `request` (never awaits, so it is atomic on the event loop)."""
        return self.decide(request)

    def decide(self, request: LimitRequest) -> LimitDecision:
        """The decision for `request` at the clock's current time."""
        check_invariant(request.cost >= 1 and bool(request.windows), "an empty limit request")
        now = self._clock.monotonic()
        log = self._log(request.key, now, max(w.window_s for w in request.windows))
        firsts = [bisect_right(log, now - w.window_s) for w in request.windows]
        counts = [len(log) - first for first in firsts]
        exceeded = [
            count + request.cost > w.limit for count, w in zip(counts, request.windows, strict=True)
        ]
        is_allowed = not any(exceeded)
        if is_allowed:
            log.extend([now] * request.cost)
        states: list[WindowState] = []
        retry_after_s = 0
        for window, first, count, is_over in zip(
            request.windows, firsts, counts, exceeded, strict=True
        ):
            used = count + (request.cost if is_allowed else 0)
            oldest = log[first] if used else None
            reset_s = 0 if oldest is None else _ceil_s(oldest + window.window_s - now)
            if is_over:
                # The request fits once the oldest `excess` counted requests have left.
                excess = count + request.cost - window.limit
                index = first + min(excess, count) - 1
                wait_s = window.window_s if index < first else log[index] + window.window_s - now
                retry_after_s = max(retry_after_s, _ceil_s(wait_s))
            states.append(
                WindowState(
                    name=window.name,
                    window_s=window.window_s,
                    limit=window.limit,
                    remaining=max(0, window.limit - used),
                    reset_s=reset_s,
                    is_exceeded=is_over,
                )
            )
        return LimitDecision(
            is_allowed=is_allowed, windows=tuple(states), retry_after_s=retry_after_s
        )

    def _log(self, key: str, now: float, longest_s: int) -> list[float]:
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= self._keys_max:
                self._logs.popitem(last=False)
            log = self._logs[key] = []
            return log
        self._logs.move_to_end(key)
        stale = bisect_right(log, now - longest_s)
        if stale:
            del log[:stale]
        return log
