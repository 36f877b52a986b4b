"""The edge's rate limiter in the cluster: the user shard actors' exact sliding logs.

Each check goes to the shard that owns its key (`rule|subject`), coalesced per shard by
`UserShardClient`; the shard's `kit.ratelimit` limiter decides, so every ingress replica shares
one count per key. An unreachable shard raises `DependencyError`, and the edge fails closed on
money-moving routes and open elsewhere.
"""

from __future__ import annotations

from actors.user_client import UserShardClient
from gateway.limiter import LimitDecision, LimitRequest, limit_decision, limit_policy


class ShardRateLimiter:
    """A `gateway.limiter.RateLimiter` over the user shards."""

    def __init__(self, client: UserShardClient) -> None:
        self._client = client

    async def check(self, request: LimitRequest) -> LimitDecision:
        """Count `request` on its key's shard."""
        decision = await self._client.check_rate(
            request.key, limit_policy(request), cost=request.cost
        )
        return limit_decision(request, decision)

    async def peek(self, request: LimitRequest) -> LimitDecision:
        """The state of `request`'s key on its shard, counting nothing."""
        decision = await self._client.peek_rate(request.key, limit_policy(request))
        return limit_decision(request, decision)
