"""The rate-limit slot: count each request against its route's rule and say so in headers.

The rule is the one whose path prefix is longest for the request (`gateway.policy`); its limits
are multiplied by the caller's tier, and the counter is keyed by the token's subject, or by the
client address when the request is anonymous or the rule counts by address. The decision comes
from a `RateLimiter` (`gateway.limiter`).

Headers, on the answer and on the refusal alike:

- Kong's `X-RateLimit-Limit-<Window>` / `X-RateLimit-Remaining-<Window>` for every window
  (`-Minute`, `-Hour`, `-Day`, `-15min`...; header names are case-insensitive);
- Kong's `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` for the most restrictive
  window (lowest remaining; on a tie the longer window);
- the RateLimit draft's structured fields, one item per window:
  `RateLimit-Policy: "minute";q=10;w=60, "hour";q=100;w=3600` and
  `RateLimit: "minute";r=9;t=60, "hour";r=99;t=3600` (no partition key: it would leak ids).

A refusal is 429 problem+json with the draft's quota-exceeded type, `violated-policies` and
`Retry-After` (never earlier than the quota returns), and counts
`rate_limit_exceeded_total{service,route,tier,window}` once per exhausted window. When the
limiter cannot decide in time, a money-moving route fails closed (503 with Retry-After) and
any other route fails open; both are counted in `rate_limit_unavailable_total` and logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol

from gateway.edge import UNKNOWN_ADDRESS, Decision, EdgeState
from gateway.errors import QuotaExceededError, RateLimiterUnavailableError
from gateway.limiter import (
    LimitDecision,
    LimitRequest,
    LocalRateLimiter,
    RateLimiter,
    WindowLimit,
    ceil_seconds,
    limit_decision,
    limit_policy,
)
from gateway.metrics import GatewayMetrics
from gateway.policy import LimitKey, RateLimitPolicy, RateLimitRule, Tier
from kit.errors import AppError, DependencyError, fail_invariant
from kit.ratelimit import RateLimitPolicy as KitRateLimitPolicy

logger = logging.getLogger(__name__)

ANONYMOUS_TIER: Final = "anonymous"  # the `tier` label of requests without a token


class WindowLike(Protocol):
    """A window's state as the headers need it: the limiter's (`kit.ratelimit.WindowState`)
    or the edge's (`gateway.limiter.WindowState`)."""

    @property
    def limit(self) -> int: ...
    @property
    def window_s(self) -> float: ...
    @property
    def remaining(self) -> int: ...
    @property
    def reset_s(self) -> float: ...


def tier_windows(rule: RateLimitRule, tier: Tier) -> tuple[WindowLimit, ...]:
    """The rule's windows with limits multiplied for `tier` (floor, at least 1)."""
    multiplier = rule.tier_multipliers.of(tier)
    return tuple(
        WindowLimit(w.name, w.seconds, max(1, math.floor(w.limit * multiplier)))
        for w in rule.windows
    )


def window_label(name: str) -> str:
    """`minute` -> `Minute`, as Kong spells its header suffixes."""
    return name[:1].upper() + name[1:]


def exposed_headers(policy: RateLimitPolicy) -> tuple[str, ...]:
    """Every rate-limit header name the policy can send (for CORS `expose-headers`)."""
    names = dict.fromkeys(w.name for rule in policy.rules for w in rule.windows)
    per_window = [
        f"X-RateLimit-{kind}-{window_label(name)}"
        for name in names
        for kind in ("Limit", "Remaining")
    ]
    fixed = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")
    return (*per_window, *fixed, "RateLimit")


class _WindowHeaders(NamedTuple):
    """What one window's headers always say, rendered once."""

    limit: tuple[bytes, bytes]  # X-RateLimit-Limit-<Window>
    remaining_name: bytes  # X-RateLimit-Remaining-<Window>, lowercase
    overall_limit: tuple[bytes, bytes]  # RateLimit-Limit, when this window is the tightest
    item_prefix: bytes  # its item of the `RateLimit` field, up to the remaining count


class _HeaderTemplate:
    """What the rate-limit headers of one set of windows always say (names, limits, the policy
    field), rendered once; `render` adds what a decision says."""

    __slots__ = ("policy", "windows")

    def __init__(self, windows: tuple[WindowLimit, ...]) -> None:
        self.windows = [
            _WindowHeaders(
                (b"x-ratelimit-limit-" + w.name.encode("latin-1"), b"%d" % w.limit),
                b"x-ratelimit-remaining-" + w.name.encode("latin-1"),
                (b"ratelimit-limit", b"%d" % w.limit),
                b'"' + w.name.encode("latin-1") + b'";r=',
            )
            for w in windows
        ]
        policy = ", ".join(f'"{w.name}";q={w.limit};w={w.window_s}' for w in windows)
        self.policy = (b"ratelimit-policy", policy.encode("latin-1"))

    def render(self, windows: Sequence[WindowLike]) -> list[tuple[bytes, bytes]]:
        """The headers for these windows' states (the limiter's own or the edge's: a reset in
        seconds, fractional or whole, is sent as whole seconds rounded up). The `RateLimit-*`
        trio reports the tightest window: the fewest remaining, on a tie the longer one."""
        headers: list[tuple[bytes, bytes]] = []
        items: list[bytes] = []
        tightest: tuple[int, float, tuple[bytes, bytes], bytes, bytes] | None = None
        for fixed, w in zip(self.windows, windows, strict=True):
            remaining, reset_s, window_s = w.remaining, w.reset_s, w.window_s
            left = b"%d" % remaining
            reset = b"%d" % ceil_seconds(reset_s) if reset_s > 0 else b"0"
            headers.append(fixed.limit)
            headers.append((fixed.remaining_name, left))
            items.append(fixed.item_prefix + left + b";t=" + reset)
            if (
                tightest is None
                or remaining < tightest[0]
                or (remaining == tightest[0] and window_s > tightest[1])
            ):
                tightest = (remaining, window_s, fixed.overall_limit, left, reset)
        if tightest is None:
            fail_invariant("rate-limit headers for no window")
        headers += [
            tightest[2],
            (b"ratelimit-remaining", tightest[3]),
            (b"ratelimit-reset", tightest[4]),
            self.policy,
            (b"ratelimit", b", ".join(items)),
        ]
        return headers


