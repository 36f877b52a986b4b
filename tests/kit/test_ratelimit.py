"""The sliding-log limiter: exact counts over several windows, bounded memory, header fields.

Driven by a `FrozenClock`, so every boundary (a hit leaving a window at exactly `window_s`) is
checked to the second without sleeping.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from datetime import UTC, datetime

import pytest

from kit.clock import FrozenClock
from kit.ratelimit import COMPACT_AFTER, RateLimitPolicy, SlidingLogLimiter, Window

FIVE_PER_15_MIN = RateLimitPolicy("login", (Window(5, 900),))
BURST_AND_HOUR = RateLimitPolicy("api", (Window(3, 10), Window(5, 3600)))


def _fits(admitted: list[float], policy: RateLimitPolicy, now: float) -> bool:
    """The oracle: one more hit fits when every window holds fewer than its limit."""
    return all(
        len(admitted) - bisect_right(admitted, now - w.window_s) + 1 <= w.limit
        for w in policy.windows
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))


class TestSingleWindow:
    def test_admits_exactly_the_limit(self, clock: FrozenClock) -> None:
        """Five hits pass, the sixth is refused, and refusals are not recorded."""
        limiter = SlidingLogLimiter(clock)
        decisions = [limiter.hit("k", FIVE_PER_15_MIN) for _ in range(8)]
        assert [d.is_allowed for d in decisions] == [True] * 5 + [False] * 3
        assert [d.windows[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]

    def test_window_slides(self, clock: FrozenClock) -> None:
        """A hit leaves the window exactly window_s after it was admitted."""
        limiter = SlidingLogLimiter(clock)
        limiter.hit("k", FIVE_PER_15_MIN)
        clock.advance(100)
        for _ in range(4):
            limiter.hit("k", FIVE_PER_15_MIN)
        refused = limiter.hit("k", FIVE_PER_15_MIN)
        assert not refused.is_allowed
        assert refused.retry_after_s == pytest.approx(800)
        clock.advance(800)
        assert limiter.hit("k", FIVE_PER_15_MIN).is_allowed
        assert not limiter.hit("k", FIVE_PER_15_MIN).is_allowed

    def test_keys_are_independent(self, clock: FrozenClock) -> None:
        """One key's hits never count against another."""
        limiter = SlidingLogLimiter(clock)
        for _ in range(5):
            limiter.hit("a", FIVE_PER_15_MIN)
        assert limiter.hit("b", FIVE_PER_15_MIN).is_allowed

    def test_peek_records_nothing(self, clock: FrozenClock) -> None:
        """peek says what a hit would get without spending it."""
        limiter = SlidingLogLimiter(clock)
        for _ in range(10):
            assert limiter.peek("k", FIVE_PER_15_MIN).is_allowed
        assert limiter.hit("k", FIVE_PER_15_MIN).windows[0].remaining == 4


