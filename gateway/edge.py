"""The per-request state the edge policies share, read from the request in one pass.

The edge (`gateway.stack`) resolves the route, the client address and the few headers the
policies look at, once, into an `EdgeState`; each policy reads it and records its decision
there, and the observer turns it into metrics and the audit line when the response is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from starlette.types import Scope

from gateway.constants import FORWARDED_HOPS_MAX
from gateway.policy import ClientAddressPolicy
from gateway.principal import Principal
from gateway.routes import RouteInfo

UNKNOWN_ADDRESS: Final = "unknown"  # a hop we could not parse: never allowed, one shared bucket

(
    _USER_AGENT,
    _AUTHORIZATION,
    _FORWARDED,
    _ORIGIN,
    _CONTENT_LENGTH,
    _TRANSFER_ENCODING,
    _EXPECT,
    _PREFLIGHT,
) = range(8)
_WANTED: Final = {
    b"user-agent": _USER_AGENT,
    b"authorization": _AUTHORIZATION,
    b"x-forwarded-for": _FORWARDED,
    b"origin": _ORIGIN,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
    b"access-control-request-method": _PREFLIGHT,
}


class Decision(StrEnum):
    """What the edge decided about a request; the audit line's `decision`."""

    ALLOW = "allow"
    DENY_BODY_SIZE = "deny_body_size"
    DENY_NUL_IN_URL = "deny_nul_in_url"
    DENY_USER_AGENT = "deny_user_agent"
    DENY_ADDRESS = "deny_address"
    CORS_PREFLIGHT = "cors_preflight"
    CORS_PREFLIGHT_DENIED = "cors_preflight_denied"
    DENY_TOKEN_MISSING = "deny_token_missing"  # noqa: S105 - a decision's name, not a secret
    DENY_TOKEN_INVALID = "deny_token_invalid"  # noqa: S105 - a decision's name, not a secret
    DENY_ADMIN_ROLE = "deny_admin_role"
    DENY_STEP_UP = "deny_step_up"
    DENY_RATE_LIMIT = "deny_rate_limit"
    DENY_LIMITER_UNAVAILABLE = "deny_limiter_unavailable"
    ALLOW_LIMITER_UNAVAILABLE = "allow_limiter_unavailable"
    ERROR = "error"


@dataclass(slots=True)
class EdgeState:
    """Everything the edge knows and decided about one request."""

    route: RouteInfo
    client_ip: str | None
    user_agents: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    origin: str | None = None
    content_length: str | None = None
    has_transfer_encoding: bool = False  # a body may follow without a Content-Length
    has_expect_continue: bool = False
    is_preflight: bool = False
    principal: Principal | None = None
    decision: Decision = Decision.ALLOW
    limit_headers: list[tuple[bytes, bytes]] | None = None  # the rate-limit headers to send


class ClientAddressResolver:
    """The client address: the peer, or the right-most untrusted `X-Forwarded-For` hop.

    `X-Forwarded-For` is believed only when the TCP peer is a trusted proxy. The chain is then
    walked from the right (the hop the trusted proxy itself saw) and the first address that is
    not a trusted proxy is the client; everything to its left was written by the client and is
    ignored. A hop that is not an address ends the walk with `UNKNOWN_ADDRESS`.
    """

    def __init__(self, policy: ClientAddressPolicy) -> None:
        self._trusted = policy.trusted_proxies

    def resolve(self, peer: str | None, forwarded: list[bytes]) -> str | None:
        """The client address of a request from `peer` with these X-Forwarded-For values."""
        if peer is None or not forwarded or not self._trusted:
            return peer
        peer_address = parse_address(peer)
        if peer_address is None or not self._is_trusted(peer_address):
            return peer
        hops = [hop.strip() for value in forwarded for hop in value.decode("latin-1").split(",")]
        client: IPv4Address | IPv6Address | None = None
        for hop in reversed(hops[-FORWARDED_HOPS_MAX:]):
            client = parse_address(hop)
            if client is None:
                return UNKNOWN_ADDRESS
            if not self._is_trusted(client):
                return str(client)
        return peer if client is None else str(client)

    def _is_trusted(self, address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in self._trusted)


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """The address in `text` (IPv4-mapped IPv6 as IPv4), or None when it is not one."""
    try:
        address = ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def read_edge_state(scope: Scope, route: RouteInfo, resolver: ClientAddressResolver) -> EdgeState:
    """One pass over the request headers into a fresh `EdgeState`."""
    user_agents: list[str] = []
    authorizations: list[str] = []
    forwarded: list[bytes] = []
    origin: str | None = None
    content_length: str | None = None
    has_transfer_encoding = has_expect_continue = has_request_method = False
    for name, value in scope["headers"]:
        slot = _WANTED.get(name)
        if slot is None:
            continue
        if slot == _USER_AGENT:
            user_agents.append(value.decode("latin-1"))
        elif slot == _AUTHORIZATION:
            authorizations.append(value.decode("latin-1"))
        elif slot == _FORWARDED:
            forwarded.append(value)
        elif slot == _ORIGIN:
            origin = value.decode("latin-1")
        elif slot == _CONTENT_LENGTH:
            content_length = value.decode("latin-1")
        elif slot == _TRANSFER_ENCODING:
            has_transfer_encoding = True
        elif slot == _EXPECT:
            has_expect_continue = value.lower() == b"100-continue"
        else:
            has_request_method = True
    client = scope.get("client")
    peer = client[0] if client else None
    return EdgeState(
        route=route,
        client_ip=resolver.resolve(peer, forwarded),
        user_agents=user_agents,
        authorizations=authorizations,
        origin=origin,
        content_length=content_length,
        has_transfer_encoding=has_transfer_encoding,
        has_expect_continue=has_expect_continue,
        is_preflight=scope["method"] == "OPTIONS" and origin is not None and has_request_method,
    )
