"""Blnk's request bodies: parsing, validation, and conversion to engine commands.

This is the only place client numbers become minor units. Amounts arrive as `amount` (major
units, a JSON number or numeric text) or `precise_amount` (minor units, a bare integer or the
digit string blnk-python sends); each goes through `kit.money` once. Unknown fields are ignored
like Blnk (gin + encoding/json); a field of the wrong type is "Invalid input" (400
GEN_MALFORMED_REQUEST); a value that breaks a rule is 400 TXN_VALIDATION_ERROR with the rule.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from kit import json_exact
from kit.errors import DomainError
from kit.ids import IdPrefix, new_id
from kit.money import (
    FractionalPrecisionError,
    InvalidPrecisionError,
    parse_decimal,
    parse_minor_units,
    parse_precision,
    to_minor_units,
)
from kit.money import (
    InvalidAmountError as MoneyInvalidAmountError,
)
from ledger.errors import (
    BulkEmptyError,
    BulkLimitExceededError,
    InvalidAmountError,
    InvalidStatusActionError,
    MalformedRequestError,
    PrecisionNotIntegerError,
    TransactionValidationError,
)
from ledger.models import (
    CURRENCY_CODE,
    INDICATOR_NAME,
    CommitInflight,
    IdempotencyClaim,
    Leg,
    PostBulk,
    PostTransaction,
    RefundTransaction,
    VoidInflight,
)
from ledger.wire import ZERO_TIME_VALUE, check_utc_years

BODY_BYTES_MAX: Final = 5 * 1024 * 1024  # Blnk's limit (api: 5 MiB)
BULK_TRANSACTIONS_MAX: Final = 10_000  # Blnk's bulk limit
BULK_INFLIGHT_MAX: Final = 100  # Blnk's bulk commit/void limit
REFERENCE_LENGTH_MAX: Final = 255
DESCRIPTION_LENGTH_MAX: Final = 4096
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 255
META_DATA_BYTES_MAX: Final = 64 * 1024  # metadata is for tags, not documents
# How deep a body's arrays and objects may nest (the body itself is one level). Go's decoder
# takes 10,000; ours must also write back what it takes, and orjson's writer stops at 255
# levels, past which the standard library's writer recurses into the interpreter's stack.
JSON_DEPTH_MAX: Final = 128


# U+0000 in a JSON body: PostgreSQL's text and jsonb cannot hold it, and JSON can only carry it
# escaped, as `\u0000` after an even run of other backslashes (`\\u0000` is a backslash and
# the text "u0000", which is fine). The substring test runs first, in C, on every body.
_NUL_ESCAPE: Final = b"\\u0000"
_NUL_ESCAPE_RE: Final = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def load_json(raw: bytes) -> Any:
    """Parse a request body; anything that is not JSON is Blnk's "Invalid input", and so is
    text with the NUL character in it (refused here, before anything is written, rather than
    by PostgreSQL) and nesting past JSON_DEPTH_MAX (which the JSON writer could not store)."""
    if len(raw) > BODY_BYTES_MAX:
        raise MalformedRequestError("request body too large")
    if not raw.strip():
        raise MalformedRequestError()
    try:
        parsed = json_exact.loads(raw)  # integers exact: orjson reads 10^20 + 1 as a float
    except ValueError as exc:
        raise MalformedRequestError() from exc
    if _NUL_ESCAPE in raw and _NUL_ESCAPE_RE.search(raw):
        raise MalformedRequestError("text may not contain the NUL character (U+0000)")
    # No body with fewer brackets than the bound can pass it; the count runs in C.
    if raw.count(b"[") + raw.count(b"{") > JSON_DEPTH_MAX and _nests_deeper(parsed, JSON_DEPTH_MAX):
        raise MalformedRequestError(f"JSON may nest at most {JSON_DEPTH_MAX} levels deep")
    return parsed


def _nests_deeper(value: Any, depth_max: int) -> bool:
    """Whether `value`'s arrays and objects nest more than `depth_max` levels deep (walked
    with a list, not recursion: the point is not to run out of stack)."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > depth_max:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


M = TypeVar("M", bound=BaseModel)


def validate_body(model: type[M], data: Any) -> M:
    """Validate `data` against `model`: wrong types are "Invalid input" (400)."""
    if not isinstance(data, dict):
        raise MalformedRequestError()
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MalformedRequestError(f"Invalid input: {where}: {first['msg']}") from exc


