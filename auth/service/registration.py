"""Registration and email verification.

Registration answers the same whether or not the address is taken (no enumeration): a new
address gets an inactive account and a verification code; a taken one gets an email saying
someone tried to register with it. The account becomes active when the 6-digit code (10
minutes, single use, 5 guesses, rate-limited at the edge) comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from auth.audit import record_event
from auth.dependencies import AuthDependencies
from auth.errors import InvalidCodeError
from auth.models import AuthEvent, CodePurpose, OutboundMessage, Outcome
from auth.service.codes import check_code, issue_code
from users import service as users
from users.errors import EmailTakenError


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration answers (the same for a new and a taken address)."""

    email: str


def _verification_message(email: str, code: str) -> OutboundMessage:
    return OutboundMessage(
        channel="email",
        recipient=email,
        subject="Verify your DwayBank email address",
        body=f"Your DwayBank verification code is {code}. It expires in 10 minutes.",
    )


@dataclass(frozen=True, slots=True)
class Application:
    """A checked sign-up, its password already hashed (outside any transaction)."""

    email: str
    phone_number: str | None
    password_hash: str


async def prepare(
    deps: AuthDependencies, *, email: str, password: str, phone_number: str | None
) -> Application:
    """Normalise, apply the password policy and hash, holding no database connection."""
    normalised = users.normalise_email(email)
    phone = users.normalise_phone(phone_number) if phone_number else None
    checked = deps.policy.check(password, email=normalised)
    return Application(normalised, phone, await deps.hasher.hash(checked))


async def register(
    conn: asyncpg.Connection, deps: AuthDependencies, *, application: Application
) -> Outcome[Registered]:
    """Create an inactive account and send its verification code."""
    normalised, phone = application.email, application.phone_number
    password_hash = application.password_hash
    now = deps.clock.now()
    try:
        user = await users.create_user(
            conn, email=normalised, password_hash=password_hash, phone_number=phone
        )
    except EmailTakenError:
        notice = OutboundMessage(
            channel="email",
            recipient=normalised,
            subject="Someone tried to register with your address",
            body="Someone tried to open a DwayBank account with this address, which already"
            " has one. If it was you, sign in or reset your password.",
        )
        return Outcome(value=Registered(email=normalised), messages=[notice])
    code = await issue_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=CodePurpose.VERIFY_EMAIL,
        destination=normalised,
        now=now,
    )
    await record_event(conn, AuthEvent.REGISTERED, user_id=user.id, has_phone=phone is not None)
    return Outcome(
        value=Registered(email=normalised), messages=[_verification_message(normalised, code)]
    )


async def verify_email(
    conn: asyncpg.Connection, deps: AuthDependencies, *, email: str, code: str
) -> Outcome[Registered]:
    """Activate the account if the code is right (wrong guesses still commit their count)."""
    normalised = users.normalise_email(email)
    user = await users.find_by_email(conn, normalised)
    if user is None or user.is_verified:
        return Outcome(error=InvalidCodeError())
    now = deps.clock.now()
    result = await check_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=CodePurpose.VERIFY_EMAIL,
        code=code,
        now=now,
    )
    if not result.is_valid:
        return Outcome(error=InvalidCodeError())
    await users.mark_email_verified(conn, user.id, now)
    await record_event(conn, AuthEvent.EMAIL_VERIFIED, user_id=user.id, factor="email_code")
    return Outcome(value=Registered(email=normalised))


async def resend_verification(
    conn: asyncpg.Connection, deps: AuthDependencies, *, email: str
) -> Outcome[Registered]:
    """A new code for an unverified account (silently nothing otherwise)."""
    normalised = users.normalise_email(email)
    user = await users.find_by_email(conn, normalised)
    if user is None or user.is_verified:
        return Outcome(value=Registered(email=normalised))
    code = await issue_code(
        conn,
        pepper=deps.pepper,
        user_id=user.id,
        purpose=CodePurpose.VERIFY_EMAIL,
        destination=normalised,
        now=deps.clock.now(),
    )
    return Outcome(
        value=Registered(email=normalised), messages=[_verification_message(normalised, code)]
    )
