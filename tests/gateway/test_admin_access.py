"""The admin IP allow-list and the client address behind proxies.

Over HTTP the TCP peer is always 127.0.0.1, so two servers are started: one that trusts no
proxy (loopback is then an ordinary, untrusted client) and one that trusts loopback as its load
balancer. The resolver's walk over `X-Forwarded-For` is also checked directly, case by case.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_network

import httpx
import pytest
from fastapi import FastAPI

from gateway.edge import UNKNOWN_ADDRESS, ClientAddressResolver
from gateway.policy import AdminAccessPolicy, ClientAddressPolicy, GatewayPolicy

ADMIN = "/api/v1/admin/users"


@pytest.fixture(scope="module")
def untrusting_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    """No trusted proxy: the peer (127.0.0.1, outside the private ranges) is the client."""
    return serve(edge_app(with_verifier=False))


@pytest.fixture(scope="module")
def behind_proxy_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    """Loopback is the trusted load balancer; so is 10.0.0.2, an inner proxy."""
    policy = GatewayPolicy(
        client_address=ClientAddressPolicy(
            trusted_proxies=(ip_network("127.0.0.1/32"), ip_network("10.0.0.2/32"))
        )
    )
    return serve(edge_app(policy=policy, with_verifier=False))


def _get(base_url: str, forwarded: str | None = None) -> httpx.Response:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        return http.get(ADMIN, headers=headers)


class TestUntrustedPeer:
    def test_public_address_is_refused(self, untrusting_url: str) -> None:
        """A client outside the private ranges gets a 403 problem document."""
        response = _get(untrusting_url)
        assert response.status_code == 403
        assert response.json()["code"] == "GW_ADDRESS_NOT_ALLOWED"

    def test_spoofed_forwarded_for_is_ignored(self, untrusting_url: str) -> None:
        """A private address in X-Forwarded-For from an untrusted peer changes nothing: 403."""
        response = _get(untrusting_url, forwarded="10.1.2.3")
        assert response.status_code == 403

    def test_non_admin_routes_are_not_restricted(self, untrusting_url: str) -> None:
        """The allow-list covers the admin prefix only."""
        with httpx.Client(base_url=untrusting_url, timeout=30) as http:
            assert http.get("/api/v1/wallets/w1").status_code == 200


class TestTrustedProxy:
    def test_forwarded_private_client_is_allowed(self, behind_proxy_url: str) -> None:
        """Behind the trusted balancer the forwarded private address is the client."""
        assert _get(behind_proxy_url, forwarded="10.1.2.3").status_code == 200

    def test_right_most_untrusted_hop_decides(self, behind_proxy_url: str) -> None:
        """A private address the client prepended is ignored; the hop the proxy saw decides."""
        response = _get(behind_proxy_url, forwarded="10.1.2.3, 203.0.113.9")
        assert response.status_code == 403

    def test_trusted_inner_proxy_is_skipped(self, behind_proxy_url: str) -> None:
        """Hops that are trusted proxies are skipped on the way left."""
        assert _get(behind_proxy_url, forwarded="192.168.7.7, 10.0.0.2").status_code == 200

    def test_garbage_hop_is_refused(self, behind_proxy_url: str) -> None:
        """A hop that is not an address leaves the client unknown, which is never allowed."""
        assert _get(behind_proxy_url, forwarded="not-an-ip").status_code == 403

    def test_without_forwarded_for_the_peer_is_the_client(self, behind_proxy_url: str) -> None:
        """No header: the balancer itself (loopback, not private) is the client: 403."""
        assert _get(behind_proxy_url).status_code == 403


class TestResolver:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "expected"),
        [
            ("203.0.113.5", [], "203.0.113.5"),
            ("203.0.113.5", [b"10.0.0.9"], "203.0.113.5"),
            ("10.0.0.1", [b"198.51.100.7"], "198.51.100.7"),
            ("10.0.0.1", [b"1.1.1.1, 198.51.100.7"], "198.51.100.7"),
            ("10.0.0.1", [b"1.1.1.1", b"198.51.100.7, 10.0.0.3"], "198.51.100.7"),
            ("10.0.0.1", [b"10.0.0.4, 10.0.0.3"], "10.0.0.4"),
            ("10.0.0.1", [b"::ffff:198.51.100.7"], "198.51.100.7"),
            ("10.0.0.1", [b"[2001:db8::1]"], "2001:db8::1"),
            ("10.0.0.1", [b"1.1.1.1, junk"], UNKNOWN_ADDRESS),
        ],
    )
    def test_walk(self, peer: str, forwarded: list[bytes], expected: str) -> None:
        """The client is the right-most hop that is not a trusted proxy (10.0.0.0/29 here)."""
        resolver = ClientAddressResolver(
            ClientAddressPolicy(trusted_proxies=(ip_network("10.0.0.0/29"),))
        )
        assert resolver.resolve(peer, forwarded) == expected

    def test_deny_list_beats_allow_list(
        self, serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]
    ) -> None:
        """An address on the deny list is refused even inside an allowed range."""
        policy = GatewayPolicy(
            client_address=ClientAddressPolicy(trusted_proxies=(ip_network("127.0.0.1/32"),)),
            admin=AdminAccessPolicy(deny=(ip_network("10.66.0.0/16"),)),
        )
        base_url = serve(edge_app(policy=policy, with_verifier=False))
        assert _get(base_url, forwarded="10.66.1.1").status_code == 403
        assert _get(base_url, forwarded="10.67.1.1").status_code == 200
