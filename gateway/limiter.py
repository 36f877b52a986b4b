"""The rate-limit decision: the `RateLimiter` protocol and its exact in-process implementation.

A `LimitRequest` names a rule, a subject (`user:<uuid>` or `ip:<address>`) and the windows that
apply to this caller (the rule's limits already multiplied for the caller's tier). The answer
is a `LimitDecision`: allowed or not, and for every window its limit, what remains after this
request and when quota comes back. A refused request consumes nothing.

Decisions are exact sliding windows: a request is admitted when, for every window of `w`
seconds, the requests admitted in the half-open interval (now - w, now] plus this one stay
within the limit. `SlidingLogLimiter` keeps the log of admission times per key; it serves the
tests and a single replica. The production limiter (the identity area's per-user shard actors,
with calls coalesced per shard) implements the same protocol; the edge cannot tell
them apart. Whatever implements it raises a `DependencyError` (or times out) when it cannot
decide, and the edge then fails open or closed by route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, runtime_checkable

from gateway.constants import RATE_LIMIT_KEYS_MAX
from kit.clock import Clock
from kit.errors import check_invariant, fail_invariant
from kit.ratelimit import RateLimitDecision, RateLimitPolicy, Window
from kit.ratelimit import SlidingLogLimiter as KitSlidingLogLimiter

POLICY_CACHE_MAX: Final = 1_024  # (rule, windows) pairs kept built; rules x tiers in practice
RESET_ROUNDING_S: Final = 1e-9  # a wait this close above a whole second is that second


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """At most `limit` requests in any `window_s`-second window."""

    name: str
    window_s: int
    limit: int


# The request, window state and decision are built for every rate-limited request: immutable
# named tuples, which cost a third of a frozen dataclass to build (the edge's budget is a few
# tens of microseconds per request).


class LimitRequest(NamedTuple):
    """One request to count against `rule` for `subject`."""

    rule: str
    subject: str
    windows: tuple[WindowLimit, ...]
    cost: int = 1

    @property
    def key(self) -> str:
        """The counter this request is counted in."""
        return f"{self.rule}|{self.subject}"


class WindowState(NamedTuple):
    """One window after the decision."""

    name: str
    window_s: int
    limit: int
    remaining: int  # what is left after this request (unchanged when it was refused)
    reset_s: int  # seconds until the oldest counted request leaves the window (0: none counted)
    is_exceeded: bool  # this window refused the request


class LimitDecision(NamedTuple):
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

    async def peek(self, request: LimitRequest) -> LimitDecision:
        """What `check` would answer, counting nothing (the admin view)."""
        ...


def ceil_seconds(seconds: float) -> int:
    """A positive wait in whole seconds, rounded up (at least 1)."""
    return max(1, math.ceil(seconds - RESET_ROUNDING_S))


_POLICIES: dict[tuple[str, tuple[WindowLimit, ...]], RateLimitPolicy] = {}


def limit_policy(request: LimitRequest) -> RateLimitPolicy:
    """The `kit.ratelimit` policy of a request: its rule's windows, in order (built once per
    rule and tier: the edge asks for the same few on every request)."""
    key = (request.rule, request.windows)
    policy = _POLICIES.get(key)
    if policy is None:
        policy = RateLimitPolicy(
            name=request.rule,
            windows=tuple(
                Window(limit=w.limit, window_s=float(w.window_s)) for w in request.windows
            ),
        )
        if len(_POLICIES) < POLICY_CACHE_MAX:
            _POLICIES[key] = policy
    return policy


def limit_decision(request: LimitRequest, decision: RateLimitDecision) -> LimitDecision:
    """A `kit.ratelimit` decision in the edge's terms (window names, whole seconds)."""
    is_allowed = decision.is_allowed
    cost = request.cost
    states = tuple(
        [
            WindowState(  # name, window_s, limit, remaining, reset_s, is_exceeded
                window.name,
                window.window_s,
                window.limit,
                state.remaining,
                ceil_seconds(state.reset_s) if state.reset_s > 0 else 0,
                not is_allowed and state.remaining < cost,
            )
            for window, state in zip(request.windows, decision.windows, strict=True)
        ]
    )
    retry_after_s = 0 if is_allowed else ceil_seconds(decision.retry_after_s)
    return LimitDecision(is_allowed, states, retry_after_s)


@runtime_checkable
class LocalRateLimiter(RateLimiter, Protocol):
    """A `RateLimiter` held in this process: it decides at once, without awaiting anything, so
    the edge calls `decide` directly (no timeout to arm: it cannot hang)."""

    def decide(self, request: LimitRequest) -> LimitDecision:
        """Count `request` if every window admits it; say what remains either way."""
        ...

    def hit(self, key: str, policy: RateLimitPolicy) -> RateLimitDecision:
        """`decide` in the limiter's own terms: one hit of `key` under `policy` (the edge's
        path for every limited request, without building a `LimitRequest` and a
        `LimitDecision`)."""
        ...


class SlidingLogLimiter:
    """The exact sliding-log limiter of `kit.ratelimit`, held in this process (tests, one
    replica); the shard actors host the same algorithm for the cluster. A `LocalRateLimiter`."""

    def __init__(self, clock: Clock, *, keys_max: int = RATE_LIMIT_KEYS_MAX) -> None:
        check_invariant(keys_max >= 1, "a limiter needs room for one key", keys_max=keys_max)
        self._limiter = KitSlidingLogLimiter(clock, keys_max=keys_max)
        # `LocalRateLimiter.hit` is the kit limiter's own method: no frame of ours around it.
        self.hit = self._limiter.hit

    async def check(self, request: LimitRequest) -> LimitDecision:
        """The decision for `request` (never awaits, so it is atomic on the event loop)."""
        return self.decide(request)

    async def peek(self, request: LimitRequest) -> LimitDecision:
        """The state of `request`'s key, counting nothing."""
        return limit_decision(request, self._limiter.peek(request.key, limit_policy(request)))

    def decide(self, request: LimitRequest) -> LimitDecision:
        """The decision for `request` at the clock's current time."""
        if request.cost < 1 or not request.windows:
            fail_invariant("an empty limit request")
        decision = self._limiter.hit(request.key, limit_policy(request), cost=request.cost)
        return limit_decision(request, decision)
