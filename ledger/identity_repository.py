"""Every SQL statement of identities (`ledger.identities`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg

from kit.errors import InvariantError

# The columns a request may set, in Blnk's order; a whitelist for the statements built below.
TEXT_COLUMNS: Final = (
    "identity_type",
    "organization_name",
    "category",
    "first_name",
    "last_name",
    "other_names",
    "gender",
    "email_address",
    "phone_number",
    "nationality",
    "street",
    "country",
    "state",
    "post_code",
    "city",
)
IDENTITY_COLUMNS: Final = (
    "identity_id, " + ", ".join(TEXT_COLUMNS) + ", dob, created_at, meta_data, tokenized_fields"
)


async def insert_identity(
    conn: asyncpg.Connection,
    *,
    identity_id: str,
    fields: Mapping[str, str],
    dob: datetime | None,
    meta_data: dict[str, Any],
    created_at: datetime,
) -> asyncpg.Record:
    """Create an identity; raises `asyncpg.UniqueViolationError` when the id is taken."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"INSERT INTO ledger.identities (identity_id, {', '.join(TEXT_COLUMNS)}, dob, meta_data,"  # noqa: S608 - constant columns
        f" created_at) VALUES ($1, {', '.join(f'${i}' for i in range(2, len(TEXT_COLUMNS) + 2))},"
        f" ${len(TEXT_COLUMNS) + 2}, ${len(TEXT_COLUMNS) + 3}, ${len(TEXT_COLUMNS) + 4})"
        f" RETURNING {IDENTITY_COLUMNS}",
        identity_id,
        *(fields.get(column, "") for column in TEXT_COLUMNS),
        dob,
        meta_data,
        created_at,
    )
    if row is None:
        raise InvariantError("INSERT ... RETURNING gave no row")
    return row


async def find_identity(
    conn: asyncpg.Connection, identity_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    """An identity by id, locked for the rest of the transaction when `for_update`."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {IDENTITY_COLUMNS} FROM ledger.identities WHERE identity_id = $1"  # noqa: S608 - constant columns
        + (" FOR UPDATE" if for_update else ""),
        identity_id,
    )
    return row


async def replace_identity(
    conn: asyncpg.Connection,
    identity_id: str,
    *,
    fields: Mapping[str, str],
    dob: datetime | None,
    meta_data: dict[str, Any],
    tokenized_fields: Sequence[str],
) -> None:
    """Overwrite every field of an identity (its id and creation time stay)."""
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(TEXT_COLUMNS, start=2))
    count = len(TEXT_COLUMNS)
    await conn.execute(
        f"UPDATE ledger.identities SET {assignments}, dob = ${count + 2}, meta_data = ${count + 3},"  # noqa: S608 - whitelisted columns
        f" tokenized_fields = ${count + 4} WHERE identity_id = $1",
        identity_id,
        *(fields.get(column, "") for column in TEXT_COLUMNS),
        dob,
        meta_data,
        list(tokenized_fields),
    )


async def set_sealed_fields(
    conn: asyncpg.Connection,
    identity_id: str,
    *,
    values: Mapping[str, str],
    tokenized_fields: Sequence[str],
) -> None:
    """Write sealed values into some columns and the new list of tokenized fields."""
    columns = [column for column in TEXT_COLUMNS if column in values]
    assignments = "".join(f"{column} = ${i}, " for i, column in enumerate(columns, start=3))
    await conn.execute(
        f"UPDATE ledger.identities SET {assignments}tokenized_fields = $2"  # noqa: S608 - whitelisted columns
        " WHERE identity_id = $1",
        identity_id,
        list(tokenized_fields),
        *(values[column] for column in columns),
    )


async def delete_identity(conn: asyncpg.Connection, identity_id: str) -> bool:
    """Remove an identity; False when there was none. Raises `asyncpg.ForeignKeyViolationError`
    when a balance still names it (migration 0118)."""
    status: str = await conn.execute(
        "DELETE FROM ledger.identities WHERE identity_id = $1", identity_id
    )
    return status.endswith(" 1")


async def identity_has_balances(conn: asyncpg.Connection, identity_id: str) -> bool:
    """True when a balance still belongs to the identity."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger.balances WHERE identity_id = $1)", identity_id
    )
    return found
