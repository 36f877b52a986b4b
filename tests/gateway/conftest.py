"""Real parts for the edge tests: live uvicorn servers, an RS256 key pair, a PyJWT verifier.

`serve(app)` starts the app under uvicorn on a free local port and returns its base URL; every
server of the test run runs as a task on one background event loop (so apps that share an
in-process limiter share it on one loop, as one replica's requests do), and all stop when the
test run ends. uvicorn's own `X-Forwarded-For` handling is off: the client address must come
from the gateway's resolver alone.

The verifier is what the identity area will provide, reduced to its core: PyJWT checking an
RS256 signature with a key generated for this test run, `exp`, `nbf`, `iss` and `aud`, and
refusing with the gateway's `InvalidTokenError`. `mint(...)` signs tokens with the private key
(or another key, algorithm or audience, to forge bad ones).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, FastAPI, Request

from gateway.app import create_app
from gateway.errors import InvalidTokenError
from gateway.health import DependencyCheck
from gateway.limiter import RateLimiter
from gateway.openapi import problem_responses
from gateway.policy import GatewayPolicy
from gateway.principal import CurrentPrincipal, TokenVerifier
from gateway.problems import ErrorStyle
from kit.clock import Clock
from kit.errors import ConflictError, NotFoundError

ISSUER = "https://api.dwaybank.test"
AUDIENCE = "dwaybank-api"
SERVER_START_DEADLINE_S = 30.0
SERVER_STOP_DEADLINE_S = 30.0
# A browser's user agent, for tests whose requests must not look like a bot.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


class LiveServers:
    """uvicorn servers on one background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._running: list[tuple[uvicorn.Server, Future[None]]] = []

    def start(self, app: FastAPI) -> str:
        """Serve `app` on a free port; its base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            lifespan="off",
            loop="asyncio",
        )
        server = uvicorn.Server(config)
        future = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), self.loop)
        deadline = time.monotonic() + SERVER_START_DEADLINE_S
        while not server.started and not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the test server did not start")
        self._running.append((server, future))
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop every server, then the loop."""
        for server, _ in self._running:
            server.should_exit = True
        for _, future in self._running:
            future.result(timeout=SERVER_STOP_DEADLINE_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=SERVER_STOP_DEADLINE_S)
        self.loop.close()


@pytest.fixture(scope="session")
def live_servers() -> Iterator[LiveServers]:
    servers = LiveServers()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def serve(live_servers: LiveServers) -> Callable[[FastAPI], str]:
    """Start an app under uvicorn on a local port; returns its base URL."""
    return live_servers.start


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Claims:
    """What the identity area's verifier returns (satisfies `gateway.principal.TokenClaims`)."""

    sub: uuid.UUID
    sid: str
    scope: str
    amr: tuple[str, ...]
    acr: str | None
    auth_time: datetime
    role: str
    tier: str
    kyc_status: str


