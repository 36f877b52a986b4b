"""Webhooks: per-event-type subscriptions, Blnk's signature, event bodies, the retry policy.

Blnk sends every event to one global URL. Here any number of subscriptions each name the event
types they want (`["transaction.applied", "balance.monitor"]`, a family such as
`"transaction.*"`, or `"*"`), and each has its own signing secret, shown once at creation.

What a receiver gets is Blnk's webhook exactly: a POST of `{"event": "<name>", "data": <payload>}`
with `X-Blnk-Timestamp` (unix seconds) and `X-Blnk-Signature`, the lowercase hex HMAC-SHA256
of `"{timestamp}.{body}"` under the subscription's secret. We add `X-Blnk-Event-Id` (stable
across retries, so receivers can drop duplicates: delivery is at least once), `X-Blnk-Event`
(the event name) and `X-Blnk-Delivery-Attempt`.

Events: `transaction.applied`, `.inflight`, `.void`, `.rejected`, `.queued`, `.scheduled` for
every transaction row a commit batch wrote (a commit's child is `transaction.applied`), with
the transaction's JSON as `data`; `bulk_transaction.applied`, `.inflight`, `.failed`;
`balance.created`; `balance.monitor` (the monitor and the balance's figures).

A delivery is retried with exponential backoff and jitter up to `DELIVERY_ATTEMPTS_MAX` times,
then marked dead; a dead delivery stays visible through the API and can be re-driven.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg

from kit.crypto import EnvelopeCipher
from kit.errors import ConflictError, DomainError, InvariantError, NotFoundError
from kit.http_urls import is_requestable
from kit.ids import IdPrefix, new_id
from kit.json_exact import dumps
from ledger import webhooks_repository
from ledger.models import TransactionRecord, TransactionStatus
from ledger.webhooks_repository import Delivery, Subscription
from ledger.wire import timestamp

TIMESTAMP_HEADER: Final = "X-Blnk-Timestamp"
SIGNATURE_HEADER: Final = "X-Blnk-Signature"
EVENT_ID_HEADER: Final = "X-Blnk-Event-Id"
EVENT_HEADER: Final = "X-Blnk-Event"
ATTEMPT_HEADER: Final = "X-Blnk-Delivery-Attempt"

TRANSACTION_EVENTS: Final = {
    TransactionStatus.APPLIED: "transaction.applied",
    TransactionStatus.INFLIGHT: "transaction.inflight",
    TransactionStatus.VOID: "transaction.void",
    TransactionStatus.REJECTED: "transaction.rejected",
    TransactionStatus.QUEUED: "transaction.queued",
    TransactionStatus.SCHEDULED: "transaction.scheduled",
}
BALANCE_CREATED: Final = "balance.created"
EVENT_TYPES: Final = frozenset(
    {
        *TRANSACTION_EVENTS.values(),
        "bulk_transaction.applied",
        "bulk_transaction.inflight",
        "bulk_transaction.failed",
        BALANCE_CREATED,
        "balance.monitor",
        "ledger.created",
        "identity.created",
    }
)
EVENT_FAMILIES: Final = frozenset(name.split(".", 1)[0] for name in EVENT_TYPES)
ALL_EVENTS: Final = "*"
# Event ids of transaction events are derived, so a re-fanned-out batch repeats its ids.
_EVENT_NAMESPACE: Final = uuid.UUID("5f3c1b8e-3d7a-4c55-9b0e-6a1d2c7e9f41")

URL_LENGTH_MAX: Final = 2048
EVENT_TYPES_MAX: Final = 64
DESCRIPTION_LENGTH_MAX: Final = 4096
SECRET_BYTES: Final = 32  # 256 bits of signing key
SUBSCRIPTIONS_LIST_MAX: Final = 1_000
DELIVERIES_PAGE_MAX: Final = 100
ERROR_TEXT_LENGTH_MAX: Final = 1024
DELIVERY_ATTEMPTS_MAX: Final = 10  # then the delivery is dead (visible, re-drivable)
BACKOFF_BASE_S: Final = 2.0  # first retry after ~2 s, then doubling
BACKOFF_CAP_S: Final = 900.0  # never wait more than 15 minutes between attempts
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_SECRET_CONTEXT: Final = "ledger.webhook_subscriptions.secret"  # noqa: S105 - a label


class WebhookNotFoundError(NotFoundError):
    """No webhook subscription has this id."""

    code = "WHK_NOT_FOUND"
    default_message = "webhook subscription not found"


class WebhookValidationError(DomainError):
    """A subscription request breaks a rule."""

    code = "WHK_VALIDATION_ERROR"
    status = 400


class DeliveryNotFoundError(NotFoundError):
    """No delivery of this subscription has this id."""

    code = "WHK_DELIVERY_NOT_FOUND"
    default_message = "webhook delivery not found"


class DeliveryNotDeadError(ConflictError):
    """Only a dead delivery can be re-driven (a pending one is still being retried)."""

    code = "WHK_DELIVERY_NOT_DEAD"
    default_message = "only a dead delivery can be re-driven"


# ---------------------------------------------------------------- signing and bodies


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """Blnk's signature: hex HMAC-SHA256 over `"{timestamp}.{body}"`."""
    message = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def is_valid_signature(secret: str, timestamp_s: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant-time)."""
    # A header is any text a sender chose: `isdigit` alone passes digits `int` refuses ("²"),
    # and `compare_digest` refuses str with non-ASCII characters, so both are checked as bytes.
    if not (timestamp_s.isascii() and timestamp_s.isdigit()):
        return False
    expected = sign(secret, int(timestamp_s), body)
    return hmac.compare_digest(expected.encode(), signature.encode())


def event_body(event_type: str, data: Any) -> str:
    """The webhook body Blnk sends."""
    return dumps({"event": event_type, "data": data}).decode()


def delivery_headers(delivery: Delivery, secret: str, timestamp_s: int) -> dict[str, str]:
    """The headers of one delivery attempt."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp_s),
        SIGNATURE_HEADER: sign(secret, timestamp_s, delivery.body.encode()),
        EVENT_ID_HEADER: delivery.event_id,
        EVENT_HEADER: delivery.event_type,
        ATTEMPT_HEADER: str(delivery.attempts),
    }


