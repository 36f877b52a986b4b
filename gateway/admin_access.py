"""The admin surface's IP allow-list (the seed's private ranges by default), answered 403.

As Kong's `ip-restriction`: the deny list is checked first, then the allow list. The address is
the one `ClientAddressResolver` found, so a client cannot talk its way in with a spoofed
`X-Forwarded-For` unless it connects from a configured trusted proxy. A client whose address
could not be determined is refused. The admin role in the token is checked after
authentication (`gateway.authentication`); the address check comes first and costs nothing.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.edge import Decision, edge_state, parse_address
from gateway.errors import AddressNotAllowedError
from gateway.policy import AdminAccessPolicy
from gateway.problems import ErrorStyle, send_error


class AdminAddressMiddleware:
    """403 for admin routes called from outside the allow-list."""

    def __init__(self, app: ASGIApp, *, policy: AdminAccessPolicy, style: ErrorStyle) -> None:
        self.app = app
        self._policy = policy
        self._style = style

    def is_allowed(self, client_ip: str | None) -> bool:
        """True when `client_ip` may call admin routes."""
        address = None if client_ip is None else parse_address(client_ip)
        if address is None:
            return False
        if any(address in network for network in self._policy.deny):
            return False
        return any(address in network for network in self._policy.allow)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        edge = edge_state(scope)
        if edge.route.is_admin and not self.is_allowed(edge.client_ip):
            edge.decision = Decision.DENY_ADDRESS
            await send_error(scope, receive, send, AddressNotAllowedError(), style=self._style)
            return
        await self.app(scope, receive, send)