class _Plan(NamedTuple):
    """What the limited requests of one rule and tier share, built once: the windows, their
    header template, the limiter's policy and the counter key's prefix."""

    windows: tuple[WindowLimit, ...]
    template: _HeaderTemplate
    policy: KitRateLimitPolicy
    key_prefix: str  # the rule's name and `|`: a `LimitRequest.key` without its subject


Refusal = tuple[AppError, dict[str, str] | None]  # the error and its extra headers


class RateLimits:
    """429 when a window is exhausted; the rate-limit headers on every limited route."""

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        policy: RateLimitPolicy,
        metrics: GatewayMetrics,
        service: str,
    ) -> None:
        self._limiter = limiter
        self._timeout_s = policy.check_timeout_s
        self._metrics = metrics
        self._service = service
        templates: dict[tuple[WindowLimit, ...], _HeaderTemplate] = {}
        self._plans: dict[str, dict[Tier, _Plan]] = {}
        for rule in policy.rules:
            by_tier = self._plans[rule.name] = {}
            for tier in Tier:
                windows = tier_windows(rule, tier)
                template = templates.setdefault(windows, _HeaderTemplate(windows))
                request = LimitRequest(rule.name, "", windows)
                by_tier[tier] = _Plan(windows, template, limit_policy(request), request.key)
        self._local = limiter if isinstance(limiter, LocalRateLimiter) else None

    @property
    def is_local(self) -> bool:
        """True when the limiter decides in this process: call `check_now`, not `check`."""
        return self._local is not None

    def _plan(self, edge: EdgeState, rule: RateLimitRule) -> tuple[_Plan, str]:
        """The request's plan (by the caller's tier) and counter subject."""
        principal = edge.principal
        plan = self._plans[rule.name][Tier.BASIC if principal is None else principal.tier]
        if principal is not None and rule.key is LimitKey.USER:
            return plan, f"user:{principal.user_text}"
        return plan, f"ip:{edge.client_ip or UNKNOWN_ADDRESS}"

    def check_now(self, edge: EdgeState) -> Refusal | None:
        """`check` with the in-process limiter: decided at once, nothing to time out. An
        admitted request's headers are rendered from the limiter's own decision (this runs on
        every limited request); a refusal takes the general path."""
        rule = edge.route.rate_rule
        local = self._local
        if rule is None or local is None:
            return None
        plan, subject = self._plan(edge, rule)
        decision = local.hit(plan.key_prefix + subject, plan.policy)
        if decision.is_allowed:
            edge.limit_headers = plan.template.render(decision.windows)
            return None
        request = LimitRequest(rule.name, subject, plan.windows)
        return self._apply(edge, plan, limit_decision(request, decision))

    async def check(self, edge: EdgeState) -> Refusal | None:
        """None when the request may proceed (with its headers in `edge.limit_headers`), else
        the refusal: 429 when a window is exhausted, 503 when the limiter cannot decide in time
        on a money-moving route (elsewhere the request then proceeds without headers)."""
        rule = edge.route.rate_rule
        if rule is None:
            return None
        plan, subject = self._plan(edge, rule)
        try:
            async with asyncio.timeout(self._timeout_s):
                decision = await self._limiter.check(LimitRequest(rule.name, subject, plan.windows))
        except (DependencyError, TimeoutError) as exc:
            return self._unavailable(edge, rule, exc)
        return self._apply(edge, plan, decision)

    def _apply(self, edge: EdgeState, plan: _Plan, decision: LimitDecision) -> Refusal | None:
        headers = plan.template.render(decision.windows)
        if decision.is_allowed:
            edge.limit_headers = headers
            return None
        edge.decision = Decision.DENY_RATE_LIMIT
        principal = edge.principal
        tier = ANONYMOUS_TIER if principal is None else principal.tier.value
        violated = [w for w in decision.windows if w.is_exceeded]
        for window in violated:
            self._metrics.rate_limit_exceeded.labels(
                self._service, edge.route.template, tier, window.name
            ).inc()
        # The detail names the window the client waits for: the one whose oldest counted
        # request leaves last (with a minute and a 15-minute window both full, the latter).
        first = max(violated, key=lambda w: (w.reset_s, w.window_s))
        error = QuotaExceededError(
            f"The {first.name} limit of {first.limit} requests is exhausted; "
            f"retry in {decision.retry_after_s} s.",
            retry_after_s=decision.retry_after_s,
            violated_policies=[w.name for w in violated],
        )
        text_headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        return error, text_headers

    def _unavailable(self, edge: EdgeState, rule: RateLimitRule, exc: Exception) -> Refusal | None:
        is_closed = edge.route.is_money_moving
        outcome = "fail_closed" if is_closed else "fail_open"
        self._metrics.rate_limit_unavailable.labels(
            self._service, edge.route.template, outcome
        ).inc()
        logger.warning(
            "rate limiter unavailable",
            extra={"rule": rule.name, "outcome": outcome, "error": type(exc).__name__},
        )
        if is_closed:
            edge.decision = Decision.DENY_LIMITER_UNAVAILABLE
            return RateLimiterUnavailableError(), None
        edge.decision = Decision.ALLOW_LIMITER_UNAVAILABLE
        return None
