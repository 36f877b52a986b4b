"""Identities in Blnk's model, and field tokenization.

An identity is a person or an organisation that balances belong to. Seven personal fields
(Blnk's PascalCase names FirstName, LastName, OtherNames, EmailAddress, PhoneNumber, Street,
PostCode) can be tokenized: the plain value is replaced by an AES-256-GCM envelope from
`kit.crypto`, bound to the identity id and the field name, so a token copied onto another
identity or field does not open. The list of sealed fields is a column (the record); the API
shows it as Blnk's `meta_data.tokenized_fields = {Name: true}`, and a client's own
`tokenized_fields` key is ignored, so metadata can neither forge nor erase it. Without a cipher
(no tokenization secret configured), tokenizing and detokenizing answer 403, as in Blnk.

Where Blnk is looser we are stricter without changing the wire: tokenizing several fields is all
or nothing (Blnk stops half way), an update that sends a new value for a sealed field seals the
new value (Blnk would store it in the clear under a "tokenized" flag), and an identity that
balances still belong to cannot be deleted (Blnk's foreign key fails with a 500). The same
foreign key is ours too (migration 0118): a balance names a stored identity or none, and a
deletion racing a balance that names the identity is ordered by the key's row lock, so one of
the two is refused (409 here, or 400 BAL_VALIDATION_ERROR for the balance).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from kit import json_exact
from kit.crypto import EnvelopeCipher
from kit.ids import IdPrefix, new_id
from ledger import identity_repository as repository
from ledger import repository as ledger_repository
from ledger.apikeys import GENERATED_BY_KEY, current_generated_by
from ledger.errors import IdentityNotFoundError
from ledger.surface_errors import (
    FieldAlreadyTokenizedError,
    FieldNotTokenizableError,
    FieldNotTokenizedError,
    IdentityInUseError,
    IdentityValidationError,
    TokenizationDisabledError,
)
from ledger.wire import ZERO_TIME, timestamp

FIELD_LENGTH_MAX: Final = 255  # a plain value; its envelope is two to six times as long
SEALED_FIELD_LENGTH_MAX: Final = 1024  # an envelope: the tokenizable columns' CHECK (0101)
SHORT_FIELD_LENGTH_MAX: Final = 64  # identity_type, gender
META_DATA_BYTES_MAX: Final = 64 * 1024  # metadata is for tags, not documents
FIELDS_PER_REQUEST_MAX: Final = 16  # tokenize/detokenize many: seven real fields, some slack
TOKENIZED_FIELDS_KEY: Final = "tokenized_fields"
IDENTITY_CREATED_EVENT: Final = "identity.created"  # Blnk's webhook event

# Blnk's tokenizable fields (internal/tokenization TokenizableFields) and their columns.
TOKENIZABLE_FIELDS: Final[dict[str, str]] = {
    "FirstName": "first_name",
    "LastName": "last_name",
    "OtherNames": "other_names",
    "EmailAddress": "email_address",
    "PhoneNumber": "phone_number",
    "Street": "street",
    "PostCode": "post_code",
}
_FIELD_BY_COLUMN: Final = {column: name for name, column in TOKENIZABLE_FIELDS.items()}
_SHORT_COLUMNS: Final = frozenset({"identity_type", "gender"})
_IDENTITY_ID: Final = re.compile(
    r"^idt_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


class IdentityIn(BaseModel):
    """POST /identities and PUT /identities/{id}: Blnk's Identity fields (unknown ones ignored)."""

    model_config = ConfigDict(extra="ignore")

    identity_id: str | None = Field(default=None, max_length=64)
    identity_type: str | None = None
    organization_name: str | None = None
    category: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    other_names: str | None = None
    gender: str | None = None
    email_address: str | None = None
    phone_number: str | None = None
    nationality: str | None = None
    street: str | None = None
    country: str | None = None
    state: str | None = None
    post_code: str | None = None
    city: str | None = None
    dob: str | None = Field(default=None, max_length=64)
    meta_data: dict[str, Any] | None = None


def field_name(name: str) -> str:
    """Blnk's PascalCase name of a tokenizable field, from PascalCase, camelCase or snake_case."""
    if name in TOKENIZABLE_FIELDS:
        return name
    pascal = name[:1].upper() + name[1:]
    if pascal in TOKENIZABLE_FIELDS:
        return pascal
    if name in _FIELD_BY_COLUMN:
        return _FIELD_BY_COLUMN[name]
    raise FieldNotTokenizableError(f"field {name[:64]} is not tokenizable", field=name[:64])


def token_context(identity_id: str, name: str) -> str:
    """The associated data an identity field's envelope is bound to."""
    return f"ledger.identities:{identity_id}:{name}"


