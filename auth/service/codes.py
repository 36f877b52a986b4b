"""One-time codes in PostgreSQL: issue (replacing any open one) and check (bounded guesses)."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from auth.constants import CODE_ATTEMPTS_MAX, CODE_TTL_S
from auth.models import CodePurpose
from auth.otp import code_digest, new_numeric_code
from auth.repository import codes as repository


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """Whether a code matched, and where it was sent."""

    is_valid: bool
    destination: str | None = None


def digest(pepper: bytes, purpose: CodePurpose, user_id: uuid.UUID, code: str) -> bytes:
    """The stored form of a code."""
    return code_digest(pepper, purpose=purpose.value, subject=str(user_id), code=code)


async def issue_code(
    conn: asyncpg.Connection,
    *,
    pepper: bytes,
    user_id: uuid.UUID,
    purpose: CodePurpose,
    destination: str | None,
    now: datetime,
) -> str:
    """A fresh 6-digit code for `purpose`; older open codes of that purpose stop working."""
    code = new_numeric_code()
    await repository.replace_code(
        conn,
        user_id=user_id,
        purpose=purpose.value,
        code_hash=digest(pepper, purpose, user_id, code),
        destination=destination,
        attempts_max=CODE_ATTEMPTS_MAX,
        created_at=now,
        expires_at=now + timedelta(seconds=CODE_TTL_S),
    )
    return code


async def check_code(
    conn: asyncpg.Connection,
    *,
    pepper: bytes,
    user_id: uuid.UUID,
    purpose: CodePurpose,
    code: str,
    now: datetime,
) -> CodeCheck:
    """Spend the open code if `code` matches.

    A wrong guess counts; the last allowed wrong guess ends the code.
    """
    row = await repository.lock_open_code(conn, user_id=user_id, purpose=purpose.value, now=now)
    if row is None:
        return CodeCheck(is_valid=False)
    expected = digest(pepper, purpose, user_id, code.strip())
    if not hmac.compare_digest(bytes(row["code_hash"]), expected):
        await repository.count_attempt(conn, row["id"], now=now)
        return CodeCheck(is_valid=False)
    await repository.consume(conn, row["id"], now=now)
    return CodeCheck(is_valid=True, destination=row["destination"])
