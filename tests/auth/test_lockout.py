"""Lockout and throttling: 5 failures in 15 minutes lock for 30, never more guesses than that.

Method: the rules are pure functions over a state, tested first on their own; then the
in-process `LoginGuard` over the real Redis takes 20 parallel guesses; then `POST /login` over
HTTP shows that unknown, wrong-password and locked accounts answer byte for byte the same
(apart from the request id), and that a lock survives a new guard (a restart). The UserShard
actor runs the same rules under Ray in tests/actors/test_user_shard_ray.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from auth.dependencies import AuthDependencies, AuthLimits
from auth.lockout import LockoutPolicy, LockoutState, account_key, admit, report
from kit.clock import FrozenClock
from kit.ratelimit import RateLimitPolicy, Window
from kit.settings import Settings
from tests.auth.conftest import PASSWORD, in_process_guard, new_email, registered

POLICY = LockoutPolicy()
RELAXED = AuthLimits(login=RateLimitPolicy("login", (Window(1000, 900),)))


def _fail(state: LockoutState, now: float, ticket: str = "t") -> tuple[LockoutState, Any]:
    state, admission = admit(state, POLICY, now, ticket)
    assert admission.is_admitted, admission
    return report(state, POLICY, now, ticket, is_success=False)


class TestRules:
    def test_fifth_failure_locks_for_thirty_minutes(self) -> None:
        """Failures 1-4 only delay; the 5th locks until now + 1800 s."""
        state, now = LockoutState(), 1000.0
        for n in range(1, 6):
            now += 10
            state, result = _fail(state, now)
            assert result.failures == n
        assert result.is_locked
        assert result.is_newly_locked
        assert state.locked_until == now + 1800

    def test_progressive_delays(self) -> None:
        """After failure n the next guess waits 0, 1, 2, 4 seconds."""
        state, now = LockoutState(), 0.0
        for delay in (0.0, 1.0, 2.0, 4.0):
            state, _ = _fail(state, now)
            if delay:
                _, early = admit(state, POLICY, now + delay - 0.5, "x")
                assert not early.is_admitted
                assert not early.is_locked
                assert early.retry_after_s == pytest.approx(0.5)
            now += delay

    def test_failures_while_locked_do_not_extend(self) -> None:
        """A locked account refuses admission, and a late report does not move the lock."""
        state, now = LockoutState(), 0.0
        for _ in range(5):
            now += 5
            state, _ = _fail(state, now)
        locked_until = state.locked_until
        _, refused = admit(state, POLICY, now + 60, "x")
        assert refused.is_locked
        assert not refused.is_admitted
        state, result = report(state, POLICY, now + 60, "late", is_success=False)
        assert state.locked_until == locked_until
        assert result.failures == 5

    def test_lock_ends_and_success_resets(self) -> None:
        """After 30 minutes the slate is clean; a success clears failures at once."""
        state, now = LockoutState(), 0.0
        for _ in range(5):
            now += 5
            state, _ = _fail(state, now)
        _, admission = admit(state, POLICY, now + 1801, "y")
        assert admission.is_admitted
        state, _ = _fail(LockoutState(), 0.0)
        state, admission = admit(state, POLICY, 10.0, "z")
        state, result = report(state, POLICY, 10.0, "z", is_success=True)
        assert result.failures == 0
        assert state == LockoutState()

    def test_failures_leave_the_window(self) -> None:
        """Failures older than 15 minutes no longer count."""
        state, _ = _fail(LockoutState(), 0.0)
        state, result = _fail(state, 901.0)
        assert result.failures == 1

    def test_admission_never_exceeds_the_threshold(self) -> None:
        """With guesses in flight, at most 5 are admitted before any is reported."""
        state, admitted = LockoutState(), 0
        for index in range(20):
            state, admission = admit(state, POLICY, 0.0, f"t{index}")
            admitted += admission.is_admitted
        assert admitted == 5


DB = pytest.mark.db


@DB
class TestGuard:
    async def test_twenty_parallel_guesses_count_exactly_five(
        self, redis_client: aioredis.Redis, settings: Settings, clock: FrozenClock
    ) -> None:
        """20 concurrent admissions: 5 admitted, 5 failures recorded, the account locked."""
        guard = in_process_guard(redis_client, settings, clock)
        account = account_key(new_email())
        admissions = await asyncio.gather(*(guard.admit_login(account) for _ in range(20)))
        admitted = [a for a in admissions if a.is_admitted]
        assert len(admitted) == 5
        results = await asyncio.gather(
            *(
                guard.report_login(account, ticket=a.ticket or "", is_success=False)
                for a in admitted
            )
        )
        assert max(r.failures for r in results) == 5
        assert sum(r.is_newly_locked for r in results) == 1
        assert (await guard.admit_login(account)).is_locked

    async def test_lock_survives_a_restart(
        self, redis_client: aioredis.Redis, settings: Settings, clock: FrozenClock
    ) -> None:
        """A new guard (nothing in memory) reads the lock back from Redis."""
        account = account_key(new_email())
        first = in_process_guard(redis_client, settings, clock)
        for _ in range(5):
            clock.advance(5)
            admission = await first.admit_login(account)
            await first.report_login(account, ticket=admission.ticket or "", is_success=False)
        restarted = in_process_guard(redis_client, settings, clock)
        assert (await restarted.admit_login(account)).is_locked


def _shape(response: httpx.Response) -> tuple[int, dict[str, Any], str | None]:
    body = response.json()
    body.pop("request_id", None)
    return response.status_code, body, response.headers.get("retry-after")


@DB
class TestIdenticalAnswers:
    async def test_unknown_wrong_and_locked_answer_the_same(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """The three refusals are the same 401 body; the right password while locked too."""
        deps.limits = RELAXED
        account = await registered(client)
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": new_email(), "password": "Wrong-Password-11"}
        )
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "Wrong-Password-11"}
        )
        for _ in range(4):
            clock.advance(5)
            await client.post(
                "/api/v1/auth/login", json={"email": account.email, "password": "Wrong-Password-11"}
            )
        clock.advance(5)
        locked = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert _shape(unknown) == _shape(wrong) == _shape(locked)
        assert unknown.status_code == 401
        assert unknown.json()["code"] == "AUTH_INVALID_CREDENTIALS"

    async def test_unknown_email_is_locked_like_a_real_one(
        self, client: httpx.AsyncClient, deps: AuthDependencies, clock: FrozenClock
    ) -> None:
        """Throttling and lockout never reveal whether an address is registered."""
        deps.limits = RELAXED
        email = new_email()
        answers = []
        for _ in range(6):
            answers.append(
                await client.post(
                    "/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-11"}
                )
            )
            answers.append(
                await client.post(
                    "/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-11"}
                )
            )
            clock.advance(5)
        codes = {r.json()["code"] for r in answers}
        assert codes == {"AUTH_INVALID_CREDENTIALS", "AUTH_LOGIN_THROTTLED"}
        throttled = next(r for r in answers if r.status_code == 429)
        assert int(throttled.headers["retry-after"]) >= 1

    async def test_twenty_parallel_wrong_passwords_over_http(
        self, client: httpx.AsyncClient, deps: AuthDependencies
    ) -> None:
        """20 concurrent wrong logins: exactly 5 password checks fail, one lock is audited."""
        deps.limits = RELAXED
        account = await registered(client)
        body = {"email": account.email, "password": "Wrong-Password-11"}
        answers = await asyncio.gather(
            *(client.post("/api/v1/auth/login", json=body) for _ in range(20))
        )
        assert {r.status_code for r in answers} <= {401, 429}
        async with deps.db.connection() as conn:
            rows = await conn.fetch(
                "SELECT new_values FROM audit_log WHERE changed_by = (SELECT id FROM users"
                " WHERE email = $1)"
                " AND new_values->>'event' IN ('auth.login_failed', 'auth.locked_out')",
                account.email,
            )
        events = [r["new_values"] for r in rows]
        wrong = [e for e in events if e.get("reason") == "wrong_password"]
        assert len(wrong) == 5
        assert sum(e["event"] == "auth.locked_out" for e in events) == 1
        assert all(
            "password" not in str(v).lower() or k in {"factor", "reason", "event"}
            for e in events
            for k, v in e.items()
        )

    async def test_login_rate_limit_per_account(self, client: httpx.AsyncClient) -> None:
        """The seed's 5 logins per 15 minutes per account: the 6th attempt is 429."""
        email = new_email()
        answers = [
            await client.post(
                "/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-11"}
            )
            for _ in range(6)
        ]
        assert answers[-1].status_code == 429
        assert answers[-1].json()["code"] == "AUTH_RATE_LIMITED"