class TestSeveralWindows:
    def test_every_window_must_admit(self, clock: FrozenClock) -> None:
        """The burst window refuses the 4th hit; the hourly window refuses the 6th later."""
        limiter = SlidingLogLimiter(clock)
        assert [limiter.hit("k", BURST_AND_HOUR).is_allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        clock.advance(10)
        assert [limiter.hit("k", BURST_AND_HOUR).is_allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        refused = limiter.hit("k", BURST_AND_HOUR)
        assert refused.retry_after_s == pytest.approx(3590)

    def test_cost_counts_several_units(self, clock: FrozenClock) -> None:
        """A batch of 3 consumes 3 units at once, or none."""
        limiter = SlidingLogLimiter(clock)
        assert limiter.hit("k", FIVE_PER_15_MIN, cost=3).is_allowed
        assert not limiter.hit("k", FIVE_PER_15_MIN, cost=3).is_allowed
        assert limiter.hit("k", FIVE_PER_15_MIN, cost=2).is_allowed


class TestBounds:
    def test_log_never_outgrows_the_largest_limit(self, clock: FrozenClock) -> None:
        """However many hits arrive, a key keeps at most its largest limit of entries."""
        limiter = SlidingLogLimiter(clock)
        for _ in range(1000):
            limiter.hit("k", FIVE_PER_15_MIN)
            clock.advance(1)
        log = limiter._logs["k"]
        assert len(log) <= 5
        assert len(log.times) <= 5 + COMPACT_AFTER  # expired entries are compacted away

    def test_a_narrowed_policy_counts_only_the_newest_hits(self, clock: FrozenClock) -> None:
        """When a key's policy shrinks, its log keeps the newest hits the new largest limit can
        count: the window resets when the oldest of those leaves, not an older one."""
        limiter = SlidingLogLimiter(clock)
        wide = RateLimitPolicy("api", (Window(100, 60),))
        narrow = RateLimitPolicy("api", (Window(3, 60),))
        for _ in range(10):  # hits at 0..9 s
            assert limiter.hit("k", wide).is_allowed
            clock.advance(1)
        refused = limiter.hit("k", narrow)  # at 10 s; the newest three are at 7, 8 and 9 s
        assert not refused.is_allowed
        assert refused.windows[0].remaining == 0
        assert refused.windows[0].reset_s == pytest.approx(57)
        assert refused.retry_after_s == pytest.approx(57)
        assert len(limiter._logs["k"]) == 3

    def test_large_limits_stay_exact(self, clock: FrozenClock) -> None:
        """With limits in the thousands (logs long enough to be compacted many times) every
        decision matches a brute-force count of the admitted hits inside each window."""
        policy = RateLimitPolicy("bulk", (Window(3_000, 2), Window(20_000, 30)))
        limiter = SlidingLogLimiter(clock)
        admitted: list[float] = []
        rng = random.Random(7)
        for _ in range(60_000):
            clock.advance(rng.choice((0.0, 0.0005, 0.001, 0.003)))
            now = clock.monotonic()
            fits = _fits(admitted, policy, now)
            decision = limiter.hit("k", policy)
            assert decision.is_allowed == fits
            if fits:
                admitted.append(now)
        assert 0 < len(admitted) < 60_000  # both answers were exercised
        assert len(limiter._logs["k"].times) <= 2 * 20_000 + COMPACT_AFTER  # compacted

    def test_keys_are_bounded(self, clock: FrozenClock) -> None:
        """Past keys_max keys the least recently used is dropped."""
        limiter = SlidingLogLimiter(clock, keys_max=3)
        for key in "abcd":
            limiter.hit(key, FIVE_PER_15_MIN)
        assert limiter.key_count == 3
        assert "a" not in limiter._logs

    def test_invalid_policies_are_refused(self) -> None:
        """Windows and limits outside the bounds raise at construction."""
        with pytest.raises(ValueError, match="limit"):
            Window(0, 10)
        with pytest.raises(ValueError, match="window"):
            Window(1, 0)
        with pytest.raises(ValueError, match="windows"):
            RateLimitPolicy("x", ())


class TestHeaders:
    def test_headers_carry_policy_remaining_and_retry(self, clock: FrozenClock) -> None:
        """A refusal renders RateLimit-Policy, RateLimit and Retry-After."""
        limiter = SlidingLogLimiter(clock)
        for _ in range(5):
            limiter.hit("k", FIVE_PER_15_MIN)
        clock.advance(60)
        headers = limiter.hit("k", FIVE_PER_15_MIN).headers()
        assert headers == {
            "RateLimit-Policy": '"login-0";q=5;w=900',
            "RateLimit": '"login-0";r=0;t=840',
            "Retry-After": "840",
        }

    def test_allowed_decision_has_no_retry_after(self, clock: FrozenClock) -> None:
        """An admitted hit reports what remains and no Retry-After."""
        headers = SlidingLogLimiter(clock).hit("k", BURST_AND_HOUR).headers()
        assert "Retry-After" not in headers
        assert headers["RateLimit"] == '"api-0";r=2;t=10'