def identity_json(row: asyncpg.Record) -> dict[str, Any]:
    """An identity as Blnk returns it (the sealed-field list shown in `meta_data`)."""
    meta = {k: v for k, v in (row["meta_data"] or {}).items() if k != TOKENIZED_FIELDS_KEY}
    if row["tokenized_fields"]:
        meta[TOKENIZED_FIELDS_KEY] = dict.fromkeys(row["tokenized_fields"], True)
    body: dict[str, Any] = {"identity_id": row["identity_id"]}
    for column in repository.TEXT_COLUMNS:
        body[column] = row[column]
    body["dob"] = timestamp(row["dob"])
    body["created_at"] = timestamp(row["created_at"])
    body["meta_data"] = meta
    return body


# ---------------------------------------------------------------- validation


def _identity_id(given: str | None) -> str:
    """A client's id (its uuid in canonical lower case), or a new one."""
    if not given:
        return new_id(IdPrefix.IDENTITY)
    if _IDENTITY_ID.match(given) is None:
        raise IdentityValidationError("identity_id must start with idt_ followed by a valid UUID")
    return given.lower()


def _fields(body: IdentityIn, *, kept: Mapping[str, str] | None = None) -> dict[str, str]:
    """The body's text fields; a sealed field's stored token sent back unchanged (`kept`, by
    column) is no plain value, so the plain limit does not apply to it."""
    fields: dict[str, str] = {}
    for column in repository.TEXT_COLUMNS:
        value = getattr(body, column) or ""
        limit = SHORT_FIELD_LENGTH_MAX if column in _SHORT_COLUMNS else FIELD_LENGTH_MAX
        if len(value) > limit and (kept is None or value != kept.get(column)):
            raise IdentityValidationError(f"{column} is longer than {limit} characters")
        fields[column] = value
    return fields


def _dob(text: str | None) -> datetime | None:
    if not text or text == ZERO_TIME:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise IdentityValidationError("dob must be an RFC 3339 time") from exc
    if value.tzinfo is None:
        raise IdentityValidationError("dob needs a UTC offset (RFC 3339)")
    try:
        # PostgreSQL's driver stores the instant in UTC, where the year may leave 1-9999.
        value.astimezone(UTC)
    except OverflowError as exc:
        raise IdentityValidationError("dob is outside years 1-9999 in UTC") from exc
    return value


def _meta_data(given: dict[str, Any] | None) -> dict[str, Any]:
    meta = {k: v for k, v in (given or {}).items() if k != TOKENIZED_FIELDS_KEY}
    if len(json_exact.encode(meta)) > META_DATA_BYTES_MAX:
        raise IdentityValidationError(f"meta_data is larger than {META_DATA_BYTES_MAX} bytes")
    return meta


def _require(cipher: EnvelopeCipher | None) -> EnvelopeCipher:
    if cipher is None:
        raise TokenizationDisabledError()
    return cipher


def _seal(cipher: EnvelopeCipher | None, identity_id: str, name: str, value: str) -> str:
    """The envelope of a field's plain value; refused when it would not fit the column (a
    value of wide UTF-8 characters grows up to six times)."""
    token = _require(cipher).encrypt_text(value, context=token_context(identity_id, name))
    if len(token) > SEALED_FIELD_LENGTH_MAX:
        raise IdentityValidationError(
            f"{TOKENIZABLE_FIELDS[name]} is too long to tokenize", field=name
        )
    return token


async def _locked(conn: asyncpg.Connection, identity_id: str) -> asyncpg.Record:
    row = await repository.find_identity(conn, identity_id, for_update=True)
    if row is None:
        raise IdentityNotFoundError(f"identity {identity_id} not found", identity_id=identity_id)
    return row


# ---------------------------------------------------------------- service


async def create_identity(
    conn: asyncpg.Connection, body: IdentityIn, *, now: datetime
) -> dict[str, Any]:
    """POST /identities; Blnk's `identity.created` webhook commits with the identity (outbox)."""
    identity_id = _identity_id(body.identity_id)
    fields, dob, meta = _fields(body), _dob(body.dob), _meta_data(body.meta_data)
    generated_by = current_generated_by()
    if generated_by is not None:
        meta[GENERATED_BY_KEY] = generated_by
    try:
        async with conn.transaction():
            row = await repository.insert_identity(
                conn,
                identity_id=identity_id,
                fields=fields,
                dob=dob,
                meta_data=meta,
                created_at=now,
            )
    except asyncpg.UniqueViolationError as exc:
        raise IdentityValidationError(
            f"identity {identity_id} already exists", identity_id=identity_id
        ) from exc
    created = identity_json(row)
    event = (new_id(IdPrefix.EVENT), IDENTITY_CREATED_EVENT, identity_id, created)
    await ledger_repository.insert_outbox(conn, None, [event])
    return created


