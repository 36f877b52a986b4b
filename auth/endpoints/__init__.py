"""The identity API's routers.

| Prefix | Routes |
|---|---|
| `/api/v1/auth` | register, verify-email, login, refresh, logout, sessions, password reset/change |
| `/api/v1/auth/mfa` | TOTP, SMS, email, backup codes, WebAuthn, challenges, factors |
| `/api/v1/auth/oauth/clients` | client registration (administrators) |
| `/oauth` | authorize, token, revoke, introspect, userinfo (RFC 6749/7009/7662, OIDC) |
| `/.well-known` | jwks.json, openid-configuration |
| `/api/v1/dev/outbox` | development mode only: messages of the local provider |
"""

from __future__ import annotations

from fastapi import APIRouter

from auth.dependencies import AuthDependencies
from auth.endpoints.account import account_router
from auth.endpoints.common import Edge
from auth.endpoints.mfa import mfa_router
from auth.endpoints.oauth import dev_router, oauth_router, well_known_router


def build_routers(deps: AuthDependencies) -> list[APIRouter]:
    """Every identity router; the outbox route exists only outside production."""
    edge = Edge(deps)
    routers = [account_router(edge), mfa_router(edge), oauth_router(edge), well_known_router(edge)]
    if not deps.settings.is_production:
        routers.append(dev_router(edge))
    return routers
