"""The API's own OpenAPI document, fuzzed in process with Schemathesis: no answer is a 5xx, and
every answer is one the document describes (status, content type, headers, body schema).

Method: the app is built as a replica builds it, like `admin_client` in `test_admin.py`: the
edge stack (so the edge's problem+json renderer answers), the token verifier, an exact
in-process limiter, the identity routers and the admin router, on the real PostgreSQL and
Redis. Its rate limits are raised far above what the run sends (the windows and the identity
area's own per-address policies), so requests reach the handlers instead of a 429.

Schemathesis reads `/openapi.json` and generates requests for every operation, valid and
invalid (`GenerationMode.POSITIVE` and `NEGATIVE`), deterministically (`derandomize`, no
example database) and boundedly (`EXAMPLES_MAX` per operation and caller, no shrinking). Each
operation is called three times over: anonymously, with a signed-in user's bearer token
(password only), and with an administrator's (signed in with TOTP, so the step-up routes and
the admin surface are reached too); a caller whose session a request ended (logout) is
replaced before the next operation.

Schemathesis's client runs the app on an event loop of its own thread, while the database
pool belongs to the test's loop, so the app is reached through `LoopBridge`: an ASGI app that
reads the request where it is called and runs the real app on the test's loop. Failures are
collected per operation and reported together, each with a curl line that reproduces it.

Two of Schemathesis's checks are left out, on purpose: `positive_data_acceptance` (a request
the schema allows may still break a rule the schema cannot state: an email that does not
exist, a password on the blocklist, a code that does not match; those are 4xx by design) and,
for the signed-in callers only, `negative_data_rejection` (the caller's `Authorization` header
replaces the one a negative case left out, so the case is no longer negative).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import hypothesis
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Message, Scope

from auth.dependencies import AuthDependencies, AuthLimits
from gateway.policy import AdminAccessPolicy, GatewayPolicy, RateLimitPolicy, RateLimitRule
from kit.clock import FrozenClock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.ratelimit import RateLimitPolicy as DomainLimit
from kit.ratelimit import Window
from kit.settings import Settings
from tests.auth.conftest import Account, administrator, build_admin_app, registered, wire

pytestmark = pytest.mark.db

EXAMPLES_MAX: Final = 25  # generated requests per operation, mode mix included, per caller
CLIENT: Final = ("127.0.0.1", 40000)  # inside the admin allow-list below
BASE_URL: Final = "http://127.0.0.1:8000"
# Far above what one run sends to one window (about 3 callers x 46 operations x 25 requests),
# so no request is refused by a limit; `premium` tiers double it, within the limiter's cap.
WINDOW_LIMIT: Final = 10_000
DOMAIN_WINDOW_S: Final = 3600
ANONYMOUS: Final = "anonymous"
USER: Final = "user"
ADMINISTRATOR: Final = "administrator"

# What no answer may carry: a Python stack trace, or the database driver's or server's words.
LEAK_MARKERS: Final = ("Traceback (most recent call last)", "asyncpg", "SQLSTATE", "psycopg")


def no_internal_text(ctx: Any, response: schemathesis.Response, case: Any) -> None:
    """No body names the code or the database behind it."""
    del ctx, case
    text = response.text or ""
    leaked = [marker for marker in LEAK_MARKERS if marker in text]
    assert not leaked, f"the body carries internal text: {leaked}"


Check = Callable[..., Any]
RESPONSE_CHECKS: Final[tuple[Check, ...]] = (
    not_a_server_error,
    no_internal_text,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    missing_required_header,
)
CHECKS: Final[dict[str, tuple[Check, ...]]] = {
    ANONYMOUS: (*RESPONSE_CHECKS, negative_data_rejection),
    USER: RESPONSE_CHECKS,
    ADMINISTRATOR: RESPONSE_CHECKS,
}
SETTINGS: Final = hypothesis.settings(
    max_examples=EXAMPLES_MAX,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


def _roomy(rule: RateLimitRule) -> RateLimitRule:
    windows = tuple(w.model_copy(update={"limit": WINDOW_LIMIT}) for w in rule.windows)
    return rule.model_copy(update={"windows": windows})


def fuzz_policy() -> GatewayPolicy:
    """The default edge policy, the admin surface open to loopback, every window roomy."""
    rates = RateLimitPolicy()
    return GatewayPolicy(
        admin=AdminAccessPolicy(allow=(ipaddress.ip_network("127.0.0.0/8"),)),
        rate_limits=rates.model_copy(update={"rules": tuple(_roomy(r) for r in rates.rules)}),
    )


def _roomy_domain(name: str) -> DomainLimit:
    return DomainLimit(name, (Window(WINDOW_LIMIT, DOMAIN_WINDOW_S),))


@pytest.fixture
async def deps(
    settings: Settings,
    db: Database,
    redis_client: aioredis.Redis,
    cipher: EnvelopeCipher,
    clock: FrozenClock,
) -> AsyncIterator[AuthDependencies]:
    """The identity domain as in `conftest.deps`, with roomy per-address policies."""
    wired = await wire(
        settings,
        db,
        redis_client,
        cipher,
        clock,
        limits=AuthLimits(
            login=_roomy_domain("login"),
            register=_roomy_domain("register"),
            mfa_verify=_roomy_domain("mfa_verify"),
            password_reset=_roomy_domain("password_reset"),
            verify_email=_roomy_domain("verify_email"),
            refresh=_roomy_domain("refresh"),
        ),
    )
    yield wired
    wired.hasher.close()


class LoopBridge:
    """An ASGI app that runs `app` on `loop`, whichever loop it is called on."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self._app = app
        self._loop = loop

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # the app starts nothing of its own
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        # The admin surface answers loopback only; Schemathesis names its client "testclient".
        running = self._run({**scope, "client": CLIENT}, bytes(body))
        answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(running, self._loop))
        for sent in answer:
            await send(sent)

    async def _run(self, scope: Scope, body: bytes) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        answered = asyncio.Event()
        chunks: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            if chunks:
                return chunks.pop()
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(dict(message))
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await self._app(scope, receive, send)
        return sent