def transaction_event_type(record: TransactionRecord) -> str:
    """The event a stored transaction row announces (by its status)."""
    return TRANSACTION_EVENTS[record.status]


def transaction_event_id(event_type: str, transaction_id: str) -> str:
    """A stable event id for a transaction's event (the same on every fan-out)."""
    return f"evt_{uuid.uuid5(_EVENT_NAMESPACE, f'{event_type}:{transaction_id}')}"


def backoff_s(attempts: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before the next attempt: exponential in the attempts made, capped, with "equal
    jitter" (half fixed, half random) so retries of many deliveries spread out."""
    exponent = min(max(attempts - 1, 0), 32)
    ceiling = min(cap_s, base_s * float(2**exponent))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def matches(patterns: tuple[str, ...], event_type: str) -> bool:
    """True when a subscription's patterns cover the event."""
    for pattern in patterns:
        if pattern in (ALL_EVENTS, event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


# ---------------------------------------------------------------- validation


def _check_url(url: Any) -> str:
    if (
        not isinstance(url, str)
        or len(url) > URL_LENGTH_MAX
        or not _URL.match(url)
        or not is_requestable(url)
    ):
        raise WebhookValidationError("url must be an http(s) URL of at most 2048 characters")
    return url


def _check_event_types(value: Any) -> tuple[str, ...]:
    if value == ALL_EVENTS:
        return (ALL_EVENTS,)
    if not isinstance(value, list) or not 1 <= len(value) <= EVENT_TYPES_MAX:
        raise WebhookValidationError(
            f'event_types must be "*" or a list of 1-{EVENT_TYPES_MAX} event types'
        )
    found: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise WebhookValidationError("every event type is a string")
        family = item[:-2] if item.endswith(".*") else None
        if item != ALL_EVENTS and item not in EVENT_TYPES and family not in EVENT_FAMILIES:
            raise WebhookValidationError(f"unknown event type {item!r}", known=sorted(EVENT_TYPES))
        if item not in found:
            found.append(item)
    return tuple(found)


def _check_description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > DESCRIPTION_LENGTH_MAX:
        raise WebhookValidationError("description must be a string of at most 4096 characters")
    return value


def _check_active(value: Any) -> bool:
    if not isinstance(value, bool):
        raise WebhookValidationError("active must be true or false")
    return value


def subscription_schema(*, is_update: bool) -> dict[str, Any]:
    """The JSON schema of a POST (or, `is_update`, a PATCH) `/webhooks` body, from the bounds
    the checks above enforce; for the OpenAPI document, which cannot see a body read by hand."""
    event_type = {
        "type": "string",
        "enum": sorted(EVENT_TYPES | {ALL_EVENTS} | {f"{f}.*" for f in EVENT_FAMILIES}),
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "maxLength": URL_LENGTH_MAX, "pattern": _URL.pattern},
            "event_types": {
                "anyOf": [
                    {"const": ALL_EVENTS},
                    {
                        "type": "array",
                        "items": event_type,
                        "minItems": 1,
                        "maxItems": EVENT_TYPES_MAX,
                    },
                ]
            },
            "active": {"type": "boolean", "default": True},
            "description": {"type": ["string", "null"], "maxLength": DESCRIPTION_LENGTH_MAX},
        },
    }
    if not is_update:
        schema["required"] = ["url", "event_types"]
    return schema


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WebhookValidationError("the body must be a JSON object")
    return body


# ---------------------------------------------------------------- secrets


def seal_secret(secret: str, cipher: EnvelopeCipher | None) -> tuple[str, bool]:
    """(stored text, sealed?): sealed with the envelope cipher when there is one."""
    if cipher is None:
        return secret, False
    return cipher.encrypt_text(secret, context=_SECRET_CONTEXT), True


