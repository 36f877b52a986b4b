"""The ledger's errors, with Blnk's codes and statuses (internal/apierror/codes.go).

Each renders as Blnk's body `{"error", "error_detail": {code, message, details}}` on `/ledger`,
except where Blnk kept an older shape (`api/errors.go`), which an error's `body_variant` names:

- `BlnkBody.ERRORS`: the message under `"errors"` in place of `"error"`. Blnk's request
  validation of ledgers (create, rename: the body too), balances and balance monitors (create),
  and transactions (single and bulk items: TXN_VALIDATION_ERROR).
- `BlnkBody.PARSE_ERRORS`: the list of `{"Param", "Message"}` under `"errors"`, and as
  `error_detail.details` too: query-string filters that do not parse (`FilterParseError`).
- `BlnkBody.HOOK` and `BlnkBody.HOOK_LOOKUP`: `{"code", "message", "details", "error_detail"}`,
  where the top-level `code` is Blnk's pre-catalog code (`INVALID_INPUT`, or `NOT_FOUND` on
  GET /hooks/{id}) and `details` is always present. A hook handler answers it for every
  failure past its master-key check; that check keeps the standard body.

Both Blnk SDKs read `error_detail` first, so every variant parses to the same code and message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from kit.errors import (
    AppError,
    ConflictError,
    DependencyError,
    DomainError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)


class BlnkBody(StrEnum):
    """Blnk's older error bodies, which some of its paths still answer (see the module note)."""

    ERRORS = "errors"
    PARSE_ERRORS = "parse_errors"
    HOOK = "hook"
    HOOK_LOOKUP = "hook_lookup"


@contextmanager
def answered_as(variant: BlnkBody, *kinds: type[AppError]) -> Iterator[None]:
    """Errors of `kinds` (any `AppError` when none are named) raised inside take Blnk's
    `variant` body, unless they already name one of their own."""
    try:
        yield
    except AppError as exc:
        if exc.body_variant is None and (not kinds or isinstance(exc, kinds)):
            exc.body_variant = variant
        raise


class MalformedRequestError(DomainError):
    """The body is not JSON, or a field has the wrong type (Blnk: "Invalid input")."""

    code = "GEN_MALFORMED_REQUEST"
    status = 400
    default_message = "Invalid input"


class LedgerValidationError(DomainError):
    """A field breaks a rule of the ledger's API."""

    code = "GEN_VALIDATION_ERROR"
    status = 400


class FilterParseError(LedgerValidationError):
    """Query-string filters that do not parse; `details["errors"]` lists `{"Param", "Message"}`
    per parameter, the items of Blnk's `filter.ParseError` (its Go field names as keys)."""

    default_message = "invalid filter parameters"
    body_variant = BlnkBody.PARSE_ERRORS

    @classmethod
    def of(cls, problems: list[tuple[str, str]]) -> FilterParseError:
        """The error for `(parameter, message)` pairs."""
        items: list[dict[str, Any]] = [
            {"Param": param, "Message": message} for param, message in problems
        ]
        return cls(errors=items)


# ---------------------------------------------------------------- transactions


class TransactionValidationError(DomainError):
    """A transaction request breaks a rule (Blnk: TXN_VALIDATION_ERROR, under `"errors"`)."""

    code = "TXN_VALIDATION_ERROR"
    status = 400
    body_variant = BlnkBody.ERRORS


class InvalidAmountError(DomainError):
    """The amount is missing, negative or malformed."""

    code = "TXN_INVALID_AMOUNT"
    status = 400


class PrecisionNotIntegerError(DomainError):
    """The precision is not a whole number."""

    code = "TXN_PRECISION_NOT_INTEGER"
    status = 400


class InsufficientFundsError(DomainError):
    """The source balance cannot cover the amount within its overdraft floor."""

    code = "TXN_INSUFFICIENT_FUNDS"
    status = 400
    default_message = "insufficient funds in source balance"


class OverdraftLimitExceededError(InsufficientFundsError):
    """The transaction would take the source below its overdraft limit (same code as Blnk)."""

    default_message = "transaction exceeds overdraft limit"


class InvalidDistributionError(DomainError):
    """The split legs do not add up (percentages over 100%, fixed legs over the total)."""

    code = "TXN_INVALID_DISTRIBUTION"
    status = 400


class TransactionNotFoundError(NotFoundError):
    """No transaction has this id or reference."""

    code = "TXN_NOT_FOUND"
    default_message = "transaction not found"


class DuplicateReferenceError(ConflictError):
    """The reference was used by an earlier transaction."""

    code = "TXN_DUPLICATE_REFERENCE"


class NotInflightError(DomainError):
    """Commit or void of a transaction that is not an inflight hold."""

    code = "TXN_NOT_INFLIGHT"
    status = 400
    default_message = "transaction is not in inflight status"


