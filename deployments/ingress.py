"""The ingress deployment shared by every Serve application.

One class serves both applications; what differs (title, error style, routers) comes from the
typed `IngressArgs` that the app builders take from `serve_config.yaml`. `__serve_build_asgi_app__`
runs on the replica after the constructor: it opens the replica's resources (an unreachable
database fails the replica, and Serve retries it) and builds the FastAPI app around them.
`check_health` is Serve's liveness probe: cheap and local.
"""

# No `from __future__ import annotations` here: Serve reads the builder's annotation at runtime
# to validate `args` into `IngressArgs`, and a string annotation would hand it a plain dict.

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application, Deployment

from deployments.resources import Resources
from gateway.app import create_app
from gateway.policy import load_policy
from gateway.problems import ErrorStyle
from kit.errors import DependencyError
from kit.settings import Settings
from kit.telemetry import configure_logging, flush_line_batches

logger = logging.getLogger(__name__)

APP_VERSION = "0.1.0"

RouterFactory = Callable[[Resources], Awaitable[list[APIRouter]]]


class IngressArgs(BaseModel):
    """Typed `args` of an ingress application in `serve_config.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=100)
    route_prefix: str = Field(pattern=r"^/[A-Za-z0-9/_.\-]*$")
    error_style: ErrorStyle = ErrorStyle.PROBLEM
    routers: str = Field(
        description="import path of an async function (Resources) -> list[APIRouter]",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
    )
    service: str = Field(default="api", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    gateway_policy: Path | None = Field(
        default=None,
        description="this application's gateway policy YAML (else DWAYBANK_GATEWAY_POLICY_PATH)",
    )


def _load_router_factory(path: str) -> RouterFactory:
    import importlib  # noqa: PLC0415 - resolved on the replica, from configuration

    module_name, _, attribute = path.partition(":")
    factory: RouterFactory = getattr(importlib.import_module(module_name), attribute)
    return factory


class IngressReplica:
    """An HTTP ingress replica: the edge stack, health, metrics and the domain routers."""

    def __init__(self, args: IngressArgs) -> None:
        self.args = args
        self.resources: Resources | None = None

    async def __serve_build_asgi_app__(self) -> FastAPI:
        settings = Settings()
        configure_logging(settings.log_level, is_json=settings.log_json)
        policy = load_policy(self.args.gateway_policy or settings.gateway_policy_path)
        self.resources = await Resources.open(settings)
        self.resources.gateway_policy = policy
        # The routers' wiring may fill the edge's slots (token verifier, rate limiter).
        routers = await _load_router_factory(self.args.routers)(self.resources)
        # Once this returns Serve collects and freezes the startup heap itself (see kit.heap).
        return create_app(
            title=self.args.title,
            version=APP_VERSION,
            routers=routers,
            checks=self.resources.checks,
            error_style=self.args.error_style,
            echo_request_id=False,
            policy=policy,
            service=self.args.service,
            verifier=self.resources.token_verifier,
            limiter=self.resources.rate_limiter,
        )

    def check_health(self) -> None:
        """Serve's liveness probe: the replica's resources are open."""
        if self.resources is None or self.resources.db.pool.is_closing():
            raise DependencyError("the replica's database pool is closed")

    async def __del__(self) -> None:
        flush_line_batches()  # the audit lines still waiting for their batch
        resources, self.resources = self.resources, None
        if resources is not None:
            await resources.close()


Ingress: Deployment = serve.deployment(name="Ingress")(serve.ingress()(IngressReplica))


def build_app(args: IngressArgs) -> Application:
    """Typed app builder named by `serve_config.yaml` (`deployments.ingress:build_app`)."""
    application: Application = Ingress.bind(args)
    return application
