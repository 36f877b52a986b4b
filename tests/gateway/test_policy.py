"""The policy as configuration, and how requests are matched to routes and rules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from pydantic import BaseModel

from gateway.policy import GatewayPolicy, is_under, load_policy
from gateway.routes import UNMATCHED_ROUTE, RouteTable
from kit.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "config" / "gateway.yaml"


class TestDefaultFile:
    def test_file_holds_exactly_the_defaults(self) -> None:
        """config/gateway.yaml documents the built-in defaults, value for value."""
        assert load_policy(DEFAULT_FILE) == GatewayPolicy()

    def test_file_writes_out_every_key(self) -> None:
        """Every section and key of the model appears in the file, so each one is documented."""
        data = yaml.safe_load(DEFAULT_FILE.read_text())

        def keys(model: BaseModel, prefix: str = "") -> set[str]:
            found: set[str] = set()
            for name in type(model).model_fields:
                found.add(prefix + name)
                value = getattr(model, name)
                if isinstance(value, BaseModel):
                    found |= keys(value, prefix + name + ".")
            return found

        def written(node: object, prefix: str = "") -> set[str]:
            if not isinstance(node, dict):
                return set()
            out: set[str] = set()
            for name, value in node.items():
                out.add(prefix + str(name))
                out |= written(value, prefix + str(name) + ".")
            return out

        missing = keys(GatewayPolicy()) - written(data)
        assert {m for m in missing if not m.startswith("security_headers.headers.")} == set()


class TestServeConfig:
    def test_every_application_names_a_loadable_policy(self) -> None:
        """Each Serve application's `gateway_policy` loads; the public API's is the default."""
        config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        policies = {
            application["name"]: load_policy(Path(application["args"]["gateway_policy"]))
            for application in config["applications"]
        }
        assert policies["api"] == GatewayPolicy()


class TestLoading:
    def test_no_path_means_defaults(self) -> None:
        """Without a file the seed's values apply."""
        assert load_policy(None) == GatewayPolicy()

    def test_partial_file_overrides_only_what_it_names(self, tmp_path: Path) -> None:
        """A test environment can raise one limit and keep everything else."""
        path = tmp_path / "policy.yaml"
        path.write_text(
            "body_limit:\n  bytes_max: 1024\ncors:\n  origins: [http://localhost:3000]\n"
        )
        policy = load_policy(path)
        assert policy.body_limit.bytes_max == 1024
        assert policy.cors.origins == ("http://localhost:3000",)
        assert policy.rate_limits == GatewayPolicy().rate_limits

    def test_empty_file_means_defaults(self, tmp_path: Path) -> None:
        """An empty file is the defaults, not an error."""
        path = tmp_path / "empty.yaml"
        path.write_text("")
        assert load_policy(path) == GatewayPolicy()

    @pytest.mark.parametrize(
        ("text", "where"),
        [
            ("bodylimit: {}\n", "bodylimit"),
            ("body_limit: {bytes_max: -1}\n", "body_limit.bytes_max"),
            ("bots: {deny: ['(unclosed']}\n", "bots.deny"),
            ("cors: {origins: ['https://x.com/path']}\n", "cors.origins"),
            (
                "rate_limits: {rules: [{name: r, routes: [/x], windows: "
                "[{name: minute, seconds: 60, limit: 10}, {name: hour, seconds: 3600, limit: 5}]}]}\n",
                "rate_limits.rules.0",
            ),
            ("auth: {public: [{path: /x, methods: [FETCH]}]}\n", "auth.public.0.methods"),
            # beyond what the exact limiter keeps a log for: refused at load, not a 500 later
            (
                "rate_limits: {rules: [{name: r, routes: [/x], windows: "
                "[{name: minute, seconds: 60, limit: 200000}]}]}\n",
                "rate_limits.rules.0.windows.0.limit",
            ),
            (
                "rate_limits: {rules: [{name: r, routes: [/x], windows: "
                "[{name: month, seconds: 2678400, limit: 10}]}]}\n",
                "rate_limits.rules.0.windows.0.seconds",
            ),
            (
                "rate_limits: {rules: [{name: r, routes: [/x], tier_multipliers: {enterprise: 10},"
                " windows: [{name: minute, seconds: 60, limit: 20000}]}]}\n",
                "rate_limits.rules.0",
            ),
        ],
    )
    def test_bad_values_name_the_key(self, tmp_path: Path, text: str, where: str) -> None:
        """A mistake stops the replica with one line naming the key."""
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ConfigurationError) as caught:
            load_policy(path)
        assert where in caught.value.message

    def test_missing_file_is_a_configuration_error(self, tmp_path: Path) -> None:
        """A path that does not exist is refused, not silently replaced by defaults."""
        with pytest.raises(ConfigurationError):
            load_policy(tmp_path / "nope.yaml")

    def test_relative_path_resolves_from_the_project(self, tmp_path: Path) -> None:
        """Ray workers may run elsewhere; `config/gateway.yaml` still finds the project's file."""
        cwd = Path.cwd()
        os.chdir(tmp_path)
        try:
            assert load_policy(Path("config/gateway.yaml")) == GatewayPolicy()
        finally:
            os.chdir(cwd)


