"""Every SQL statement of the users domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import asyncpg

from users.errors import EmailTakenError
from users.models import Role, User

_COLUMNS: Final = (
    "id, email, password_hash, phone_number, kyc_status, role, tier, is_active,"
    " email_verified_at, locked_at, created_at"
)
# A live user by id; a row lock clause may follow.
_BY_ID: Final = f"SELECT {_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"  # noqa: S608
_INSERT: Final = (
    "INSERT INTO users (email, password_hash, phone_number, is_active)"  # noqa: S608
    f" VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}"
)


async def insert_user(
    conn: asyncpg.Connection,
    *,
    email: str,
    password_hash: str,
    phone_number: str | None,
    is_active: bool,
) -> User:
    """Insert a user; `EmailTakenError` when the address is registered."""
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction survives
            row = await conn.fetchrow(
                _INSERT,
                email,
                password_hash,
                phone_number,
                is_active,
            )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTakenError() from exc
    return User.from_row(row)


async def find_by_email(conn: asyncpg.Connection, email: str) -> User | None:
    """The live (not erased) user with this normalised email."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL",  # noqa: S608
        email,
    )
    return None if row is None else User.from_row(row)


async def find_by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The live user with this id."""
    return await _by_id(conn, user_id, lock="")


async def lock_by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The live user with this id, the row share-locked until the transaction ends."""
    return await _by_id(conn, user_id, lock=" FOR SHARE")


async def lock_for_change(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    """The live user with this id, the row locked against sign-ins (their share lock) and
    other changes until the transaction ends; not against rows referencing it."""
    return await _by_id(conn, user_id, lock=" FOR NO KEY UPDATE")


async def _by_id(conn: asyncpg.Connection, user_id: uuid.UUID, *, lock: str) -> User | None:
    row = await conn.fetchrow(_BY_ID + lock, user_id)
    return None if row is None else User.from_row(row)


async def set_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str
) -> None:
    """Replace the stored hash (password change, reset, or a rehash at login)."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def replace_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, current_hash: str, new_hash: str
) -> bool:
    """Replace the stored hash only if it is still `current_hash`; False when another write
    (a reset, another change) replaced it first."""
    status: str = await conn.execute(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        user_id,
        current_hash,
        new_hash,
    )
    return status.endswith(" 1")


async def mark_email_verified(conn: asyncpg.Connection, user_id: uuid.UUID, at: datetime) -> None:
    """Record the proof of the address and activate the account unless it is locked."""
    await conn.execute(
        "UPDATE users SET email_verified_at = $2, is_active = (locked_at IS NULL)"
        " WHERE id = $1 AND email_verified_at IS NULL",
        user_id,
        at,
    )


async def mark_phone_verified(
    conn: asyncpg.Connection, user_id: uuid.UUID, phone_number: str, at: datetime
) -> None:
    """Record a proven phone number (an SMS factor was confirmed on it)."""
    await conn.execute(
        "UPDATE users SET phone_number = $2, phone_verified_at = $3 WHERE id = $1",
        user_id,
        phone_number,
        at,
    )


async def set_role(conn: asyncpg.Connection, user_id: uuid.UUID, role: Role) -> None:
    """Grant or withdraw administration."""
    await conn.execute("UPDATE users SET role = $2 WHERE id = $1", user_id, role.value)


async def list_users(
    conn: asyncpg.Connection, *, limit: int, offset: int, email_prefix: str | None
) -> list[User]:
    """A page of users, newest first, optionally by email prefix."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM users WHERE deleted_at IS NULL"  # noqa: S608
        " AND ($3::text IS NULL OR email LIKE $3 || '%')"
        " ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
        limit,
        offset,
        email_prefix,
    )
    return [User.from_row(row) for row in rows]


async def lock(conn: asyncpg.Connection, user_id: uuid.UUID, *, at: datetime) -> bool:
    """Disable sign-in under an administrator's lock, which only an unlock lifts (a later
    verification of the address leaves the account disabled); False when no such user. A
    second lock keeps the first one's time."""
    status: str = await conn.execute(
        "UPDATE users SET is_active = false, locked_at = coalesce(locked_at, $2)"
        " WHERE id = $1 AND deleted_at IS NULL",
        user_id,
        at,
    )
    return status.endswith(" 1")


async def unlock(conn: asyncpg.Connection, user_id: uuid.UUID) -> bool | None:
    """Lift the lock and enable sign-in if the address is proven, judged on the row as this
    statement writes it (a verification committed meanwhile counts); the new `is_active`, None
    when no such user."""
    value: bool | None = await conn.fetchval(
        "UPDATE users SET locked_at = NULL, is_active = (email_verified_at IS NOT NULL)"
        " WHERE id = $1 AND deleted_at IS NULL RETURNING is_active",
        user_id,
    )
    return value
