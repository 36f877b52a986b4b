"""The UserShard's behaviour without Ray: batches answer per item, per key in order.

`UserShardCore` is exactly what the actor runs; here it runs in the test's event loop over the
real Redis, so the batch contract (one result per item, an item's exception as its result,
per-account serialisation, write-through of lockout state) is checked without a cluster.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from actors.user_shard import BATCH_SIZE_MAX, LoginAdmit, LoginReport, RateCheck, UserShardCore
from auth.lockout import Admission, AttemptResult, LockoutPolicy, account_key
from kit.clock import FrozenClock
from kit.errors import InvariantError
from kit.ratelimit import RateLimitDecision, RateLimitPolicy, Window
from kit.redis_client import KeySpace
from kit.settings import Settings
from tests.auth.conftest import new_email

pytestmark = pytest.mark.db

POLICY = RateLimitPolicy("login", (Window(5, 900),))


@pytest.fixture
def core(redis_client: aioredis.Redis, settings: Settings) -> UserShardCore:
    clock = FrozenClock(datetime.now(UTC))
    return UserShardCore(redis_client, KeySpace(settings.redis_key_prefix), LockoutPolicy(), clock)


class TestBatches:
    async def test_one_result_per_item_in_order(self, core: UserShardCore) -> None:
        """A mixed batch answers a decision, an admission and a report, in order."""
        account = account_key(new_email())
        (admission,) = await core.run_batch([LoginAdmit(account)])
        assert isinstance(admission, Admission)
        assert admission.ticket
        results = await core.run_batch(
            [
                RateCheck("ip-198.51.100.1", POLICY),
                LoginReport(account, admission.ticket, is_success=False),
                LoginAdmit(account),
            ]
        )
        assert isinstance(results[0], RateLimitDecision)
        assert results[0].is_allowed
        assert isinstance(results[1], AttemptResult)
        assert results[1].failures == 1
        assert isinstance(results[2], Admission)
        assert results[2].is_admitted

    async def test_item_failure_is_that_items_answer(self, core: UserShardCore) -> None:
        """A bad item (an invalid key) fails alone; its neighbours succeed."""
        results = await core.run_batch([RateCheck("", POLICY), RateCheck("ok", POLICY)])
        assert isinstance(results[0], ValueError)
        assert isinstance(results[1], RateLimitDecision)

    async def test_oversized_batches_are_refused(self, core: UserShardCore) -> None:
        """More than BATCH_SIZE_MAX items fail every item with an InvariantError."""
        results = await core.run_batch([RateCheck("k", POLICY)] * (BATCH_SIZE_MAX + 1))
        assert all(isinstance(r, InvariantError) for r in results)

    async def test_twenty_parallel_admissions_admit_five(self, core: UserShardCore) -> None:
        """One batch of 20 admissions for one account admits exactly 5 (the mailbox serialises)."""
        account = account_key(new_email())
        results = await core.run_batch([LoginAdmit(account)] * 20)
        assert sum(isinstance(r, Admission) and r.is_admitted for r in results) == 5

    async def test_lock_is_written_through(self, core: UserShardCore) -> None:
        """After five failures the lock is in Redis: a cold cache reads it back."""
        account = account_key(new_email())
        admissions = await core.run_batch([LoginAdmit(account)] * 5)
        tickets = [a.ticket for a in admissions if isinstance(a, Admission) and a.ticket]
        reports = await asyncio.gather(
            *(core.run_batch([LoginReport(account, t, is_success=False)]) for t in tickets)
        )
        assert sum(r[0].is_newly_locked for r in reports if isinstance(r[0], AttemptResult)) == 1
        core.forget_cache()
        (after,) = await core.run_batch([LoginAdmit(account)])
        assert isinstance(after, Admission)
        assert after.is_locked
