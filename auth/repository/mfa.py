"""user_mfa, auth_backup_codes and webauthn_credentials; the password hash a second step is
checked against (users.password_hash, read under a share lock)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def _lock_factors(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Serialise, until the transaction ends, every write to the user's factors: the ones that
    decide which factor is primary, and the ones that create a factor.

    Without it, two confirmations at once would each find no primary (the other's row is not
    committed when its statement's snapshot is taken) and both become primary; and removing the
    primary factor while another is being confirmed would promote none. Each statement after
    the lock takes a fresh snapshot (READ COMMITTED), so it sees what the previous holder
    committed. Creating a factor takes it too, before any row lock on user_mfa, so that a
    transaction holding it never waits for a row held by one that waits for it.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('user_mfa:' || $1::uuid, 0))", user_id
    )


async def list_factors(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every factor row of the user."""
    return list(
        await conn.fetch(
            "SELECT id, method, secret_key, phone_number, email_address, is_enabled, is_primary,"
            " last_used_at, created_at FROM user_mfa WHERE user_id = $1 ORDER BY created_at",
            user_id,
        )
    )


async def find_factor(
    conn: asyncpg.Connection, user_id: uuid.UUID, method: str
) -> asyncpg.Record | None:
    """The user's factor of this method."""
    return await conn.fetchrow(
        "SELECT id, method, secret_key, phone_number, email_address, is_enabled, is_primary,"
        " last_used_at, created_at FROM user_mfa WHERE user_id = $1 AND method = $2",
        user_id,
        method,
    )


async def upsert_pending_factor(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    method: str,
    secret_key: str | None,
    phone_number: str | None,
    email_address: str | None,
) -> None:
    """Create or restart an unconfirmed factor (a confirmed one is never overwritten)."""
    await _lock_factors(conn, user_id)
    await conn.execute(
        "INSERT INTO user_mfa (user_id, method, secret_key, phone_number, email_address,"
        " is_enabled) VALUES ($1, $2, $3, $4, $5, false)"
        " ON CONFLICT (user_id, method) DO UPDATE SET secret_key = EXCLUDED.secret_key,"
        " phone_number = EXCLUDED.phone_number, email_address = EXCLUDED.email_address"
        " WHERE user_mfa.is_enabled = false",
        user_id,
        method,
        secret_key,
        phone_number,
        email_address,
    )


async def enable_factor(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, method: str, now: datetime
) -> None:
    """Confirm a factor; the first confirmed factor becomes the primary one.

    Confirming an enabled factor again (a second passkey) leaves it as it was: primary when it
    was, since it does not count itself as another primary.
    """
    await _lock_factors(conn, user_id)
    await conn.execute(
        "UPDATE user_mfa SET is_enabled = true, last_used_at = $3,"
        " is_primary = NOT EXISTS (SELECT 1 FROM user_mfa o WHERE o.user_id = $1"
        " AND o.method <> $2 AND o.is_enabled AND o.is_primary)"
        " WHERE user_id = $1 AND method = $2",
        user_id,
        method,
        now,
    )


async def touch_factor(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, method: str, now: datetime
) -> None:
    """Record a factor's use."""
    await conn.execute(
        "UPDATE user_mfa SET last_used_at = $3 WHERE user_id = $1 AND method = $2",
        user_id,
        method,
        now,
    )


async def delete_factor(conn: asyncpg.Connection, *, user_id: uuid.UUID, method: str) -> bool:
    """Remove a factor; True when one was removed. A user left with enabled factors but no
    primary one (the primary was removed) gets the oldest enabled factor as primary."""
    await _lock_factors(conn, user_id)
    result: str = await conn.execute(
        "DELETE FROM user_mfa WHERE user_id = $1 AND method = $2", user_id, method
    )
    if not result.endswith(" 1"):
        return False
    await conn.execute(
        "UPDATE user_mfa SET is_primary = true WHERE id = (SELECT id FROM user_mfa"
        " WHERE user_id = $1 AND is_enabled ORDER BY created_at, id LIMIT 1)"
        " AND NOT EXISTS (SELECT 1 FROM user_mfa o WHERE o.user_id = $1"
        " AND o.is_enabled AND o.is_primary)",
        user_id,
    )
    return True


