"""Bot detection over real HTTP: the seed's list and scanners are 403, browsers and SDKs pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from gateway.policy import BotPolicy, GatewayPolicy
from tests.gateway.conftest import BROWSER

ROUTE = "/api/v1/wallets/balance"  # an ordinary route (no verifier: it takes no token here)


@pytest.fixture(scope="module")
def base_url(serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]) -> str:
    return serve(edge_app(with_verifier=False))


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


class TestDenyList:
    @pytest.mark.parametrize(
        "user_agent",
        [
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.32.3",
            "sqlmap/1.8#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "Mozilla/5.0 zgrab/0.x",
            "Mozilla/5.0 (Windows NT 10.0) Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
        ],
    )
    def test_denied_user_agent_is_403_problem(self, http: httpx.Client, user_agent: str) -> None:
        """The seed's user agents and common scanners get a 403 problem document."""
        response = http.get(ROUTE, headers={"User-Agent": user_agent})
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "GW_BOT_DENIED"

    @pytest.mark.parametrize(
        "user_agent", [BROWSER, "DwayBank-iOS/3.2 (iPhone; iOS 18.0)", "okhttp/4.12"]
    )
    def test_ordinary_clients_pass(self, http: httpx.Client, user_agent: str) -> None:
        """Browsers and app SDKs are not bots."""
        response = http.get(ROUTE, headers={"User-Agent": user_agent})
        assert response.status_code == 200

    def test_missing_user_agent_passes(self, base_url: str) -> None:
        """As in Kong, a request without a User-Agent is let through by default."""
        with httpx.Client(base_url=base_url, timeout=30) as client:
            client.headers.pop("User-Agent")
            response = client.get(ROUTE)
        assert response.status_code == 200

    def test_two_user_agents_are_400(self, http: httpx.Client) -> None:
        """Two User-Agent headers are ambiguous and refused."""
        response = http.get(ROUTE, headers=[("User-Agent", BROWSER), ("User-Agent", "curl/8")])
        assert response.status_code == 400
        assert response.json()["code"] == "GW_USER_AGENT_AMBIGUOUS"


class TestExemptRoutes:
    @pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
    def test_probes_pass_whatever_their_user_agent(self, http: httpx.Client, path: str) -> None:
        """A `curl` health check or a scraper reaches health and metrics; the rest stays 403."""
        assert http.get(path, headers={"User-Agent": "curl/8.5.0"}).status_code == 200
        assert http.get(ROUTE, headers={"User-Agent": "curl/8.5.0"}).status_code == 403


class TestConfiguration:
    def test_allow_list_wins_over_deny_list(
        self, serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]
    ) -> None:
        """A user agent on the allow list passes even when a deny pattern matches it."""
        policy = GatewayPolicy(bots=BotPolicy(allow=(r"^curl/.*dwaybank-monitor",)))
        base_url = serve(edge_app(policy=policy, with_verifier=False))
        with httpx.Client(base_url=base_url, timeout=30) as http:
            allowed = http.get(ROUTE, headers={"User-Agent": "curl/8 dwaybank-monitor"})
            denied = http.get(ROUTE, headers={"User-Agent": "curl/8"})
        assert allowed.status_code == 200
        assert denied.status_code == 403

    def test_missing_user_agent_can_be_refused(
        self, serve: Callable[[FastAPI], str], edge_app: Callable[..., FastAPI]
    ) -> None:
        """With `allow_missing: false` a request without a User-Agent is a 403."""
        policy = GatewayPolicy(bots=BotPolicy(allow_missing=False))
        base_url = serve(edge_app(policy=policy, with_verifier=False))
        with httpx.Client(base_url=base_url, timeout=30) as http:
            http.headers.pop("User-Agent")
            response = http.get(ROUTE)
        assert response.status_code == 403