class JwtVerifier:
    """RS256 verification with PyJWT: signature, exp, nbf, iss, aud; nothing mocked."""

    def __init__(self, public_key: rsa.RSAPublicKey) -> None:
        self._key = public_key

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "sid"]},
            )
            return Claims(
                sub=uuid.UUID(payload["sub"]),
                sid=str(payload["sid"]),
                scope=str(payload.get("scope", "")),
                amr=tuple(payload.get("amr", ())),
                acr=payload.get("acr"),
                auth_time=datetime.fromtimestamp(int(payload["auth_time"]), UTC),
                role=str(payload.get("role", "user")),
                tier=str(payload.get("tier", "basic")),
                kyc_status=str(payload.get("kyc_status", "pending")),
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise InvalidTokenError() from exc


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key pair for this test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def verifier(signing_key: rsa.RSAPrivateKey) -> TokenVerifier:
    return JwtVerifier(signing_key.public_key())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any]) -> str:
    """A token with `alg: none` and an empty signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


@pytest.fixture(scope="session")
def mint(signing_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """`mint(**overrides)`: a signed access token; `key=` signs with another key."""

    def make(
        *,
        user_id: uuid.UUID | None = None,
        amr: tuple[str, ...] = ("pwd",),
        auth_age_s: float = 0,
        role: str = "user",
        tier: str = "basic",
        audience: str = AUDIENCE,
        expires_in_s: float = 900,
        not_before_in_s: float = 0,
        key: rsa.RSAPrivateKey | None = None,
        alg: str = "RS256",
        **extra: Any,
    ) -> str:
        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": audience,
            "sub": str(user_id or uuid.uuid4()),
            "sid": f"ses_{uuid.uuid4()}",
            "iat": int(now.timestamp()),
            "nbf": int((now + timedelta(seconds=not_before_in_s)).timestamp()),
            "exp": int((now + timedelta(seconds=expires_in_s)).timestamp()),
            "auth_time": int((now - timedelta(seconds=auth_age_s)).timestamp()),
            "amr": list(amr),
            "acr": "mfa" if "mfa" in amr else "pwd",
            "scope": "wallets:read transfers:write",
            "role": role,
            "tier": tier,
            "kyc_status": "approved",
            **extra,
        }
        if alg == "none":
            return unsigned_token(payload)
        pem = (key or signing_key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return jwt.encode(payload, pem, algorithm=alg, headers={"kid": "test-key"})

    return make


# --------------------------------------------------------------------------- apps


def demo_router() -> APIRouter:
    """Routes shaped like the product's: public, protected, step-up, admin, money-moving."""
    router = APIRouter()

    @router.get("/api/v1/auth/login-status")
    async def login_status() -> dict[str, str]:
        return {"status": "open"}

    @router.post("/api/v1/auth/login")
    async def login() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/api/v1/me", responses=problem_responses(NotFoundError))
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {
            "user_id": str(principal.user_id),
            "role": principal.role.value,
            "tier": principal.tier.value,
            "kyc_status": principal.kyc_status,
        }

    @router.post("/api/v1/items")
    async def items(request: Request) -> dict[str, int]:
        return {"received_bytes": len(await request.body())}

    @router.post("/api/v1/uploads", max_body_size=1024 * 1024)
    async def uploads(request: Request) -> dict[str, int]:
        return {"received_bytes": len(await request.body())}

    @router.get("/api/v1/wallets/balance")
    async def balance() -> dict[str, int]:
        return {"balance": 0}

    @router.get("/api/v1/wallets/{wallet_id}")
    async def wallet(wallet_id: str) -> dict[str, str]:
        return {"wallet_id": wallet_id}

    @router.post(
        "/api/v1/transfers",
        responses=problem_responses(ConflictError),
        openapi_extra={"x-money-moving": True},
    )
    async def transfer() -> dict[str, str]:
        return {"status": "applied"}

    @router.post("/api/v1/cards/freeze", openapi_extra={"x-step-up": True})
    async def freeze() -> dict[str, str]:
        return {"status": "frozen"}

    @router.get("/api/v1/admin/users")
    async def admin_users() -> list[str]:
        return []

    @router.get("/api/v1/crash")
    async def crash() -> None:
        raise RuntimeError("password=hunter2 SELECT * FROM users WHERE id = 1")

    return router


async def _up() -> None:
    return None


@pytest.fixture(scope="session")
def edge_app(verifier: TokenVerifier) -> Callable[..., FastAPI]:
    """`edge_app(policy=..., limiter=..., ...)`: the demo routes behind the full edge stack."""

    def build(
        *,
        policy: GatewayPolicy | None = None,
        limiter: RateLimiter | None = None,
        with_verifier: bool = True,
        style: ErrorStyle = ErrorStyle.PROBLEM,
        service: str = "test",
        clock: Clock | None = None,
    ) -> FastAPI:
        checks = [DependencyCheck("database", _up)]
        return create_app(
            title="DwayBank test",
            version="1",
            routers=[demo_router()],
            checks=lambda: checks,
            error_style=style,
            policy=policy,
            service=service,
            verifier=verifier if with_verifier else None,
            limiter=limiter,
            clock=clock,
        )

    return build
