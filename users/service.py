"""User records: normalisation rules and the reads and writes other domains go through.

Emails are normalised with email-validator (Unicode NFC, lower-cased domain, IDNA) and then
lower-cased as a whole, so `Alice@Example.COM` and `alice@example.com` are one account; phone
numbers are stored as E.164 (phonenumbers), so `+1 (202) 555-0143` and `+12025550143` are one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import asyncpg
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from users import repository
from users.errors import InvalidEmailError, InvalidPhoneError, UserNotFoundError
from users.models import Role, User

EMAIL_LENGTH_MAX: Final = 254  # RFC 5321's path limit; the column allows 255
PHONE_INPUT_LENGTH_MAX: Final = 32


def normalise_email(raw: str) -> str:
    """The canonical form of an address; `InvalidEmailError` when it is not one."""
    if len(raw) > EMAIL_LENGTH_MAX:
        raise InvalidEmailError("the email address is too long")
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmailError("the email address is not valid") from exc
    return checked.normalized.lower()


def normalise_phone(raw: str) -> str:
    """The E.164 form of an international number (`+` and country code required)."""
    if len(raw) > PHONE_INPUT_LENGTH_MAX:
        raise InvalidPhoneError("the phone number is too long")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneError("the phone number needs a leading + and country code") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneError("the phone number is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


async def create_user(
    conn: asyncpg.Connection,
    *,
    email: str,
    password_hash: str,
    phone_number: str | None,
) -> User:
    """A new, inactive user (active once the email is verified)."""
    return await repository.insert_user(
        conn,
        email=email,
        password_hash=password_hash,
        phone_number=phone_number,
        is_active=False,
    )


async def find_by_email(conn: asyncpg.Connection, email: str) -> User | None:
    """The user with this normalised email, if any."""
    return await repository.find_by_email(conn, email)


async def find_by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The user with this id, if any."""
    return await repository.find_by_id(conn, user_id)


async def get_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User:
    """The user with this id; `UserNotFoundError` otherwise."""
    user = await find_by_id(conn, user_id)
    if user is None:
        raise UserNotFoundError()
    return user


async def find_user_for_sign_in(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The user with this id, read under a share lock held until the transaction ends: a
    change to the account (an administrator's lock, a new password hash) either committed
    before, and is read here, or waits for this transaction and then sees what it wrote (the
    session it opened). None when there is no such (undeleted) user."""
    return await repository.lock_by_id(conn, user_id)


async def get_user_for_sign_in(conn: asyncpg.Connection, user_id: uuid.UUID) -> User:
    """As `find_user_for_sign_in`; `UserNotFoundError` when there is no such user."""
    user = await find_user_for_sign_in(conn, user_id)
    if user is None:
        raise UserNotFoundError()
    return user


async def get_user_for_change(conn: asyncpg.Connection, user_id: uuid.UUID) -> User:
    """The user with this id, locked until the transaction ends: a sign-in in flight (which
    holds a share lock, `find_user_for_sign_in`) commits first and its session is seen here,
    or starts after this transaction and sees what it did. `UserNotFoundError` otherwise."""
    user = await repository.lock_for_change(conn, user_id)
    if user is None:
        raise UserNotFoundError()
    return user


async def lock_for_admin_action(
    conn: asyncpg.Connection, *, admin_id: uuid.UUID, target_id: uuid.UUID
) -> User | None:
    """Lock an administrator's account and the account it acts on, until the transaction
    ends, in id order (two administrators acting on each other then wait in turn, never
    deadlock): the administrator's row shared (as a sign-in holds it), the target's as
    `get_user_for_change` does. The administrator as locked; None when there is no such user."""
    acting: User | None = None
    for user_id in sorted({admin_id, target_id}):
        if user_id == target_id:
            user = await repository.lock_for_change(conn, user_id)
        else:
            user = await repository.lock_by_id(conn, user_id)
        if user_id == admin_id:
            acting = user
    return acting


async def set_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str
) -> None:
    """Store a new password hash."""
    await repository.set_password_hash(conn, user_id, password_hash)


async def replace_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, current_hash: str, new_hash: str
) -> bool:
    """Store a new hash over the one a password was just checked against; False (nothing
    written) when the stored hash is no longer that one."""
    return await repository.replace_password_hash(
        conn, user_id, current_hash=current_hash, new_hash=new_hash
    )


async def mark_email_verified(conn: asyncpg.Connection, user_id: uuid.UUID, at: datetime) -> None:
    """Record the proven address; the account is enabled unless an administrator locked it."""
    await repository.mark_email_verified(conn, user_id, at)


async def mark_phone_verified(
    conn: asyncpg.Connection, user_id: uuid.UUID, phone_number: str, at: datetime
) -> None:
    """Record a proven phone number."""
    await repository.mark_phone_verified(conn, user_id, phone_number, at)


async def set_role(conn: asyncpg.Connection, user_id: uuid.UUID, role: Role) -> None:
    """Grant or withdraw the admin role."""
    await repository.set_role(conn, user_id, role)


USERS_PAGE_MAX: Final = 100  # an admin page of users


async def list_users(
    conn: asyncpg.Connection, *, limit: int, offset: int, email_prefix: str | None = None
) -> list[User]:
    """A page of users for the admin surface (limit 1-100)."""
    bounded = max(1, min(limit, USERS_PAGE_MAX))
    prefix = normalise_email_prefix(email_prefix) if email_prefix else None
    return await repository.list_users(
        conn, limit=bounded, offset=max(0, offset), email_prefix=prefix
    )


def normalise_email_prefix(raw: str) -> str:
    """Lower-case, LIKE wildcards escaped."""
    return raw.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")[:255]


async def lock(conn: asyncpg.Connection, user_id: uuid.UUID, *, at: datetime) -> None:
    """Disable sign-in until an administrator unlocks the account (proving the address does
    not lift a lock)."""
    if not await repository.lock(conn, user_id, at=at):
        raise UserNotFoundError()


async def unlock(conn: asyncpg.Connection, user_id: uuid.UUID) -> bool:
    """Lift the lock; sign-in is enabled for a verified account (an unverified one waits for
    its verification), decided in one statement, so a verification committing meanwhile is
    never undone; the new `is_active`."""
    is_active = await repository.unlock(conn, user_id)
    if is_active is None:
        raise UserNotFoundError()
    return is_active
