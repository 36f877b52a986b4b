"""UserShard actors on a real local Ray: lockout under 20 parallel attempts, restarts, limits.

Goal: prove the deployed shape (named, detached, restartable actors reached through the
coalescing `UserShardClient`) keeps the lockout exact and durable. Method: one local Ray for
this module (the only Ray test module of the identity area), whose job environment carries the
test Redis; two shards; 20 concurrent wrong-password rounds for one account through the client;
then the owning actor is killed and restarted by Ray, and the lock must still hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors.routing import NAMESPACE, actor_name, shard_for
from actors.user_client import UserShardClient
from auth.lockout import account_key
from kit.ratelimit import RateLimitPolicy, Window
from kit.settings import Settings
from tests.auth.conftest import new_email

pytestmark = [pytest.mark.ray, pytest.mark.db]

SHARDS = 2
RESTART_WAIT_S = 60.0


@pytest.fixture(scope="module")
def local_ray(settings: Settings, redis_url: str) -> Iterator[None]:
    """One local Ray whose workers see the test Redis; the shards are killed at the end."""
    env = {
        "REDIS_URL": redis_url,
        "DWAYBANK_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "DWAYBANK_DATA_DIR": str(settings.data_dir),
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace="dwaybank-identity-test",
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        yield
    finally:
        for index in range(SHARDS):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(actor_name("user", index), namespace=NAMESPACE))
        ray.shutdown()


@pytest.fixture
async def shard_client(local_ray: None, settings: Settings) -> UserShardClient:
    """The ingress-side client over two shards."""
    return await UserShardClient.connect(settings.model_copy(update={"user_shard_count": SHARDS}))


class TestLockoutOnShards:
    async def test_twenty_parallel_wrong_attempts_lock_after_exactly_five(
        self, shard_client: UserShardClient
    ) -> None:
        """20 concurrent guesses: 5 admitted, 5 failures counted, one lock, the rest refused."""
        account = account_key(new_email())
        admissions = await asyncio.gather(*(shard_client.admit_login(account) for _ in range(20)))
        admitted = [a for a in admissions if a.is_admitted]
        assert len(admitted) == 5
        results = await asyncio.gather(
            *(
                shard_client.report_login(account, ticket=a.ticket or "", is_success=False)
                for a in admitted
            )
        )
        assert sorted(r.failures for r in results) == [1, 2, 3, 4, 5]
        assert sum(r.is_newly_locked for r in results) == 1
        again = await asyncio.gather(*(shard_client.admit_login(account) for _ in range(20)))
        assert all(a.is_locked and not a.is_admitted for a in again)

    async def test_lock_survives_an_actor_restart(self, shard_client: UserShardClient) -> None:
        """Kill the owning shard; Ray restarts it empty; the lock comes back from Redis."""
        account = account_key(new_email())
        admissions = await asyncio.gather(*(shard_client.admit_login(account) for _ in range(5)))
        for admission in admissions:
            await shard_client.report_login(
                account, ticket=admission.ticket or "", is_success=False
            )
        index = shard_for(account, SHARDS)
        handle: Any = ray.get_actor(actor_name("user", index), namespace=NAMESPACE)
        before = await handle.instance_id.remote()
        ray.kill(handle, no_restart=False)
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                if await asyncio.wait_for(handle.instance_id.remote(), timeout=5) != before:
                    break
            except (ray.exceptions.RayError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "the shard did not restart"
            await asyncio.sleep(0.5)
        fresh = await UserShardClient.connect(
            Settings().model_copy(update={"user_shard_count": SHARDS})
        )
        assert (await fresh.admit_login(account)).is_locked


class TestRateLimitsOnShards:
    async def test_limits_are_exact_across_a_batch(self, shard_client: UserShardClient) -> None:
        """30 concurrent hits against 5-per-15-minutes: exactly 5 allowed."""
        policy = RateLimitPolicy("login", (Window(5, 900),))
        key = f"ip-{new_email()}"
        decisions = await asyncio.gather(*(shard_client.check_rate(key, policy) for _ in range(30)))
        assert sum(d.is_allowed for d in decisions) == 5
        refused = next(d for d in decisions if not d.is_allowed)
        assert refused.headers()["Retry-After"] == "900"