class AlreadyCommittedError(ConflictError):
    """Nothing of the hold is left to commit or void."""

    code = "TXN_ALREADY_COMMITTED"
    default_message = "cannot commit. Transaction already committed"


class AlreadyVoidedError(ConflictError):
    """The hold was voided."""

    code = "TXN_ALREADY_VOIDED"
    default_message = "transaction has already been voided"


class CommitAmountExceededError(DomainError):
    """A commit asks for more than the hold has left."""

    code = "TXN_COMMIT_AMOUNT_EXCEEDED"
    status = 400


class InvalidStatusActionError(DomainError):
    """The inflight action is neither commit nor void, or the transaction cannot take it."""

    code = "TXN_INVALID_STATUS_ACTION"
    status = 400


class AlreadyRefundedError(ConflictError):
    """The transaction was refunded before."""

    code = "TXN_ALREADY_REFUNDED"
    default_message = "transaction has already been refunded"


class BulkEmptyError(DomainError):
    """A bulk request without transactions."""

    code = "TXN_BULK_EMPTY"
    status = 400


class BulkLimitExceededError(DomainError):
    """A bulk request with more transactions than allowed."""

    code = "TXN_BULK_LIMIT_EXCEEDED"
    status = 400


class BulkAbandonedError(DependencyError):
    """A `run_async` bulk that could not be run within its attempts; it will not be run."""

    code = "TXN_BULK_ABANDONED"


class IdempotencyConflictError(ConflictError):
    """An Idempotency-Key was reused with a different request."""

    code = "TXN_IDEMPOTENCY_CONFLICT"
    default_message = "the Idempotency-Key was used with a different request"


class CurrencyMismatchError(DomainError):
    """A balance's currency differs from the transaction's."""

    code = "TXN_CURRENCY_MISMATCH"
    status = 400


# ---------------------------------------------------------------- balances, ledgers


class BalanceNotFoundError(NotFoundError):
    """No balance has this id (or indicator and currency)."""

    code = "BAL_NOT_FOUND"
    default_message = "balance not found"


class BalanceValidationError(DomainError):
    """A balance request breaks a rule."""

    code = "BAL_VALIDATION_ERROR"
    status = 400


class BalanceRequestInvalidError(BalanceValidationError):
    """A new balance's fields break a rule of Blnk's request validation (`ValidateCreateBalance`:
    ledger_id, currency, allocation strategy, indicator, lineage), answered under `"errors"`."""

    body_variant = BlnkBody.ERRORS


class BalanceHistoryNotFoundError(NotFoundError):
    """The balance had no history at the asked time."""

    code = "BAL_HISTORY_NOT_FOUND"


class InvalidTimestampError(DomainError):
    """A timestamp parameter is not RFC 3339."""

    code = "BAL_INVALID_TIMESTAMP"
    status = 400


class DuplicateIndicatorError(ConflictError):
    """An indicator balance already exists in this currency."""

    code = "BAL_DUPLICATE_INDICATOR"


class MonitorNotFoundError(NotFoundError):
    """No balance monitor has this id."""

    code = "BAL_MONITOR_NOT_FOUND"


class LedgerNotFoundError(NotFoundError):
    """No ledger has this id."""

    code = "LGR_NOT_FOUND"
    default_message = "ledger not found"


class LedgerValidationFailedError(DomainError):
    """A ledger request breaks a rule (answered under `"errors"`, as Blnk's are)."""

    code = "GEN_VALIDATION_ERROR"  # Blnk has no ledger-specific validation code
    status = 400
    body_variant = BlnkBody.ERRORS


# ---------------------------------------------------------------- the rest


class IdentityNotFoundError(NotFoundError):
    """No identity has this id."""

    code = "IDT_NOT_FOUND"


class MetadataEntityNotFoundError(NotFoundError):
    """The entity whose metadata is updated does not exist."""

    code = "META_ENTITY_NOT_FOUND"


class MetadataInvalidEntityError(DomainError):
    """The id's prefix names no entity with metadata."""

    code = "META_INVALID_ENTITY_ID"
    status = 400


class MissingApiKeyError(UnauthorizedError):
    """Secure mode is on and no X-Blnk-Key was sent."""

    code = "AUTH_MISSING_API_KEY"


class InvalidApiKeyError(UnauthorizedError):
    """The X-Blnk-Key is unknown."""

    code = "AUTH_INVALID_API_KEY"


class InsufficientPermissionsError(ForbiddenError):
    """The key's scopes do not cover this resource and action."""

    code = "AUTH_INSUFFICIENT_PERMISSIONS"


class LedgerUnavailableError(DependencyError):
    """The ledger engine (or the remote Blnk) cannot take requests now."""

    code = "LEDGER_UNAVAILABLE"
