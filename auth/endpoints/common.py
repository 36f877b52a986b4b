"""What every identity router shares: the principal, rate limits, transactions, docs.

`Edge` binds the dependencies once; routers call `edge.run(ctx, actor, fn)` to run a service in
one transaction with the audit context set, commit, deliver the messages it produced, and only
then raise a refusal the service returned (so failure counters and audit rows commit).
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from fastapi import Request
from pydantic import BaseModel

from auth.constants import MFA_FRESH_S
from auth.dependencies import AuthDependencies
from auth.errors import (
    AdminRequiredError,
    AuthRateLimitedError,
    MfaStepUpRequiredError,
    SessionRevokedError,
)
from auth.models import Outcome, RequestContext
from auth.service import mfa
from auth.sessions import Session
from auth.tokens import AccessClaims, InvalidTokenError
from kit.db import audit_context
from kit.errors import AppError, DependencyError, ForbiddenError, ValidationError
from kit.ratelimit import RateLimitPolicy
from users import service as users
from users.models import Role

T = TypeVar("T")
USER_AGENT_LENGTH_MAX = 512


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller: token claims and the live session they name."""

    claims: AccessClaims
    session: Session

    @property
    def user_id(self) -> uuid.UUID:
        """The caller's user id."""
        return self.claims.sub


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document, as the gateway renders every error."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    request_id: str | None = None
    details: dict[str, Any] | None = None


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the problems a route may answer (RFC 9457 bodies)."""
    by_status: dict[int, list[str]] = {}
    extra: tuple[type[AppError], ...] = (ValidationError, DependencyError)
    for error in (*errors, *extra):
        lines = by_status.setdefault(error.status, [])
        line = f"`{error.code}`: {error.default_message}"
        if line not in lines:
            lines.append(line)
    problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
    return {
        status: {
            "model": ProblemDetails,
            "description": "; ".join(lines),
            "content": {"application/problem+json": {"schema": problem_ref}},
        }
        for status, lines in sorted(by_status.items())
    }


def request_context(request: Request) -> RequestContext:
    """The client's address (when it is one) and user agent."""
    host = request.client.host if request.client else None
    try:
        ip = str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        ip = None
    agent = request.headers.get("user-agent")
    return RequestContext(ip=ip, user_agent=agent[:USER_AGENT_LENGTH_MAX] if agent else None)


class Edge:
    """Transactions, principals and rate limits for the identity routers."""

    def __init__(self, deps: AuthDependencies) -> None:
        self.deps = deps

    async def run(
        self,
        ctx: RequestContext,
        actor: uuid.UUID | None,
        service: Callable[[asyncpg.Connection], Awaitable[Outcome[T]]],
    ) -> T:
        """Run `service` in a transaction, commit, send its messages, then answer or refuse."""
        async with self.deps.db.transaction() as conn:
            await audit_context(conn, actor_id=actor, ip=ctx.ip, user_agent=ctx.user_agent)
            outcome = await service(conn)
        if outcome.messages:
            await self.deps.messenger.deliver(outcome.messages)
        return outcome.unwrap()

    async def run_plain(
        self,
        ctx: RequestContext,
        actor: uuid.UUID | None,
        service: Callable[[asyncpg.Connection], Awaitable[T]],
    ) -> T:
        """Run a service that raises its refusals (nothing to commit on failure)."""
        async with self.deps.db.transaction() as conn:
            await audit_context(conn, actor_id=actor, ip=ctx.ip, user_agent=ctx.user_agent)
            return await service(conn)

    async def limit(self, policy: RateLimitPolicy, keys: Iterable[str]) -> None:
        """Count one hit per key (an IP, an account); refuse with 429 when any is over."""
        for key in keys:
            decision = await self.deps.guard.check_rate(f"{policy.name}-{key}", policy)
            if not decision.is_allowed:
                raise AuthRateLimitedError(
                    retry_after_s=max(1, math.ceil(decision.retry_after_s)), policy=policy.name
                )

    async def principal(self, request: Request) -> Principal:
        """The caller of a bearer-authenticated route, with a live session."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidTokenError("a bearer access token is required")
        claims = self.deps.verifier.verify(token.strip())
        session = await self.deps.sessions.get_owned(claims.sid, str(claims.sub))
        if session is None:
            raise SessionRevokedError()
        return Principal(claims=claims, session=session)

    async def account_holder(self, request: Request) -> Principal:
        """A principal acting through our own apps (not a partner's OAuth token)."""
        principal = await self.principal(request)
        if principal.claims.client_id is not None:
            raise ForbiddenError("account settings need a first-party session")
        return principal

    async def with_mfa(self, request: Request) -> Principal:
        """A first-party principal whose session verified a second factor."""
        principal = await self.account_holder(request)
        if not principal.claims.has_mfa:
            raise MfaStepUpRequiredError(reason="mfa_required")
        return principal

    async def enroller(self, request: Request) -> Principal:
        """A first-party principal who may add a second factor: any session while the account
        has none; once it has one, only a session that verified one. Otherwise a password-only
        session (one opened before the first factor, or with a stolen password) could enrol a
        factor of its own and pass every later second step."""
        principal = await self.account_holder(request)
        if principal.claims.has_mfa:
            return principal
        async with self.deps.db.connection() as conn:
            if await mfa.enabled_methods(conn, principal.user_id):
                raise MfaStepUpRequiredError(reason="mfa_required")
        return principal

    async def with_fresh_mfa(self, request: Request) -> Principal:
        """A first-party principal who verified a second factor in the last few minutes."""
        principal = await self.with_mfa(request)
        now = self.deps.clock.now()
        if not principal.claims.is_fresh(now=now, max_age_s=MFA_FRESH_S):
            raise MfaStepUpRequiredError(reason="stale", max_age_s=MFA_FRESH_S)
        return principal

    async def admin(self, request: Request) -> Principal:
        """An administrator with a second factor, whose account still holds the role (the
        token's claim outlives a withdrawal until it expires)."""
        principal = await self.with_mfa(request)
        if principal.claims.role != Role.ADMIN.value:
            raise AdminRequiredError()
        async with self.deps.db.connection() as conn:
            account = await users.find_by_id(conn, principal.user_id)
        if account is None or account.role is not Role.ADMIN:
            raise AdminRequiredError()
        return principal
