"""`serve_config.yaml` and `cluster.yaml` are valid for Ray 2.60 and name real code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from deployments.ingress import IngressArgs
from deployments.runtime import SERVE_CLIENT_ADDRESS_ENV, SERVE_THROUGHPUT_ENV

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


class TestServeConfig:
    def test_validates_against_serve_schema(self) -> None:
        """Serve's own schema accepts the file."""
        schema = ServeDeploySchema.model_validate(_load("serve_config.yaml"))
        assert {app.name for app in schema.applications} == {"api", "ledger"}

    def test_route_prefixes(self) -> None:
        """The public API owns `/` (so `/api/v1` and `/.well-known`) and the ledger `/ledger`."""
        apps = {app["name"]: app for app in _load("serve_config.yaml")["applications"]}
        assert apps["api"]["route_prefix"] == "/"
        assert apps["ledger"]["route_prefix"] == "/ledger"

    def test_args_and_import_paths_resolve(self) -> None:
        """Every application's builder and routers exist and its args validate."""
        for app in _load("serve_config.yaml")["applications"]:
            module, _, attribute = app["import_path"].partition(":")
            assert callable(getattr(importlib.import_module(module), attribute))
            args = IngressArgs.model_validate(app["args"])
            assert args.route_prefix == app["route_prefix"]
            router_module, _, router_attr = args.routers.partition(":")
            factory = getattr(importlib.import_module(router_module), router_attr)
            assert inspect.iscoroutinefunction(factory)

    @pytest.mark.parametrize(
        "option",
        [
            "max_ongoing_requests",
            "max_queued_requests",
            "backpressure_config",
            "autoscaling_config",
            "health_check_period_s",
            "health_check_timeout_s",
            "graceful_shutdown_timeout_s",
            "ray_actor_options",
        ],
    )
    def test_every_option_is_written_out(self, option: str) -> None:
        """No deployment relies on Serve's defaults (max_ongoing_requests 5 collapses it)."""
        for app in _load("serve_config.yaml")["applications"]:
            for deployment in app["deployments"]:
                assert option in deployment, (app["name"], option)
                if option == "max_ongoing_requests":
                    assert deployment[option] >= 100


class TestClusterConfig:
    def test_validates_with_rays_launcher(self) -> None:
        """Ray's cluster launcher fills and validates the file; it has head and worker types."""
        config = prepare_config(_load("cluster.yaml"))
        validate_config(config)
        assert config["head_node_type"] == "head"
        assert set(config["available_node_types"]) == {"head", "worker"}
        assert any("pip install -e" in command for command in config["setup_commands"])

    @pytest.mark.parametrize("commands", ["head_start_ray_commands", "worker_start_ray_commands"])
    def test_nodes_start_ray_with_the_environment_up_sets(self, commands: str) -> None:
        """Every node's Ray starts with what `dwaybank up` gives its own Ray: the HAProxy
        ingress, and uvicorn inside Serve believing no one's X-Forwarded-For."""
        start = next(c for c in _load("cluster.yaml")[commands] if "ray start" in c)
        expected = {**SERVE_THROUGHPUT_ENV, **SERVE_CLIENT_ADDRESS_ENV}
        for name, value in expected.items():
            assert f" {name}={value} " in f" {start} ".replace("\n", " "), name
