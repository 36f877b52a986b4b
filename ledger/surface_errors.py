"""Errors of identities, API keys and secure mode, hooks, search and reconciliation, with
Blnk's codes and statuses (internal/apierror/codes.go). The core's errors (transactions,
balances, ledgers, metadata) are in `ledger.errors`; both render as Blnk's error body.

```
DomainError
  IdentityValidationError        IDT_VALIDATION_ERROR              400
  FieldNotTokenizableError       IDT_FIELD_NOT_TOKENIZABLE         400
  FieldNotTokenizedError         IDT_FIELD_NOT_TOKENIZED           400
  FieldAlreadyTokenizedError     IDT_FIELD_ALREADY_TOKENIZED       409
  TokenizationDisabledError      IDT_TOKENIZATION_DISABLED         403
  IdentityInUseError             GEN_CONFLICT                      409
  ExpiredApiKeyError             AUTH_EXPIRED_API_KEY              401
  MissingPrincipalError          AUTH_MISSING_PRINCIPAL            401
  UnknownResourceError           AUTH_UNKNOWN_RESOURCE             403
  MasterKeyRequiredError         AUTH_MASTER_KEY_REQUIRED          403
  CrossOwnerAccessError          AUTH_CROSS_OWNER_ACCESS           403
  ScopeEscalationError           AUTH_SCOPE_ESCALATION             403
  ApiKeyNotFoundError            APIKEY_NOT_FOUND                  404
  ApiKeyOwnerRequiredError       APIKEY_OWNER_REQUIRED             400
  ApiKeyInvalidError             APIKEY_INVALID                    400
  HookNotFoundError              HOOK_NOT_FOUND                    404
  HookInvalidError               HOOK_INVALID                      400
  HookRejectedError              TXN_HOOK_REJECTED                 400
  SearchQueryInvalidError        SRCH_QUERY_INVALID                400
  ReindexNotStartedError         SRCH_REINDEX_NOT_STARTED          404
  ReconciliationNotFoundError    RECON_NOT_FOUND                   404
  MatchingRuleNotFoundError      RECON_RULE_NOT_FOUND              404
  MatchingRuleInvalidError       RECON_RULE_INVALID                400
  UploadFailedError              RECON_UPLOAD_FAILED               400
  UploadHostNotAllowedError      RECON_UPLOAD_HOST_NOT_ALLOWED     400
  MatchingRulesRequiredError     RECON_MATCHING_RULES_REQUIRED     400
  ExternalTransactionsRequiredError  RECON_EXTERNAL_TXNS_REQUIRED  400
DependencyError
  HookUnavailableError           HOOK_UNAVAILABLE                  503
  SearchTimeoutError             SRCH_TIMEOUT                      503
  ReconciliationBackpressureError  QUEUE_BACKPRESSURE              503
```

The missing, unknown and insufficient-scope key errors (`AUTH_MISSING_API_KEY`,
`AUTH_INVALID_API_KEY`, `AUTH_INSUFFICIENT_PERMISSIONS`) and `IDT_NOT_FOUND` live in
`ledger.errors`. `TXN_HOOK_REJECTED` and `HOOK_UNAVAILABLE` are ours (Blnk's pre-transaction
hooks cannot refuse a transaction, ours can), and so is `SRCH_TIMEOUT` (Typesense has no
statement timeout to report).
"""

from __future__ import annotations

from kit.errors import (
    ConflictError,
    DependencyError,
    DomainError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)

# ---------------------------------------------------------------- identities


class IdentityValidationError(DomainError):
    """An identity request breaks a rule (a malformed id, a field too long, a duplicate id)."""

    code = "IDT_VALIDATION_ERROR"
    status = 400


class FieldNotTokenizableError(DomainError):
    """The field is not one of Blnk's tokenizable fields."""

    code = "IDT_FIELD_NOT_TOKENIZABLE"
    status = 400


class FieldNotTokenizedError(DomainError):
    """Detokenizing a field that holds its plain value."""

    code = "IDT_FIELD_NOT_TOKENIZED"
    status = 400


class FieldAlreadyTokenizedError(ConflictError):
    """Tokenizing a field that is already sealed."""

    code = "IDT_FIELD_ALREADY_TOKENIZED"


class TokenizationDisabledError(ForbiddenError):
    """No cipher is configured, so fields can be neither sealed nor opened."""

    code = "IDT_TOKENIZATION_DISABLED"
    default_message = "tokenization is disabled: no tokenization secret is configured"


class IdentityInUseError(ConflictError):
    """Deleting an identity that balances still belong to."""

    code = "GEN_CONFLICT"


# ---------------------------------------------------------------- API keys, secure mode


class ExpiredApiKeyError(UnauthorizedError):
    """The X-Blnk-Key names a key that expired or was revoked."""

    code = "AUTH_EXPIRED_API_KEY"
    default_message = "API key is expired or revoked"