def request_hash(data: Any) -> str:
    """SHA-256 of the canonical JSON of a request (for Idempotency-Key comparisons)."""
    return hashlib.sha256(json_exact.encode(data, sort_keys=True)).hexdigest()


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# A number field takes a JSON number or numeric text, never a boolean (which lax validation
# reads as 1; Go's decoder refuses it).
NumberOrText = StrictInt | StrictFloat | StrictStr
IntegerOrText = StrictInt | StrictStr  # minor units: an integer or the digit string of one


class LegIn(_Body):
    """A split leg as Blnk takes it."""

    identifier: str = Field(min_length=1, max_length=255)
    distribution: str | None = Field(default=None, max_length=64)
    precise_distribution: IntegerOrText | None = None
    narration: str | None = Field(default=None, max_length=DESCRIPTION_LENGTH_MAX)


class TransactionIn(_Body):
    """POST /transactions (and each item of a bulk)."""

    amount: NumberOrText | None = None
    precise_amount: IntegerOrText | None = None
    precision: NumberOrText | None = None
    reference: str = ""
    description: str = Field(default="", max_length=DESCRIPTION_LENGTH_MAX)
    currency: str = ""
    source: str | None = Field(default=None, max_length=255)
    destination: str | None = Field(default=None, max_length=255)
    sources: list[LegIn] | None = None
    destinations: list[LegIn] | None = None
    allow_overdraft: StrictBool = False
    overdraft_limit: NumberOrText | None = None
    inflight: StrictBool = False
    skip_queue: StrictBool = False
    atomic: StrictBool = False
    dry_run: StrictBool = False
    scheduled_for: datetime | None = None
    inflight_expiry_date: datetime | None = None
    inflight_commit_date: datetime | None = None
    effective_date: datetime | None = None
    meta_data: dict[str, Any] | None = None

    @field_validator(
        "scheduled_for", "inflight_expiry_date", "inflight_commit_date", "effective_date"
    )
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("times need a UTC offset (RFC 3339)")
        return check_utc_years(value)

    @field_validator("scheduled_for", "inflight_expiry_date", "inflight_commit_date")
    @classmethod
    def _unset_when_zero(cls, value: datetime | None) -> datetime | None:
        """Go's zero time is how Blnk (and these answers) write an unset time; Blnk reads it
        back as unset. Stored as a date, it would make a hold expire or commit at once."""
        return None if value == ZERO_TIME_VALUE else value


class BulkIn(_Body):
    """POST /transactions/bulk."""

    transactions: list[dict[str, Any]] = Field(default_factory=list)
    atomic: StrictBool = False
    inflight: StrictBool = False
    run_async: StrictBool = False
    skip_queue: StrictBool = False
    dry_run: StrictBool = False


class InflightUpdateIn(_Body):
    """PUT /transactions/inflight/{id}."""

    status: str = ""
    amount: NumberOrText | None = None
    precise_amount: IntegerOrText | None = None
    skip_queue: StrictBool = False
    dry_run: StrictBool = False


class BulkCommitItemIn(_Body):
    """One item of POST /transactions/inflight/bulk/commit."""

    transaction_id: str = Field(min_length=1, max_length=255)
    amount: NumberOrText | None = None
    precise_amount: IntegerOrText | None = None


class BulkCommitIn(_Body):
    """POST /transactions/inflight/bulk/commit."""

    transactions: list[BulkCommitItemIn] = Field(default_factory=list)
    skip_queue: StrictBool = False
    dry_run: StrictBool = False


class BulkVoidIn(_Body):
    """POST /transactions/inflight/bulk/void."""

    transaction_ids: list[str] = Field(default_factory=list)
    skip_queue: StrictBool = False
    dry_run: StrictBool = False


class RefundIn(_Body):
    """POST /refund-transaction/{id} (all optional)."""

    skip_queue: StrictBool = False
    description: str | None = Field(default=None, max_length=DESCRIPTION_LENGTH_MAX)
    meta_data: dict[str, Any] | None = None
    dry_run: StrictBool = False


# ---------------------------------------------------------------- conversion


