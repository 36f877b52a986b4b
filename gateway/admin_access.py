"""The admin surface's IP allow-list (the seed's private ranges by default), answered 403.

As Kong's `ip-restriction`: the deny list is checked first, then the allow list. The address is
the one `ClientAddressResolver` found, so a client cannot talk its way in with a spoofed
`X-Forwarded-For` unless it connects from a configured trusted proxy. A client whose address
could not be determined is refused. The admin role in the token is checked after
authentication (`gateway.authentication`); the address check comes first and costs nothing.
"""

from __future__ import annotations

from gateway.edge import Decision, EdgeState, parse_address
from gateway.errors import AddressNotAllowedError
from gateway.policy import AdminAccessPolicy


class AdminAddressCheck:
    """403 for admin routes called from outside the allow-list."""

    def __init__(self, policy: AdminAccessPolicy) -> None:
        self._policy = policy

    def is_allowed(self, client_ip: str | None) -> bool:
        """True when `client_ip` may call admin routes."""
        address = None if client_ip is None else parse_address(client_ip)
        if address is None:
            return False
        if any(address in network for network in self._policy.deny):
            return False
        return any(address in network for network in self._policy.allow)

    def refusal(self, edge: EdgeState) -> AddressNotAllowedError | None:
        """The error to answer `edge`'s request with, or None when it may pass."""
        if edge.route.is_admin and not self.is_allowed(edge.client_ip):
            edge.decision = Decision.DENY_ADDRESS
            return AddressNotAllowedError()
        return None