class MissingPrincipalError(UnauthorizedError):
    """An API-key route was called without a key to act as (open mode, no master key)."""

    code = "AUTH_MISSING_PRINCIPAL"
    default_message = "authenticated API key principal missing"


class UnknownResourceError(ForbiddenError):
    """The path's first segment names no resource an API key can be scoped to."""

    code = "AUTH_UNKNOWN_RESOURCE"
    default_message = "Unknown resource type"


class MasterKeyRequiredError(ForbiddenError):
    """Only the master key may do this (hook management)."""

    code = "AUTH_MASTER_KEY_REQUIRED"


class CrossOwnerAccessError(ForbiddenError):
    """An API key tried to manage another owner's keys."""

    code = "AUTH_CROSS_OWNER_ACCESS"
    default_message = "cannot manage API keys for another owner"


class ScopeEscalationError(ForbiddenError):
    """An API key tried to mint a key with scopes its own do not cover."""

    code = "AUTH_SCOPE_ESCALATION"
    default_message = "cannot grant scopes broader than caller"


class ApiKeyNotFoundError(NotFoundError):
    """No API key has this id."""

    code = "APIKEY_NOT_FOUND"
    default_message = "API key not found"


class ApiKeyOwnerRequiredError(DomainError):
    """The master key must say whose keys it means."""

    code = "APIKEY_OWNER_REQUIRED"
    status = 400
    default_message = "owner is required"


class ApiKeyInvalidError(DomainError):
    """An API key request breaks a rule (a malformed scope, an expiry in the past)."""

    code = "APIKEY_INVALID"
    status = 400


# ---------------------------------------------------------------- hooks


class HookNotFoundError(NotFoundError):
    """No hook has this id."""

    code = "HOOK_NOT_FOUND"
    default_message = "hook not found"


class HookInvalidError(DomainError):
    """A hook request breaks a rule."""

    code = "HOOK_INVALID"
    status = 400


class HookRejectedError(DomainError):
    """A PRE_TRANSACTION hook answered no (`success: false`, `null`, or a 4xx status): the
    transaction was not recorded."""

    code = "TXN_HOOK_REJECTED"
    status = 400


class HookUnavailableError(DependencyError):
    """A PRE_TRANSACTION hook gave no answer within its timeout and retries; the transaction
    was not recorded (a pre-transaction hook is a gate, so it fails closed)."""

    code = "HOOK_UNAVAILABLE"
    default_message = "a pre-transaction hook did not answer; retry later"


# ---------------------------------------------------------------- search


class SearchQueryInvalidError(DomainError):
    """A search parameter cannot be understood (a bad filter_by, an unknown field)."""

    code = "SRCH_QUERY_INVALID"
    status = 400


class SearchTimeoutError(DependencyError):
    """A search ran past its statement timeout and was cancelled; narrow it with filter_by."""

    code = "SRCH_TIMEOUT"
    default_message = "the search took too long; narrow it with filter_by"


class ReindexNotStartedError(NotFoundError):
    """No reindex has run yet."""

    code = "SRCH_REINDEX_NOT_STARTED"
    default_message = "No reindex operation has been started"


# ---------------------------------------------------------------- reconciliation


class ReconciliationNotFoundError(NotFoundError):
    """No reconciliation (or upload) has this id."""

    code = "RECON_NOT_FOUND"
    default_message = "Reconciliation not found"


class MatchingRuleNotFoundError(NotFoundError):
    """No matching rule has this id."""

    code = "RECON_RULE_NOT_FOUND"
    default_message = "matching rule not found"


class MatchingRuleInvalidError(DomainError):
    """A matching rule breaks a rule (an unknown field or operator, a drift out of range)."""

    code = "RECON_RULE_INVALID"
    status = 400


class UploadFailedError(DomainError):
    """The upload is not a readable CSV of external transactions."""

    code = "RECON_UPLOAD_FAILED"
    status = 400


class UploadHostNotAllowedError(DomainError):
    """An upload by URL: no host is allowed (the server fetches nothing on a client's say)."""

    code = "RECON_UPLOAD_HOST_NOT_ALLOWED"
    status = 400
    default_message = "upload host not allowed"


class MatchingRulesRequiredError(DomainError):
    """A reconciliation was started without matching rules."""

    code = "RECON_MATCHING_RULES_REQUIRED"
    status = 400
    default_message = "matching_rule_ids is required"


class ExternalTransactionsRequiredError(DomainError):
    """An instant reconciliation was started without external transactions."""

    code = "RECON_EXTERNAL_TXNS_REQUIRED"
    status = 400
    default_message = "external_transactions is required"


class ReconciliationBackpressureError(DependencyError):
    """Too many reconciliations are waiting to run on this replica."""

    code = "QUEUE_BACKPRESSURE"
    default_message = "too many reconciliations are running; retry later"
