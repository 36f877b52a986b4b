"""The rate-limit slot over real HTTP, with the exact in-process limiter on a frozen clock.

The clock only moves when a test moves it, so windows are exact and nothing depends on timing.
Each test counts under its own user id or client address (loopback is a trusted proxy here, so
`X-Forwarded-For` picks the anonymous caller's address), so tests never share a counter.
The limiter that cannot answer stands for a shard whose actor is gone: it raises what the
actor-backed limiter raises then (`ClusterUnavailableError`), or never answers at all.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from ipaddress import ip_network

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import QUOTA_EXCEEDED_TYPE
from gateway.limiter import (
    LimitDecision,
    LimitRequest,
    SlidingLogLimiter,
    WindowLimit,
    limit_decision,
)
from gateway.policy import ClientAddressPolicy, GatewayPolicy, RateLimitPolicy
from gateway.rate_limit import _HeaderTemplate
from kit.clock import FrozenClock
from kit.errors import ClusterUnavailableError
from kit.ratelimit import RateLimitDecision
from kit.ratelimit import WindowState as KitWindowState

_addresses = itertools.count(1)


def _fresh_ip() -> str:
    n = next(_addresses)
    return f"198.51.{n // 250}.{n % 250 + 1}"


class UnreachableLimiter:
    """A limiter whose shard is gone: every check fails as the actor call would."""

    async def check(self, request: LimitRequest) -> LimitDecision:
        raise ClusterUnavailableError("the user shard is not reachable")


class SilentLimiter:
    """A limiter whose shard never answers."""

    async def check(self, request: LimitRequest) -> LimitDecision:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _policy(check_timeout_s: float = RateLimitPolicy().check_timeout_s) -> GatewayPolicy:
    return GatewayPolicy(
        client_address=ClientAddressPolicy(trusted_proxies=(ip_network("127.0.0.1/32"),)),
        rate_limits=RateLimitPolicy(check_timeout_s=check_timeout_s),
    )


@pytest.fixture(scope="module")
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def limiter(clock: FrozenClock) -> SlidingLogLimiter:
    return SlidingLogLimiter(clock)


@pytest.fixture(scope="module")
def base_url(
    serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI], limiter: SlidingLogLimiter
) -> str:
    return serve(edge_app(policy=_policy(), limiter=limiter, service="ratelimit-test"))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def _transfer_headers(
    mint: Callable[..., str], user_id: uuid.UUID, tier: str = "basic"
) -> dict[str, str]:
    token = mint(user_id=user_id, tier=tier, amr=("pwd", "mfa"))
    return {"Authorization": f"Bearer {token}"}


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            inside = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(inside.split(","))) == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


class TestHeaders:
    def test_every_header_format(self, http: httpx.Client, mint: Callable[..., str]) -> None:
        """An admitted request carries Kong's headers and the draft's structured fields."""
        response = http.post("/api/v1/transfers", headers=_transfer_headers(mint, uuid.uuid4()))
        assert response.status_code == 200
        h = response.headers
        assert (h["x-ratelimit-limit-minute"], h["x-ratelimit-remaining-minute"]) == ("10", "9")
        assert (h["x-ratelimit-limit-hour"], h["x-ratelimit-remaining-hour"]) == ("100", "99")
        assert (h["x-ratelimit-limit-day"], h["x-ratelimit-remaining-day"]) == ("500", "499")
        assert (h["ratelimit-limit"], h["ratelimit-remaining"], h["ratelimit-reset"]) == (
            "10",
            "9",
            "60",
        )
        assert h["ratelimit-policy"] == (
            '"minute";q=10;w=60, "hour";q=100;w=3600, "day";q=500;w=86400'
        )
        assert h["ratelimit"] == '"minute";r=9;t=60, "hour";r=99;t=3600, "day";r=499;t=86400'

    @given(
        states=st.lists(
            st.tuples(st.integers(0, 10_000), st.floats(0, 3600, allow_nan=False), st.booleans()),
            min_size=1,
            max_size=4,
        )
    )
    def test_limiter_and_edge_states_give_the_same_headers(
        self, states: list[tuple[int, float, bool]]
    ) -> None:
        """An admitted request's headers are rendered from the limiter's own states (fractional
        resets); a refusal's and a shard's from the edge's (whole seconds): both must read the
        same, the tightest window (fewest remaining, on a tie the longest) in the trio."""
        windows = tuple(
            WindowLimit(f"w{index}", 60 * (index + 1), 10_000) for index in range(len(states))
        )
        kit_states = tuple(
            KitWindowState(10_000, float(w.window_s), remaining, reset_s if has_hits else 0.0)
            for w, (remaining, reset_s, has_hits) in zip(windows, states, strict=True)
        )
        request = LimitRequest("rule", "user:1", windows)
        decision = RateLimitDecision("rule", True, kit_states, 0.0)
        template = _HeaderTemplate(windows)
        from_limiter = dict(template.render(kit_states))
        assert from_limiter == dict(template.render(limit_decision(request, decision).windows))
        fewest = min(remaining for remaining, _, _ in states)
        tightest = max(i for i, (remaining, _, _) in enumerate(states) if remaining == fewest)
        reset_s = kit_states[tightest].reset_s
        assert from_limiter[b"ratelimit-remaining"] == b"%d" % fewest
        assert from_limiter[b"ratelimit-reset"] == b"%d" % (
            math.ceil(reset_s - 1e-9) or 1 if reset_s > 0 else 0
        )

    def test_unlimited_routes_have_no_headers(self, http: httpx.Client) -> None:
        """A route no rule covers carries no rate-limit header."""
        response = http.get("/health/live")
        assert not [name for name in response.headers if "ratelimit" in name]


class TestRefusal:
    def test_eleventh_transfer_in_a_minute_is_429(
        self, http: httpx.Client, mint: Callable[..., str], clock: FrozenClock
    ) -> None:
        """Basic tier: ten transfers a minute; the eleventh is a quota-exceeded problem."""
        headers = _transfer_headers(mint, uuid.uuid4())
        statuses = []
        for _ in range(10):
            statuses.append(http.post("/api/v1/transfers", headers=headers).status_code)
            clock.advance(1)
        refused = http.post("/api/v1/transfers", headers=headers)
        assert statuses == [200] * 10
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "50"
        assert refused.headers["x-ratelimit-remaining-minute"] == "0"
        assert refused.headers["ratelimit"].startswith('"minute";r=0;t=50')
        body = refused.json()
        assert body["type"] == QUOTA_EXCEEDED_TYPE
        assert body["status"] == 429
        assert body["code"] == "GEN_RATE_LIMITED"
        assert body["violated-policies"] == ["minute"]
        assert body["details"] == {"retry_after_s": 50}
        assert body["request_id"] == refused.headers["x-request-id"]

    def test_quota_returns_when_the_oldest_request_leaves(
        self, http: httpx.Client, mint: Callable[..., str], clock: FrozenClock
    ) -> None:
        """Exactly Retry-After seconds later the next request is admitted again."""
        headers = _transfer_headers(mint, uuid.uuid4())
        for _ in range(10):
            http.post("/api/v1/transfers", headers=headers)
        refused = http.post("/api/v1/transfers", headers=headers)
        clock.advance(int(refused.headers["retry-after"]))
        assert http.post("/api/v1/transfers", headers=headers).status_code == 200

    def test_refusals_are_counted_per_window(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """Each refusal adds one to rate_limit_exceeded_total for the exhausted window."""
        labels = {
            "service": "ratelimit-test",
            "route": "/api/v1/transfers",
            "tier": "basic",
            "window": "minute",
        }
        before = _sample(http.get("/metrics").text, "rate_limit_exceeded_total", **labels)
        headers = _transfer_headers(mint, uuid.uuid4())
        for _ in range(12):
            http.post("/api/v1/transfers", headers=headers)
        after = _sample(http.get("/metrics").text, "rate_limit_exceeded_total", **labels)
        assert after == before + 2


class TestKeys:
    @pytest.mark.parametrize(
        ("tier", "limit"), [("basic", 10), ("premium", 15), ("enterprise", 30)]
    )
    def test_tier_multiplies_the_limit(
        self, http: httpx.Client, mint: Callable[..., str], tier: str, limit: int
    ) -> None:
        """The seed's multipliers: transfers 10/min x 1, 1.5, 3."""
        headers = _transfer_headers(mint, uuid.uuid4(), tier=tier)
        response = http.post("/api/v1/transfers", headers=headers)
        assert response.headers["x-ratelimit-limit-minute"] == str(limit)

    def test_users_have_separate_counters(
        self, http: httpx.Client, mint: Callable[..., str]
    ) -> None:
        """One user's exhausted window does not limit another user."""
        first = _transfer_headers(mint, uuid.uuid4())
        for _ in range(11):
            http.post("/api/v1/transfers", headers=first)
        other = http.post("/api/v1/transfers", headers=_transfer_headers(mint, uuid.uuid4()))
        assert other.status_code == 200

    def test_anonymous_login_is_counted_by_address(self, http: httpx.Client) -> None:
        """Login (5 per minute and per 15 minutes) counts per client address."""
        address = {"X-Forwarded-For": _fresh_ip()}
        statuses = [http.post("/api/v1/auth/login", headers=address).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        elsewhere = http.post("/api/v1/auth/login", headers={"X-Forwarded-For": _fresh_ip()})
        assert elsewhere.status_code == 200
        refused = http.post("/api/v1/auth/login", headers=address)
        assert sorted(refused.json()["violated-policies"]) == ["15min", "minute"]

    def test_the_detail_names_the_window_that_sets_the_wait(
        self, http: httpx.Client, clock: FrozenClock
    ) -> None:
        """Login's minute and 15-minute windows both full: the wait is the 15-minute one's,
        and so is the window the detail names (it named the first exhausted, the minute)."""
        address = {"X-Forwarded-For": _fresh_ip()}
        for _ in range(5):
            assert http.post("/api/v1/auth/login", headers=address).status_code == 200
            clock.advance(1)
        refused = http.post("/api/v1/auth/login", headers=address)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "895"
        assert refused.json()["detail"] == (
            "The 15min limit of 5 requests is exhausted; retry in 895 s."
        )


@pytest.fixture(scope="module")
def down_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    """An app whose limiter's shard is unreachable."""
    return serve(edge_app(policy=_policy(), limiter=UnreachableLimiter(), service="down"))


class TestLimiterUnavailable:
    def test_ordinary_route_fails_open_and_is_counted(
        self, down_url: str, mint: Callable[..., str]
    ) -> None:
        """A balance read is served without a limit decision, and the failure is counted."""
        with httpx.Client(base_url=down_url, timeout=30) as http:
            labels = {"service": "down", "route": "/api/v1/wallets/balance", "outcome": "fail_open"}
            before = _sample(http.get("/metrics").text, "rate_limit_unavailable_total", **labels)
            headers = {"Authorization": f"Bearer {mint()}"}
            response = http.get("/api/v1/wallets/balance", headers=headers)
            after = _sample(http.get("/metrics").text, "rate_limit_unavailable_total", **labels)
        assert response.status_code == 200
        assert "ratelimit" not in response.headers
        assert after == before + 1

    def test_money_moving_route_fails_closed(self, down_url: str, mint: Callable[..., str]) -> None:
        """A transfer is refused with 503 and Retry-After when no decision can be made."""
        with httpx.Client(base_url=down_url, timeout=30) as http:
            response = http.post("/api/v1/transfers", headers=_transfer_headers(mint, uuid.uuid4()))
            metrics = http.get("/metrics").text
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "GW_RATE_LIMITER_UNAVAILABLE"
        labels = {"service": "down", "route": "/api/v1/transfers", "outcome": "fail_closed"}
        assert _sample(metrics, "rate_limit_unavailable_total", **labels) >= 1

    def test_a_limiter_that_never_answers_counts_as_down(
        self,
        serve: Callable[[FastAPI], str],
        edge_app: Callable[..., FastAPI],
        mint: Callable[..., str],
    ) -> None:
        """Past `check_timeout_s` the decision is abandoned: the transfer fails closed."""
        app = edge_app(policy=_policy(check_timeout_s=0.05), limiter=SilentLimiter())
        with httpx.Client(base_url=serve(app), timeout=30) as http:
            response = http.post("/api/v1/transfers", headers=_transfer_headers(mint, uuid.uuid4()))
        assert response.status_code == 503


class TestSharedAcrossReplicas:
    async def test_two_replicas_never_admit_more_than_the_limit(
        self,
        serve: Callable[[FastAPI], str],
        edge_app: Callable[..., FastAPI],
        mint: Callable[..., str],
    ) -> None:
        """40 concurrent transfers over two ingress apps sharing one limiter admit exactly 10."""
        limiter = SlidingLogLimiter(FrozenClock(datetime(2026, 1, 1, tzinfo=UTC)))
        urls = [serve(edge_app(policy=_policy(), limiter=limiter)) for _ in range(2)]
        headers = _transfer_headers(mint, uuid.uuid4())
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        try:
            responses = await asyncio.gather(
                *(clients[i % 2].post("/api/v1/transfers", headers=headers) for i in range(40))
            )
        finally:
            for client in clients:
                await client.aclose()
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] * 10 + [429] * 30
