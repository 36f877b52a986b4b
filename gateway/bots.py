"""Bot detection: a configurable deny list of user-agent patterns, answered 403.

As Kong's `bot-detection`: the allow list is checked first, then the deny list (the seed's
`curl`, `wget`, `python-requests`, plus common scanners); a request without a User-Agent passes
unless the policy says otherwise; two User-Agent headers are a 400. Health and metrics routes
are exempt (`bots.exempt`), so probes and scrapers work whatever tool they are. Verdicts are cached per
User-Agent string (bounded), since a handful of them make up nearly all traffic.
"""

from __future__ import annotations

import re

from gateway.constants import USER_AGENT_CACHE_SIZE_MAX, USER_AGENT_LENGTH_MAX
from gateway.edge import Decision, EdgeState
from gateway.errors import AmbiguousUserAgentError, BotDeniedError
from gateway.policy import BotPolicy
from kit.errors import AppError


def _combined(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns), re.IGNORECASE)


class BotDetection:
    """403 for denied user agents."""

    def __init__(self, policy: BotPolicy) -> None:
        self._allow = _combined(policy.allow)
        self._deny = _combined(policy.deny)
        self._allow_missing = policy.allow_missing
        self._verdicts: dict[str, bool] = {}

    def is_denied(self, user_agent: str) -> bool:
        """True when `user_agent` is refused."""
        verdict = self._verdicts.get(user_agent)
        if verdict is None:
            head = user_agent[:USER_AGENT_LENGTH_MAX]
            if self._allow is not None and self._allow.search(head):
                verdict = False
            else:
                verdict = self._deny is not None and self._deny.search(head) is not None
            if len(self._verdicts) >= USER_AGENT_CACHE_SIZE_MAX:
                self._verdicts.clear()
            self._verdicts[user_agent] = verdict
        return verdict

    def refusal(self, edge: EdgeState) -> AppError | None:
        """The error to answer `edge`'s request with, or None when it may pass."""
        if edge.route.is_bot_exempt:
            return None
        user_agents = edge.user_agents
        if len(user_agents) > 1:
            edge.decision = Decision.DENY_USER_AGENT
            return AmbiguousUserAgentError()
        is_denied = self.is_denied(user_agents[0]) if user_agents else not self._allow_missing
        if is_denied:
            edge.decision = Decision.DENY_USER_AGENT
            return BotDeniedError()
        return None
