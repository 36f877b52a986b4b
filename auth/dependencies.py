"""What the identity domain needs from the outside, as one record the wiring builds.

Everything here is either plain configuration, a kit object, or a protocol: the `LoginGuard`
is the UserShard client in a deployment and `InProcessLoginGuard` in domain tests; the
`Messenger` wraps the configured SMS/email providers. `deployments/identity_wiring.py` builds
it from a replica's resources; tests build it around the test servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from auth import constants
from auth.challenges import ChallengeStore
from auth.lockout import LoginGuard
from auth.messaging import Messenger
from auth.passwords import PasswordHasher, PasswordPolicy
from auth.sessions import SessionStore
from auth.tokens import TokenSigner, TokenVerifier
from kit.clock import Clock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.ratelimit import RateLimitPolicy
from kit.settings import Settings


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """The rate-limit policy of each guarded action (the seed's authRateLimits by default)."""

    login: RateLimitPolicy = constants.LOGIN_LIMIT
    register: RateLimitPolicy = constants.REGISTER_LIMIT
    mfa_verify: RateLimitPolicy = constants.MFA_VERIFY_LIMIT
    password_reset: RateLimitPolicy = constants.PASSWORD_RESET_LIMIT
    verify_email: RateLimitPolicy = constants.VERIFY_EMAIL_LIMIT
    refresh: RateLimitPolicy = constants.REFRESH_LIMIT


@dataclass(slots=True)
class AuthDependencies:
    """Everything the identity services and routers use."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    cipher: EnvelopeCipher
    clock: Clock
    hasher: PasswordHasher
    policy: PasswordPolicy
    guard: LoginGuard
    sessions: SessionStore
    challenges: ChallengeStore
    signer: TokenSigner
    verifier: TokenVerifier
    messenger: Messenger
    pepper: bytes
    limits: AuthLimits = field(default_factory=AuthLimits)