def _precision(value: NumberOrText | None) -> int:
    """A transaction's precision. As Blnk: a fractional one is TXN_PRECISION_NOT_INTEGER, a
    negative (or, here, too large) one TXN_VALIDATION_ERROR."""
    try:
        return parse_precision(value)
    except FractionalPrecisionError as exc:
        raise PrecisionNotIntegerError(exc.message, precision=str(value)) from exc
    except InvalidPrecisionError as exc:
        raise TransactionValidationError(exc.message, precision=str(value)) from exc
    except MoneyInvalidAmountError as exc:
        raise PrecisionNotIntegerError("precision must be a whole number") from exc


def _minor_units(amount: NumberOrText | None, precise: IntegerOrText | None, precision: int) -> int:
    try:
        if precise is not None and amount is None:
            units = parse_minor_units(precise)
        elif amount is not None and precise is None:
            units = to_minor_units(amount, precision)
        else:
            raise TransactionValidationError("send exactly one of amount and precise_amount")
    except MoneyInvalidAmountError as exc:
        raise TransactionValidationError(exc.message) from exc
    # Blnk's request validation: TXN_VALIDATION_ERROR (under "errors"), not TXN_INVALID_AMOUNT.
    if units < 0:
        raise TransactionValidationError("amount must not be negative")
    if units == 0:
        raise TransactionValidationError("amount must be greater than zero")
    return units


def _overdraft_limit(value: NumberOrText | None) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        limit = parse_decimal(value)
    except MoneyInvalidAmountError as exc:
        raise TransactionValidationError("overdraft_limit is not a number") from exc
    if limit < 0:
        raise TransactionValidationError("overdraft_limit must not be negative")
    return limit


def _legs(legs: list[LegIn] | None) -> tuple[Leg, ...] | None:
    if not legs:
        return None
    converted = []
    for leg in legs:
        precise = None
        if leg.precise_distribution is not None:
            try:
                precise = parse_minor_units(leg.precise_distribution)
            except MoneyInvalidAmountError as exc:
                raise TransactionValidationError(
                    "precise_distribution must be a whole number"
                ) from exc
        converted.append(
            Leg(
                identifier=leg.identifier,
                distribution=leg.distribution,
                precise_distribution=precise,
                narration=leg.narration,
            )
        )
    return tuple(converted)


def _check_ends(body: TransactionIn) -> None:
    if body.source and body.sources:
        raise TransactionValidationError("send source or sources, not both")
    if body.destination and body.destinations:
        raise TransactionValidationError("send destination or destinations, not both")
    if body.sources and body.destinations:
        raise TransactionValidationError("only one side of a transaction may be split")
    if not (body.source or body.sources):
        raise TransactionValidationError("source is required")
    if not (body.destination or body.destinations):
        raise TransactionValidationError("destination is required")
    if body.source and body.destination and body.source == body.destination:
        raise TransactionValidationError("source and destination cannot be the same")
    ends = [body.source, body.destination]
    ends += [leg.identifier for leg in (*(body.sources or ()), *(body.destinations or ()))]
    for end in ends:
        # An `@name` end creates its indicator balance on first use, whose name the balances
        # table checks; refused here, it is a 400 instead of a batch PostgreSQL refuses.
        if end and end.startswith("@") and not INDICATOR_NAME.match(end):
            raise TransactionValidationError(
                f"{end[:40]!r} is no indicator: @ followed by 1-254 non-space characters"
            )


def fits_meta_data(meta: dict[str, Any]) -> bool:
    """Whether `meta` is within `META_DATA_BYTES_MAX` as JSON, on every entity that keeps it."""
    return len(json_exact.encode(meta)) <= META_DATA_BYTES_MAX