def open_secret(subscription: Subscription, cipher: EnvelopeCipher | None) -> str:
    """The signing secret of a subscription."""
    if not subscription.secret_is_sealed:
        return subscription.secret
    if cipher is None:
        raise InvariantError(
            "a sealed webhook secret needs the envelope cipher",
            subscription_id=subscription.subscription_id,
        )
    return cipher.decrypt_text(subscription.secret, context=_SECRET_CONTEXT)


# ---------------------------------------------------------------- JSON


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    """A subscription as the API returns it (never with its secret)."""
    return {
        "subscription_id": subscription.subscription_id,
        "url": subscription.url,
        "event_types": ALL_EVENTS
        if subscription.event_types == (ALL_EVENTS,)
        else list(subscription.event_types),
        "active": subscription.active,
        "description": subscription.description,
        "created_at": timestamp(subscription.created_at),
        "updated_at": timestamp(subscription.updated_at),
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """A delivery and its state."""
    return {
        "delivery_id": delivery.delivery_id,
        "subscription_id": delivery.subscription_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": timestamp(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "last_error": delivery.last_error,
        "last_status_code": delivery.last_status_code,
        "created_at": timestamp(delivery.created_at),
        "delivered_at": None if delivery.delivered_at is None else timestamp(delivery.delivered_at),
    }


# ---------------------------------------------------------------- service


async def create_subscription(
    conn: asyncpg.Connection, body: Any, *, now: datetime, cipher: EnvelopeCipher | None
) -> dict[str, Any]:
    """POST /webhooks: the subscription, with its secret (shown this once)."""
    data = _object(body)
    secret = "whsec_" + secrets.token_urlsafe(SECRET_BYTES)
    stored, is_sealed = seal_secret(secret, cipher)
    subscription = Subscription(
        subscription_id=new_id(IdPrefix.WEBHOOK),
        url=_check_url(data.get("url")),
        event_types=_check_event_types(data.get("event_types")),
        secret=stored,
        secret_is_sealed=is_sealed,
        active=_check_active(data.get("active", True)),
        description=_check_description(data.get("description")),
        created_at=now,
        updated_at=now,
    )
    await webhooks_repository.insert_subscription(conn, subscription)
    return {**subscription_json(subscription), "secret": secret}


async def get_subscription(conn: asyncpg.Connection, subscription_id: str) -> Subscription:
    """GET /webhooks/{id}."""
    found = await webhooks_repository.find_subscription(conn, subscription_id)
    if found is None:
        raise WebhookNotFoundError(subscription_id=subscription_id)
    return found


async def update_subscription(
    conn: asyncpg.Connection, subscription_id: str, body: Any, *, now: datetime
) -> Subscription:
    """PATCH /webhooks/{id}: change url, event types, description or the active flag."""
    data = _object(body)
    # Locked: the fields not in the body are written back as they are, so they must be read
    # after any concurrent change to them has committed (else it would be undone).
    current = await webhooks_repository.find_subscription(conn, subscription_id, for_update=True)
    if current is None:
        raise WebhookNotFoundError(subscription_id=subscription_id)
    changed = Subscription(
        subscription_id=current.subscription_id,
        url=_check_url(data["url"]) if "url" in data else current.url,
        event_types=_check_event_types(data["event_types"])
        if "event_types" in data
        else current.event_types,
        secret=current.secret,
        secret_is_sealed=current.secret_is_sealed,
        active=_check_active(data["active"]) if "active" in data else current.active,
        description=_check_description(data["description"])
        if "description" in data
        else current.description,
        created_at=current.created_at,
        updated_at=now,
    )
    await webhooks_repository.update_subscription(conn, changed)
    return changed


async def delete_subscription(conn: asyncpg.Connection, subscription_id: str) -> None:
    """DELETE /webhooks/{id} (its deliveries go with it)."""
    if not await webhooks_repository.delete_subscription(conn, subscription_id):
        raise WebhookNotFoundError(subscription_id=subscription_id)


async def redrive_delivery(
    conn: asyncpg.Connection, subscription_id: str, delivery_id: int, *, now: datetime
) -> Delivery:
    """Send a dead delivery again: back to pending, attempts from zero, due now."""
    found = await webhooks_repository.find_delivery(conn, subscription_id, delivery_id)
    if found is None:
        raise DeliveryNotFoundError(delivery_id=delivery_id)
    if found.status != "dead":
        raise DeliveryNotDeadError(delivery_id=delivery_id, status=found.status)
    redriven = await webhooks_repository.redrive_delivery(conn, delivery_id, now=now)
    if redriven is None:
        raise DeliveryNotDeadError(delivery_id=delivery_id)
    return redriven


def retry_at(
    now: datetime, attempts: int, rng: random.Random, *, base_s: float, cap_s: float
) -> datetime:
    """When a failed delivery is next attempted."""
    return now + timedelta(seconds=backoff_s(attempts, base_s=base_s, cap_s=cap_s, rng=rng))


def error_text(text: str) -> str:
    """A bounded error message for the delivery row."""
    return text[:ERROR_TEXT_LENGTH_MAX]
