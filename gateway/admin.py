"""The admin surface under `/api/v1/admin`: accounts, locks, sessions, rate-limit state.

The edge stack already restricts the prefix to the allowed addresses and to tokens whose role
is admin (`gateway.admin_access`, `gateway.authentication`); the routes here add the operations,
each for an administrator whose session is still live and whose account still holds the admin
role (the edge checks the token alone, so an administrator who signed out, was locked, had
every session ended or lost the role would otherwise keep the surface until the access token
expired). The rate-limit view
asks the same limiter the edge uses, counting nothing, for every rule keyed by user, with the
user's own tier.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import asyncpg
from fastapi import APIRouter, Depends, Query

from auth.dependencies import AuthDependencies
from auth.errors import SelfLockError, SessionRevokedError
from auth.service import admin
from gateway.errors import AdminRoleRequiredError
from gateway.limiter import LimitRequest, RateLimiter
from gateway.openapi import problem_responses
from gateway.policy import LimitKey, RateLimitPolicy, Tier
from gateway.principal import CurrentPrincipal, Principal
from gateway.rate_limit import tier_windows
from kit.errors import DependencyError
from users import service as users
from users.errors import UserNotFoundError
from users.models import Role, User

PREFIX: Final = "/api/v1/admin"
PAGE_DEFAULT: Final = 50
PAGE_MAX: Final = 100
EMAIL_PREFIX_LENGTH_MAX: Final = 255


def _account_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "role": user.role.value,
        "tier": user.tier.value,
        "kyc_status": user.kyc_status.value,
        "is_active": user.is_active,
        "is_verified": user.is_verified,
        "is_locked": user.is_locked,
        "created_at": user.created_at.isoformat(),
    }


def refuse_unless_administrator(acting: User | None) -> None:
    """Refuse an account that can no longer sign in (401, as its sessions are ended) or no
    longer holds the admin role (403, as at the edge)."""
    if acting is None or not acting.is_active:
        raise SessionRevokedError()
    if acting.role is not Role.ADMIN:
        raise AdminRoleRequiredError()


def admin_router(
    deps: AuthDependencies, *, limiter: RateLimiter | None, rate_policy: RateLimitPolicy
) -> APIRouter:
    """The admin routes."""

    async def refuse_unless_session_live(principal: Principal) -> None:
        if await deps.sessions.get_owned(principal.session_id, principal.user_text) is None:
            raise SessionRevokedError()

    async def live_session(principal: CurrentPrincipal) -> None:
        await refuse_unless_session_live(principal)
        async with deps.db.connection() as conn:
            acting = await users.find_by_id(conn, principal.user_id)
        refuse_unless_administrator(acting)

    async def still_acting(
        conn: asyncpg.Connection, principal: Principal, target: uuid.UUID
    ) -> None:
        # The check above ran before this transaction: an administrator locked, or whose
        # sessions were ended, since then (by another administrator acting on them at the same
        # moment) acts no more. Both accounts are locked first, in id order, so two
        # administrators acting on each other wait in turn, and the second sees the first's
        # change.
        acting = await users.lock_for_admin_action(
            conn, admin_id=principal.user_id, target_id=target
        )
        refuse_unless_administrator(acting)
        await refuse_unless_session_live(principal)

    router = APIRouter(prefix=PREFIX, tags=["admin"], dependencies=[Depends(live_session)])
    not_found = problem_responses(UserNotFoundError, SessionRevokedError, AdminRoleRequiredError)

    @router.get(
        "/users",
        responses=problem_responses(SessionRevokedError, AdminRoleRequiredError),
        summary="List accounts (newest first, optional email prefix)",
    )
    async def list_users(
        _admin: CurrentPrincipal,
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX),
        offset: int = Query(0, ge=0, le=1_000_000),
        email: str | None = Query(None, max_length=EMAIL_PREFIX_LENGTH_MAX),
    ) -> dict[str, Any]:
        async with deps.db.connection() as conn:
            accounts = await admin.list_accounts(
                conn, limit=limit, offset=offset, email_prefix=email
            )
        return {"users": [_account_json(u) for u in accounts], "limit": limit, "offset": offset}

    @router.post(
        "/users/{user_id}/lock",
        responses=problem_responses(
            UserNotFoundError, SessionRevokedError, AdminRoleRequiredError, SelfLockError
        ),
        summary="Disable sign-in and end every session",
    )
    async def lock(user_id: uuid.UUID, principal: CurrentPrincipal) -> dict[str, Any]:
        async with deps.db.transaction() as conn:
            await still_acting(conn, principal, user_id)
            ended = await admin.lock_account(
                conn, deps, user_id=user_id, admin_id=principal.user_id
            )
        return {"user_id": str(user_id), "is_active": False, "sessions_ended": ended}

    @router.post(
        "/users/{user_id}/unlock", responses=not_found, summary="Enable sign-in, clear the lockout"
    )
    async def unlock(user_id: uuid.UUID, principal: CurrentPrincipal) -> dict[str, Any]:
        async with deps.db.transaction() as conn:
            await still_acting(conn, principal, user_id)
            is_active = await admin.unlock_account(
                conn, deps, user_id=user_id, admin_id=principal.user_id
            )
        return {"user_id": str(user_id), "is_active": is_active}

    @router.post(
        "/users/{user_id}/sessions/revoke", responses=not_found, summary="End every session"
    )
    async def revoke_sessions(user_id: uuid.UUID, principal: CurrentPrincipal) -> dict[str, Any]:
        async with deps.db.transaction() as conn:
            await still_acting(conn, principal, user_id)
            ended = await admin.end_all_sessions(conn, deps, user_id=user_id)
        return {"user_id": str(user_id), "sessions_ended": ended}

    @router.get(
        "/users/{user_id}/rate-limits", responses=not_found, summary="The user's rate-limit state"
    )
    async def rate_limits(user_id: uuid.UUID, _admin: CurrentPrincipal) -> dict[str, Any]:
        async with deps.db.connection() as conn:
            user = await users.get_user(conn, user_id)
        return {
            "user_id": str(user_id),
            "tier": user.tier.value,
            "rules": await _rule_states(user, limiter=limiter, rate_policy=rate_policy),
        }

    return router


async def _rule_states(
    user: User, *, limiter: RateLimiter | None, rate_policy: RateLimitPolicy
) -> list[dict[str, Any]]:
    """The user's state under every rule keyed by user, with the user's own tier; counts
    nothing."""
    states: list[dict[str, Any]] = []
    for rule in rate_policy.rules:
        if rule.key is not LimitKey.USER:
            continue
        windows = tier_windows(rule, Tier(user.tier.value))
        request = LimitRequest(rule.name, f"user:{user.id}", windows)
        entry: dict[str, Any] = {"rule": rule.name}
        if limiter is None:
            entry["state"] = "no limiter configured"
        else:
            try:
                decision = await limiter.peek(request)
            except DependencyError as exc:
                entry["state"] = f"unavailable: {exc.code}"
            else:
                entry["would_allow_next"] = decision.is_allowed
                entry["windows"] = [
                    {
                        "name": w.name,
                        "window_s": w.window_s,
                        "limit": w.limit,
                        "remaining_after_next": w.remaining,
                        "reset_s": w.reset_s,
                    }
                    for w in decision.windows
                ]
        states.append(entry)
    return states