async def get_identity(conn: asyncpg.Connection, identity_id: str) -> dict[str, Any]:
    """GET /identities/{id}."""
    row = await repository.find_identity(conn, identity_id)
    if row is None:
        raise IdentityNotFoundError(f"identity {identity_id} not found", identity_id=identity_id)
    return identity_json(row)


async def update_identity(
    conn: asyncpg.Connection,
    identity_id: str,
    body: IdentityIn,
    *,
    cipher: EnvelopeCipher | None,
) -> None:
    """PUT /identities/{id}: every field takes the body's value (Blnk replaces the record).

    A sealed field stays sealed: the same token keeps it, a new value is sealed in its place,
    and an empty value clears it (nothing is left to protect).
    """
    row = await _locked(conn, identity_id)
    tokens = {
        TOKENIZABLE_FIELDS[name]: row[TOKENIZABLE_FIELDS[name]] for name in row["tokenized_fields"]
    }
    fields, dob, meta = _fields(body, kept=tokens), _dob(body.dob), _meta_data(body.meta_data)
    still_sealed: list[str] = []
    for name in row["tokenized_fields"]:
        column = TOKENIZABLE_FIELDS[name]
        value = fields[column]
        if not value:
            continue
        if value != row[column]:
            fields[column] = _seal(cipher, identity_id, name, value)
        still_sealed.append(name)
    await repository.replace_identity(
        conn, identity_id, fields=fields, dob=dob, meta_data=meta, tokenized_fields=still_sealed
    )


async def delete_identity(conn: asyncpg.Connection, identity_id: str) -> None:
    """DELETE /identities/{id}; refused while a balance belongs to the identity."""
    await _locked(conn, identity_id)
    if await repository.identity_has_balances(conn, identity_id):
        raise _in_use(identity_id)
    try:
        await repository.delete_identity(conn, identity_id)
    except asyncpg.ForeignKeyViolationError as exc:
        # PostgreSQL's key (0118) backs the look above, which sees every balance naming the
        # identity: such a balance locks the identity until it commits, and `_locked` waits.
        if exc.constraint_name != ledger_repository.BALANCE_IDENTITY_FK:
            raise
        raise _in_use(identity_id) from exc


def _in_use(identity_id: str) -> IdentityInUseError:
    return IdentityInUseError(f"identity {identity_id} still has balances", identity_id=identity_id)


async def tokenize_fields(
    conn: asyncpg.Connection,
    identity_id: str,
    names: Sequence[str],
    *,
    cipher: EnvelopeCipher | None,
) -> None:
    """Seal the named fields, all or none (POST .../tokenize/{field} and .../tokenize)."""
    wanted = list(dict.fromkeys(field_name(name) for name in names))
    row = await _locked(conn, identity_id)
    for name in wanted:
        if name in row["tokenized_fields"]:
            raise FieldAlreadyTokenizedError(f"field {name} is already tokenized", field=name)
    values = {
        TOKENIZABLE_FIELDS[name]: _seal(cipher, identity_id, name, row[TOKENIZABLE_FIELDS[name]])
        for name in wanted
    }
    await repository.set_sealed_fields(
        conn, identity_id, values=values, tokenized_fields=[*row["tokenized_fields"], *wanted]
    )


async def detokenize_fields(
    conn: asyncpg.Connection,
    identity_id: str,
    names: Sequence[str],
    *,
    cipher: EnvelopeCipher | None,
) -> dict[str, str]:
    """The plain values of sealed fields, keyed as asked (all sealed fields when none are named,
    keyed by Blnk's names). Nothing is written: the fields stay sealed."""
    row = await repository.find_identity(conn, identity_id)
    if row is None:
        raise IdentityNotFoundError(f"identity {identity_id} not found", identity_id=identity_id)
    asked = {name: field_name(name) for name in names} or {
        name: name for name in row["tokenized_fields"]
    }
    for given, name in asked.items():
        if name not in row["tokenized_fields"]:
            raise FieldNotTokenizedError(f"field {given[:64]} is not tokenized", field=given[:64])
    opener = _require(cipher) if asked else None
    return {
        given: opener.decrypt_text(
            row[TOKENIZABLE_FIELDS[name]], context=token_context(identity_id, name)
        )
        for given, name in asked.items()
        if opener is not None
    }


async def tokenized_fields(conn: asyncpg.Connection, identity_id: str) -> list[str]:
    """GET /identities/{id}/tokenized-fields."""
    row = await repository.find_identity(conn, identity_id)
    if row is None:
        raise IdentityNotFoundError(f"identity {identity_id} not found", identity_id=identity_id)
    return list(row["tokenized_fields"])
