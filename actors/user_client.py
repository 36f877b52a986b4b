"""The ingress side of the `UserShard` actors: routing, coalescing, and the `LoginGuard` API.

API (the gateway uses the same client for its per-route limits):

    client = await UserShardClient.connect(settings)        # once per replica
    decision = await client.check_rate("ip-203.0.113.9", policy)   # kit.ratelimit decision
    admission = await client.admit_login(account)            # auth.lockout.Admission
    result = await client.report_login(account, ticket=admission.ticket, is_success=False)

Every call is routed to shard `shard_for(key, settings.user_shard_count)` and goes through that
shard's `Coalescer`: one call in flight per shard (a second only while a full call waits),
whatever piled up meanwhile rides in the next call (up to 256 operations). An operation's own failure is raised to its caller only;
a failed call (the actor died or restarts) raises `ClusterUnavailableError` (503) to every
caller in it, and nothing is retried (a lockout report must never count twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ray.exceptions import RayError

from actors.coalescer import Coalescer
from actors.routing import shard_for
from actors.user_shard import (
    BATCH_SIZE_MAX,
    LockoutReset,
    LoginAdmit,
    LoginReport,
    RateCheck,
    RatePeek,
    UserOp,
    UserResult,
    get_or_create_shard,
)
from auth.lockout import Admission, AttemptResult
from kit.errors import ClusterUnavailableError, InvariantError
from kit.ratelimit import RateLimitDecision, RateLimitPolicy
from kit.settings import Settings


class UserShardClient:
    """A `LoginGuard` (and rate limiter) backed by the UserShard actors."""

    def __init__(self, handles: Sequence[Any]) -> None:
        if not handles:
            raise ValueError("at least one shard is needed")
        self._handles = list(handles)
        self._coalescers = [
            Coalescer(self._sender(handle), batch_size_max=BATCH_SIZE_MAX) for handle in handles
        ]

    @classmethod
    async def connect(cls, settings: Settings) -> UserShardClient:
        """Get or create every shard of the configured count."""
        count = settings.user_shard_count

        def handles() -> list[Any]:
            return [get_or_create_shard(index) for index in range(count)]

        try:
            return cls(await asyncio.to_thread(handles))
        except RayError as exc:
            raise ClusterUnavailableError("the user shards could not be reached") from exc

    @property
    def shard_count(self) -> int:
        """How many shards keys are spread over."""
        return len(self._handles)

    @staticmethod
    def _sender(handle: Any) -> Any:
        async def send(ops: list[UserOp]) -> Sequence[UserResult | BaseException]:
            try:
                results: list[UserResult | BaseException] = await handle.run_batch.remote(ops)
            except RayError as exc:
                raise ClusterUnavailableError("a user shard did not answer") from exc
            return results

        return send

    async def _submit(self, op: UserOp) -> UserResult:
        index = shard_for(op.route_key, len(self._handles))
        result: UserResult = await self._coalescers[index].submit(op)
        return result

    async def check_rate(
        self, key: str, policy: RateLimitPolicy, *, cost: int = 1
    ) -> RateLimitDecision:
        """Count `cost` hits of `key` against `policy`."""
        result = await self._submit(RateCheck(key=key, policy=policy, cost=cost))
        if not isinstance(result, RateLimitDecision):
            raise InvariantError("a user shard answered a rate check with something else")
        return result

    async def peek_rate(self, key: str, policy: RateLimitPolicy) -> RateLimitDecision:
        """The state of `key` under `policy`, counting nothing."""
        result = await self._submit(RatePeek(key=key, policy=policy))
        if not isinstance(result, RateLimitDecision):
            raise InvariantError("a user shard answered a rate peek with something else")
        return result

    async def reset_lockout(self, account: str) -> None:
        """Clear an account's failures and lock."""
        await self._submit(LockoutReset(account=account))

    async def admit_login(self, account: str) -> Admission:
        """Admit or refuse one password guess."""
        result = await self._submit(LoginAdmit(account=account))
        if not isinstance(result, Admission):
            raise InvariantError("a user shard answered an admission with something else")
        return result

    async def report_login(self, account: str, *, ticket: str, is_success: bool) -> AttemptResult:
        """Report an admitted guess's outcome."""
        result = await self._submit(
            LoginReport(account=account, ticket=ticket, is_success=is_success)
        )
        if not isinstance(result, AttemptResult):
            raise InvariantError("a user shard answered a report with something else")
        return result

    async def ping(self) -> list[int]:
        """Every shard's index (readiness)."""
        try:
            answers: list[int] = await asyncio.gather(*(h.ping.remote() for h in self._handles))
        except RayError as exc:
            raise ClusterUnavailableError("a user shard did not answer") from exc
        return answers