def transaction_command(
    body: TransactionIn,
    *,
    now: datetime,
    idempotency_key: str | None = None,
    raw: Any = None,
    overrides: dict[str, Any] | None = None,
) -> PostTransaction:
    """Validate a transaction request and build its command (ids minted here)."""
    if not body.reference or len(body.reference) > REFERENCE_LENGTH_MAX:
        raise TransactionValidationError(
            f"reference is required (at most {REFERENCE_LENGTH_MAX} characters)"
        )
    if not CURRENCY_CODE.match(body.currency):
        raise TransactionValidationError(
            "currency is required: a code of 1-32 letters, digits, _ . : -"
        )
    _check_ends(body)
    precision = _precision(body.precision)
    units = _minor_units(body.amount, body.precise_amount, precision)
    meta = dict(body.meta_data or {})
    if not fits_meta_data(meta):
        raise TransactionValidationError(f"meta_data is larger than {META_DATA_BYTES_MAX} bytes")
    inflight = body.inflight or bool(meta.pop("inflight", False) is True)
    claim = None
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_LENGTH_MAX:
            raise TransactionValidationError("Idempotency-Key must be 1-255 characters")
        claim = IdempotencyClaim(idempotency_key, request_hash(raw))
    fields: dict[str, Any] = {
        "transaction_id": new_id(IdPrefix.TRANSACTION),
        "reference": body.reference,
        "precise_amount": units,
        "precision": precision,
        "currency": body.currency,
        "description": body.description,
        "source": body.source,
        "destination": body.destination,
        "sources": _legs(body.sources),
        "destinations": _legs(body.destinations),
        "allow_overdraft": body.allow_overdraft,
        "overdraft_limit": _overdraft_limit(body.overdraft_limit),
        "inflight": inflight,
        "skip_queue": body.skip_queue,
        "atomic": body.atomic,
        "created_at": now,
        "effective_date": body.effective_date,
        "scheduled_for": body.scheduled_for,
        "inflight_expiry_date": body.inflight_expiry_date,
        "inflight_commit_date": body.inflight_commit_date,
        "meta_data": meta,
        "idempotency": claim,
    }
    fields.update(overrides or {})
    return PostTransaction(**fields)


def bulk_command(body: BulkIn, *, now: datetime) -> PostBulk:
    """Validate a bulk request; each item is validated like a single transaction."""
    if not body.transactions:
        raise BulkEmptyError("bulk request has no transactions")
    if len(body.transactions) > BULK_TRANSACTIONS_MAX:
        raise BulkLimitExceededError(
            f"a bulk request takes at most {BULK_TRANSACTIONS_MAX} transactions"
        )
    references: set[str] = set()
    items: list[PostTransaction] = []
    for index, raw in enumerate(body.transactions):
        try:
            item = validate_body(TransactionIn, raw)
            command = transaction_command(
                item,
                now=now,
                overrides={
                    "inflight": body.inflight or item.inflight,
                    "skip_queue": True,
                    "scheduled_for": None,
                },
            )
        except DomainError as exc:
            raise exc.with_details(index=index) from exc
        if command.reference in references:
            raise TransactionValidationError(
                f"duplicate reference {command.reference!r} in the batch", index=index
            )
        references.add(command.reference)
        items.append(command)
    return PostBulk(
        batch_id=new_id(IdPrefix.BULK),
        items=tuple(items),
        atomic=body.atomic,
        inflight=body.inflight,
    )


def _commit_amount(
    amount: NumberOrText | None, precise: IntegerOrText | None
) -> tuple[int | None, Decimal | None]:
    try:
        if precise is not None:
            units = parse_minor_units(precise)
            if units <= 0:
                raise InvalidAmountError("precise_amount must be greater than zero")
            return units, None
        if amount is not None:
            value = parse_decimal(amount)
            if value < 0:
                raise InvalidAmountError("amount must not be negative")
            return None, value
    except MoneyInvalidAmountError as exc:
        raise InvalidAmountError(exc.message) from exc
    return None, None


def inflight_command(
    transaction_id: str, body: InflightUpdateIn, *, now: datetime
) -> CommitInflight | VoidInflight:
    """Build the commit or void of a hold."""
    action = body.status.lower()
    child_id, child_reference = new_id(IdPrefix.TRANSACTION), new_id(IdPrefix.REFERENCE)
    if action == "commit":
        precise, amount = _commit_amount(body.amount, body.precise_amount)
        return CommitInflight(
            target_id=transaction_id,
            child_id=child_id,
            child_reference=child_reference,
            precise_amount=precise,
            amount=amount,
            skip_queue=body.skip_queue,
            created_at=now,
        )
    if action == "void":
        return VoidInflight(
            target_id=transaction_id,
            child_id=child_id,
            child_reference=child_reference,
            skip_queue=body.skip_queue,
            created_at=now,
        )
    raise InvalidStatusActionError("status must be commit or void")


def refund_command(transaction_id: str, body: RefundIn, *, now: datetime) -> RefundTransaction:
    """Build a refund."""
    return RefundTransaction(
        original_id=transaction_id,
        refund_id=new_id(IdPrefix.TRANSACTION),
        skip_queue=body.skip_queue,
        description=body.description,
        meta_data=dict(body.meta_data or {}),
        created_at=now,
    )