@dataclass
class Findings:
    """Distinct failures: one line each, with the curl command of its first case."""

    seen: dict[tuple[str, str, str, int | None], str] = field(default_factory=dict)

    def add(self, caller: str, label: str, title: str, status: int | None, curl: str) -> None:
        """Keep the first case of each (caller, operation, failure, status)."""
        self.seen.setdefault((caller, label, title, status), curl)

    def report(self) -> str:
        """Every failure, one per line."""
        return "\n".join(
            f"{caller} {label}: {title} [{status}]\n    {curl}"
            for (caller, label, title, status), curl in sorted(
                self.seen.items(), key=lambda item: str(item[0])
            )
        )


def fuzz_operation(
    operation: Any,
    *,
    session: Any,
    caller: str,
    headers: dict[str, str] | None,
    findings: Findings,
) -> None:
    """Run the operation's generated cases (both modes) and collect what the checks find."""
    checks = list(CHECKS[caller])
    cases = st.one_of(
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )

    @SETTINGS
    @hypothesis.given(case=cases)
    def run(case: schemathesis.Case[Any]) -> None:
        response = None
        try:
            response = case.call(session=session, headers=headers)
            case.validate_response(response, checks=checks, headers=headers)
        except BaseExceptionGroup as group:  # Schemathesis's FailureGroup
            for failure in group.exceptions:
                title = str(getattr(failure, "title", type(failure).__name__))
                findings.add(
                    caller,
                    operation.label,
                    title,
                    None if response is None else response.status_code,
                    case.as_curl_command(),
                )
        except Exception as exc:  # the call itself failed: the app raised past the edge
            findings.add(caller, operation.label, repr(exc), None, case.as_curl_command())

    run()


def fuzz_operations(
    bridge: LoopBridge,
    operations: Sequence[Any],
    *,
    caller: str,
    headers: dict[str, str] | None,
    findings: Findings,
) -> None:
    """Each operation in turn, through one Schemathesis client (run in a worker thread)."""
    session = asgi.get_client(bridge)
    try:
        for operation in operations:
            fuzz_operation(
                operation, session=session, caller=caller, headers=headers, findings=findings
            )
    finally:
        session.close()


def operations_of(schema: Any) -> list[Any]:
    """Every operation of the document; a part Schemathesis cannot read fails the test."""
    found: list[Any] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()
        found.append(result.ok())
    return found


async def is_signed_in(http: httpx.AsyncClient, account: Account | None) -> bool:
    """Whether the account's session still answers (a fuzzed logout may have ended it)."""
    if account is None:
        return False
    response = await http.get("/api/v1/auth/sessions", headers=account.bearer)
    return response.status_code == 200


async def test_the_openapi_document_holds_for_every_caller(
    deps: AuthDependencies, clock: FrozenClock
) -> None:
    """No generated request, anonymous or signed in, gets a 5xx or an undocumented answer."""
    app = build_admin_app(deps, fuzz_policy())
    bridge = LoopBridge(app, asyncio.get_running_loop())
    schema = await asyncio.to_thread(schemathesis.openapi.from_asgi, "/openapi.json", bridge)
    operations = sorted(operations_of(schema), key=lambda op: op.label)
    admin_only = [op for op in operations if op.path.startswith("/api/v1/admin")]
    findings = Findings()
    transport = httpx.ASGITransport(app=app, client=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        await asyncio.to_thread(
            fuzz_operations,
            bridge,
            operations,
            caller=ANONYMOUS,
            headers=None,
            findings=findings,
        )
        user: Account | None = None
        admin: Account | None = None
        for operation in operations:
            if operation not in admin_only:
                if not await is_signed_in(http, user):
                    user = await registered(http)
                assert user is not None
                await asyncio.to_thread(
                    fuzz_operations,
                    bridge,
                    [operation],
                    caller=USER,
                    headers=user.bearer,
                    findings=findings,
                )
            if not await is_signed_in(http, admin):
                admin = await administrator(http, deps, clock)
            assert admin is not None
            await asyncio.to_thread(
                fuzz_operations,
                bridge,
                [operation],
                caller=ADMINISTRATOR,
                headers=admin.bearer,
                findings=findings,
            )
    assert len(operations) >= 40, [op.label for op in operations]
    assert not findings.seen, findings.report()