class TestPrefixes:
    @pytest.mark.parametrize(
        ("path", "prefix", "expected"),
        [
            ("/api/v1/transfers", "/api/v1/transfers", True),
            ("/api/v1/transfers/t1", "/api/v1/transfers", True),
            ("/api/v1/transfersx", "/api/v1/transfers", False),
            ("/api/v1/transfer", "/api/v1/transfers", False),
            ("/anything", "/", True),
            ("/docs/oauth2-redirect", "/docs", True),
        ],
    )
    def test_segment_aware(self, path: str, prefix: str, expected: bool) -> None:
        """Prefixes match whole path segments only."""
        assert is_under(path, prefix) is expected


class TestRouteTable:
    @pytest.fixture
    def table(self, edge_app: Callable[..., FastAPI]) -> RouteTable:
        return RouteTable(edge_app(), GatewayPolicy())

    def test_template_and_flags(self, table: RouteTable) -> None:
        """A wallet by id resolves to its template, protected, under the wallets rule."""
        info = table.resolve("GET", "/api/v1/wallets/w-42")
        assert info.template == "/api/v1/wallets/{wallet_id}"
        assert info.is_matched
        assert not info.is_public
        assert not info.is_step_up
        assert info.rate_rule is not None
        assert info.rate_rule.name == "wallets"

    def test_longest_rule_wins(self, table: RouteTable) -> None:
        """/api/v1/wallets/balance has its own rule, more specific than wallets."""
        rule = table.resolve("GET", "/api/v1/wallets/balance").rate_rule
        assert rule is not None
        assert rule.name == "wallet-balance"
        login = table.resolve("POST", "/api/v1/auth/login").rate_rule
        assert login is not None
        assert login.name == "login"

    def test_wrong_method_keeps_the_template_but_is_not_matched(self, table: RouteTable) -> None:
        """A 405 is counted under its route, and is not authenticated."""
        info = table.resolve("DELETE", "/api/v1/me")
        assert info.template == "/api/v1/me"
        assert not info.is_matched

    def test_unknown_path(self, table: RouteTable) -> None:
        """Paths no route serves share one label."""
        assert table.resolve("GET", "/wp-admin/setup.php").template == UNMATCHED_ROUTE

    def test_root_path_of_a_mounted_application(self, table: RouteTable) -> None:
        """Under Serve's /ledger prefix the policy sees the inner path, metrics the full one."""
        info = table.resolve("GET", "/ledger/api/v1/wallets/w-1", "/ledger")
        assert info.template == "/ledger/api/v1/wallets/{wallet_id}"
        assert info.rate_rule is not None
        assert info.rate_rule.name == "wallets"

    def test_route_markers(self, table: RouteTable) -> None:
        """x-step-up and x-money-moving on a route, max_body_size on a route."""
        assert table.resolve("POST", "/api/v1/cards/freeze").is_step_up
        assert table.resolve("POST", "/api/v1/transfers").is_money_moving
        assert table.resolve("POST", "/api/v1/uploads").body_bytes_max == 1024 * 1024
