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
from typing import Final

from gateway.edge import UNKNOWN_ADDRESS, Decision, EdgeState
from gateway.errors import QuotaExceededError, RateLimiterUnavailableError
from gateway.limiter import (
    LimitDecision,
    LimitRequest,
    LocalRateLimiter,
    RateLimiter,
    WindowLimit,
)
from gateway.metrics import GatewayMetrics
from gateway.policy import LimitKey, RateLimitPolicy, RateLimitRule, Tier
from kit.errors import AppError, DependencyError

logger = logging.getLogger(__name__)

ANONYMOUS_TIER: Final = "anonymous"  # the `tier` label of requests without a token


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


class _HeaderTemplate:
    """What the rate-limit headers of one set of windows always say (names, limits, the policy
    field), rendered once; `render` adds what a decision says."""

    __slots__ = ("limits", "policy", "remaining_names", "state_items")

    def __init__(self, windows: tuple[WindowLimit, ...]) -> None:
        self.limits = [
            (b"x-ratelimit-limit-" + w.name.encode("latin-1"), b"%d" % w.limit) for w in windows
        ]
        self.remaining_names = [
            b"x-ratelimit-remaining-" + w.name.encode("latin-1") for w in windows
        ]
        policy = ", ".join(f'"{w.name}";q={w.limit};w={w.window_s}' for w in windows)
        self.policy = (b"ratelimit-policy", policy.encode("latin-1"))
        # Each window's item of the `RateLimit` field, with room for remaining and reset.
        self.state_items = [
            b'"' + w.name.encode("latin-1").replace(b"%", b"%%") + b'";r=%d;t=%d' for w in windows
        ]

    def render(self, decision: LimitDecision) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        state: list[bytes] = []
        windows = decision.windows
        tightest = windows[0]
        for limit, name, item, w in zip(
            self.limits, self.remaining_names, self.state_items, windows, strict=True
        ):
            headers.append(limit)
            headers.append((name, b"%d" % w.remaining))
            state.append(item % (w.remaining, w.reset_s))
            if w.remaining < tightest.remaining or (
                w.remaining == tightest.remaining and w.window_s > tightest.window_s
            ):
                tightest = w
        headers += [
            (b"ratelimit-limit", b"%d" % tightest.limit),
            (b"ratelimit-remaining", b"%d" % tightest.remaining),
            (b"ratelimit-reset", b"%d" % tightest.reset_s),
            self.policy,
            (b"ratelimit", b", ".join(state)),
        ]
        return headers


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
        self._windows = {
            rule.name: {tier: tier_windows(rule, tier) for tier in Tier} for rule in policy.rules
        }
        self._templates = {
            windows: _HeaderTemplate(windows)
            for by_tier in self._windows.values()
            for windows in by_tier.values()
        }
        self._local = limiter if isinstance(limiter, LocalRateLimiter) else None

    @property
    def is_local(self) -> bool:
        """True when the limiter decides in this process: call `check_now`, not `check`."""
        return self._local is not None

    def _request(self, edge: EdgeState, rule: RateLimitRule) -> LimitRequest:
        principal = edge.principal
        tier = Tier.BASIC if principal is None else principal.tier
        if principal is not None and rule.key is LimitKey.USER:
            subject = f"user:{principal.user_text}"
        else:
            subject = f"ip:{edge.client_ip or UNKNOWN_ADDRESS}"
        return LimitRequest(rule.name, subject, self._windows[rule.name][tier])

    def check_now(self, edge: EdgeState) -> Refusal | None:
        """`check` with the in-process limiter: decided at once, nothing to time out."""
        rule = edge.route.rate_rule
        if rule is None or self._local is None:
            return None
        request = self._request(edge, rule)
        return self._apply(edge, request, self._local.decide(request))

    async def check(self, edge: EdgeState) -> Refusal | None:
        """None when the request may proceed (with its headers in `edge.limit_headers`), else
        the refusal: 429 when a window is exhausted, 503 when the limiter cannot decide in time
        on a money-moving route (elsewhere the request then proceeds without headers)."""
        rule = edge.route.rate_rule
        if rule is None:
            return None
        request = self._request(edge, rule)
        try:
            async with asyncio.timeout(self._timeout_s):
                decision = await self._limiter.check(request)
        except (DependencyError, TimeoutError) as exc:
            return self._unavailable(edge, rule, exc)
        return self._apply(edge, request, decision)

    def _apply(
        self, edge: EdgeState, request: LimitRequest, decision: LimitDecision
    ) -> Refusal | None:
        headers = self._templates[request.windows].render(decision)
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
        first = violated[0]
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
