"""Building `AuthDependencies` from a process's resources (the wiring and tests call this).

Opening does I/O once: the first signing keys are created if none is active (under an advisory
lock, so replicas starting together agree), the code pepper is loaded, and the verifier and
signer load their keys. `refresh_keys` is what the wiring calls every
`auth_key_refresh_interval_s` afterwards.
"""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from auth.challenges import ChallengeStore
from auth.dependencies import AuthDependencies, AuthLimits
from auth.keys import KeyTimings, PostgresKeySource, ensure_keys, load_pepper
from auth.lockout import LoginGuard
from auth.messaging import (
    EmailProvider,
    Messenger,
    OutboxProvider,
    SendGridEmail,
    SmsProvider,
    TwilioSms,
)
from auth.passwords import HashCost, PasswordHasher, PasswordPolicy
from auth.sessions import SessionStore
from auth.tokens import TokenSigner, TokenVerifier
from kit.clock import Clock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.errors import ConfigurationError
from kit.redis_client import KeySpace
from kit.settings import Settings


def key_timings(settings: Settings) -> KeyTimings:
    """The durations key rotation depends on."""
    return KeyTimings(
        access_ttl_s=settings.auth_access_token_ttl_s,
        refresh_interval_s=settings.auth_key_refresh_interval_s,
    )


def build_messenger(settings: Settings, db: Database, http: httpx.AsyncClient) -> Messenger:
    """The configured SMS and email providers."""
    outbox = OutboxProvider(db)
    sms: SmsProvider = outbox
    email: EmailProvider = outbox
    if settings.auth_sms_provider == "twilio":
        if not (
            settings.twilio_account_sid
            and settings.twilio_auth_token
            and settings.twilio_from_number
        ):
            raise ConfigurationError(
                "Twilio needs DWAYBANK_TWILIO_ACCOUNT_SID, _AUTH_TOKEN and _FROM_NUMBER"
            )
        sms = TwilioSms(
            http,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
        )
    if settings.auth_email_provider == "sendgrid":
        if settings.sendgrid_api_key is None:
            raise ConfigurationError("SendGrid needs DWAYBANK_SENDGRID_API_KEY")
        email = SendGridEmail(
            http,
            api_key=settings.sendgrid_api_key.get_secret_value(),
            from_email=settings.auth_email_from,
        )
    return Messenger(sms=sms, email=email)


async def assemble(
    settings: Settings,
    *,
    db: Database,
    redis: aioredis.Redis,
    cipher: EnvelopeCipher,
    guard: LoginGuard,
    clock: Clock,
    messenger: Messenger,
    limits: AuthLimits | None = None,
) -> AuthDependencies:
    """Everything the identity routers need, with keys loaded."""
    keys = KeySpace(settings.redis_key_prefix)
    source = PostgresKeySource(db, cipher, clock=clock)
    async with db.transaction() as conn:
        await ensure_keys(conn, cipher=cipher, now=clock.now(), timings=key_timings(settings))
        pepper = await load_pepper(conn, cipher)
    verifier = TokenVerifier(
        source, issuer=settings.auth_issuer, audience=settings.auth_audience, clock=clock
    )
    signer = TokenSigner(
        source,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        access_ttl_s=settings.auth_access_token_ttl_s,
        clock=clock,
    )
    deps = AuthDependencies(
        settings=settings,
        db=db,
        redis=redis,
        cipher=cipher,
        clock=clock,
        hasher=PasswordHasher(HashCost.from_settings(settings), workers=settings.auth_hash_workers),
        policy=PasswordPolicy.from_settings(settings),
        guard=guard,
        sessions=SessionStore(
            redis,
            keys,
            idle_ttl_s=settings.auth_session_idle_s,
            index_ttl_s=settings.auth_refresh_family_lifetime_s,
            clock=clock,
        ),
        challenges=ChallengeStore(redis, keys),
        signer=signer,
        verifier=verifier,
        messenger=messenger,
        pepper=pepper,
        limits=limits or AuthLimits(),
    )
    await refresh_keys(deps)
    return deps


async def refresh_keys(deps: AuthDependencies) -> None:
    """Reload the published keys and the active signing key."""
    await deps.verifier.refresh()
    await deps.signer.refresh()