async def replace_backup_codes(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, code_hashes: list[bytes], now: datetime
) -> None:
    """Invalidate every backup code of the user and store a new set.

    Replacements of one user's set are serialised until the transaction ends: without that, a
    second request's DELETE would miss the set the first had just inserted (not yet committed
    when its snapshot was taken), and both sets would stay usable.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('auth_backup_codes:' || $1::uuid, 0))",
        user_id,
    )
    await conn.execute("DELETE FROM auth_backup_codes WHERE user_id = $1", user_id)
    await conn.executemany(
        "INSERT INTO auth_backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        [(user_id, code_hash, now) for code_hash in code_hashes],
    )


async def lock_backup_code(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, code_hash: bytes
) -> uuid.UUID | None:
    """An unused backup code's id, its row locked until the transaction ends (not spent yet:
    a second attempt with the same code waits, then finds it spent or still unused)."""
    code_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM auth_backup_codes"
        " WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL FOR UPDATE",
        user_id,
        code_hash,
    )
    return code_id


async def spend_backup_code(conn: asyncpg.Connection, code_id: uuid.UUID, *, now: datetime) -> bool:
    """Use up a backup code; True when it was still unused."""
    found = await conn.fetchval(
        "UPDATE auth_backup_codes SET used_at = $2 WHERE id = $1 AND used_at IS NULL RETURNING id",
        code_id,
        now,
    )
    return found is not None


async def lock_password_hash(conn: asyncpg.Connection, user_id: uuid.UUID) -> str | None:
    """The user's password hash, the row share-locked until the transaction ends: a reset or
    change (which rewrites the hash) waits for a second step being finished, or the second step
    waits for it and reads the new hash."""
    password_hash: str | None = await conn.fetchval(
        "SELECT password_hash FROM users WHERE id = $1 FOR SHARE", user_id
    )
    return password_hash


async def count_backup_codes(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """Unused backup codes left."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM auth_backup_codes WHERE user_id = $1 AND used_at IS NULL", user_id
    )
    return count


async def delete_backup_codes(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Remove every backup code."""
    await conn.execute("DELETE FROM auth_backup_codes WHERE user_id = $1", user_id)


async def insert_credential(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    credential_id: bytes,
    public_key: bytes,
    sign_count: int,
    transports: list[str],
    name: str,
) -> None:
    """Store a registered WebAuthn credential."""
    await conn.execute(
        "INSERT INTO webauthn_credentials (user_id, credential_id, public_key, sign_count,"
        " transports, name) VALUES ($1, $2, $3, $4, $5, $6)",
        user_id,
        credential_id,
        public_key,
        sign_count,
        transports,
        name,
    )


async def list_credentials(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """The user's WebAuthn credentials."""
    return list(
        await conn.fetch(
            "SELECT id, credential_id, public_key, sign_count, transports, name, created_at,"
            " last_used_at FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at",
            user_id,
        )
    )


async def lock_credential(
    conn: asyncpg.Connection, *, user_id: uuid.UUID, credential_id: bytes
) -> asyncpg.Record | None:
    """One of the user's credentials, locked (its sign count is about to change)."""
    return await conn.fetchrow(
        "SELECT id, credential_id, public_key, sign_count FROM webauthn_credentials"
        " WHERE user_id = $1 AND credential_id = $2 FOR UPDATE",
        user_id,
        credential_id,
    )


async def update_sign_count(
    conn: asyncpg.Connection, credential_uuid: uuid.UUID, *, sign_count: int, now: datetime
) -> None:
    """Record an assertion's sign count."""
    await conn.execute(
        "UPDATE webauthn_credentials SET sign_count = $2, last_used_at = $3 WHERE id = $1",
        credential_uuid,
        sign_count,
        now,
    )


async def delete_credentials(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Remove every WebAuthn credential of the user."""
    await conn.execute("DELETE FROM webauthn_credentials WHERE user_id = $1", user_id)
