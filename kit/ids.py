"""Prefixed identifiers: `<prefix>_<uuid4>`, Blnk's format, from this one module.

Every kind of record has one prefix, listed in `IdPrefix`; `new_id` is the only place ids are
minted and `parse_id` the only place they are checked, so a balance id can never be passed where
a transaction id is expected without an error saying so.
"""

from __future__ import annotations

import os
import uuid
from enum import StrEnum
from typing import Final

from kit.errors import ValidationError

ID_LENGTH_MAX: Final = 64  # longest prefix (api_key_) + 36 uuid characters, with room to spare


class IdPrefix(StrEnum):
    """One prefix per kind of record (the ledger's are Blnk's own)."""

    LEDGER = "ldg"
    BALANCE = "bln"
    TRANSACTION = "txn"
    IDENTITY = "idt"
    MONITOR = "mon"
    HOOK = "hook"
    API_KEY = "api_key"
    BULK = "bulk"
    RULE = "rule"
    RECONCILIATION = "recon"
    UPLOAD = "upload"
    REFERENCE = "ref"
    EVENT = "evt"
    WEBHOOK = "whk"
    REQUEST = "req"
    SESSION = "ses"
    USER = "usr"


class InvalidIdError(ValidationError):
    """An id does not have the expected prefix or is not a well-formed uuid."""

    code = "GEN_INVALID_ID"
    status = 400


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid4_text() -> str:
    """A fresh random UUID (version 4) in its 36-character text form: 16 random bytes written
    in the layout directly (`str(uuid.uuid4())` builds and validates an object first and costs
    about three times as much; ids are minted several times for every transaction)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def new_id(prefix: IdPrefix) -> str:
    """Mint a fresh id of the given kind."""
    return f"{prefix.value}_{uuid4_text()}"


def parse_id(value: str, prefix: IdPrefix) -> uuid.UUID:
    """Check that `value` is an id of kind `prefix` and return its uuid part."""
    head = f"{prefix.value}_"
    if len(value) > ID_LENGTH_MAX or not value.startswith(head):
        raise InvalidIdError(f"expected an id starting with {head!r}", id=value[:ID_LENGTH_MAX])
    try:
        return uuid.UUID(value[len(head) :])
    except ValueError as exc:
        raise InvalidIdError("the id does not end in a valid uuid", id=value) from exc


def is_id(value: str, prefix: IdPrefix) -> bool:
    """True when `value` is a well-formed id of kind `prefix`."""
    try:
        parse_id(value, prefix)
    except InvalidIdError:
        return False
    return True
