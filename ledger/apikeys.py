"""API keys and Blnk's secure mode.

Secure mode is on when a master key is configured; then every route but `/` and `/health`
needs `X-Blnk-Key`. The master key (compared in constant time) may do anything. Any other key
is looked up by its SHA-256 (only the hash is stored; the key is shown once, at creation):
unknown is 401 AUTH_INVALID_API_KEY, expired or revoked 401 AUTH_EXPIRED_API_KEY. Its scopes
are `resource:action` (`*` allowed for either): the resource is the path's first segment
(`multi-search` counts as search, `refund-transaction` as transactions, `mocked-account` as
accounts; anything else unmapped is 403 AUTH_UNKNOWN_RESOURCE), the action comes from the
method (GET/HEAD read, POST/PUT/PATCH write, DELETE delete). A key may manage only its own
owner's keys, grant only scopes its own cover, and make keys that expire no later than itself.

Verified keys are cached in memory for a few seconds (bounded), so the hot path costs one hash
and one dictionary lookup. Expiry is checked on every request against the cached expiry, so it
is exact; a revocation is immediate on the replica that revoked and takes at most the cache's
lifetime on the others, except for minting: a key that creates another is read again under a
row lock, so once its revocation commits it mints nothing, on any replica. `last_used_at` is
written in the background, at most once a minute per key and replica.

What a request was made with is kept in a context variable for the length of the request, so
that records it creates carry Blnk's `meta_data.BLNK_GENERATED_BY = api_key_id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from pydantic import SecretStr

from kit.clock import Clock
from kit.db import Database
from kit.errors import AppError
from kit.ids import IdPrefix, new_id
from ledger import apikey_repository as repository
from ledger.errors import InvalidApiKeyError
from ledger.single_flight import SingleFlight
from ledger.surface_errors import (
    ApiKeyInvalidError,
    ApiKeyNotFoundError,
    ApiKeyOwnerRequiredError,
    CrossOwnerAccessError,
    ExpiredApiKeyError,
    MissingPrincipalError,
    ScopeEscalationError,
)
from ledger.wire import check_utc_years, timestamp

logger = logging.getLogger(__name__)

KEY_BYTES: Final = 32  # Blnk's keys are 32 random bytes, base64url
KEY_LENGTH_MAX: Final = 512  # a longer X-Blnk-Key is refused without hashing it
NAME_LENGTH_MAX: Final = 255
OWNER_LENGTH_MAX: Final = 255
SCOPES_MAX: Final = 64
API_KEYS_LIST_MAX: Final = 1_000  # Blnk's list has no paging; one owner's keys, bounded
API_KEY_CACHE_TTL_S: Final = 5.0  # how stale a revocation may be on another replica
API_KEY_CACHE_ENTRIES_MAX: Final = 10_000
LAST_USED_WRITE_INTERVAL_S: Final = 60.0  # `last_used_at` granularity per key and replica
LAST_USED_WRITES_PENDING_MAX: Final = 256  # beyond this, a use is not recorded (logged)
GENERATED_BY_KEY: Final = "BLNK_GENERATED_BY"

# Blnk's resources (api/middleware/auth.go pathToResource) and path aliases.
RESOURCES: Final = frozenset(
    {
        "ledgers",
        "balances",
        "accounts",
        "identities",
        "transactions",
        "balance-monitors",
        "hooks",
        "api-keys",
        "search",
        "reconciliation",
        "metadata",
        "backup",
        "webhooks",
        "fx",
    }
)
PATH_ALIASES: Final = {
    "multi-search": "search",
    "refund-transaction": "transactions",
    "mocked-account": "accounts",
}
METHOD_ACTIONS: Final = {
    "GET": "read",
    "HEAD": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "delete",
}
ACTIONS: Final = frozenset({"read", "write", "delete", "*"})

_GENERATED_BY: ContextVar[str | None] = ContextVar("ledger_generated_by", default=None)


def current_generated_by() -> str | None:
    """The API key id the current request was made with (None: master key or open mode)."""
    return _GENERATED_BY.get()


def mark_generated_by(api_key_id: str) -> None:
    """Remember, for the rest of the current request, which API key made it."""
    _GENERATED_BY.set(api_key_id)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scope(scope: str) -> tuple[str, str] | None:
    """(resource, action) of a well-formed scope, else None."""
    resource, sep, action = scope.partition(":")
    if not sep or ":" in action or not resource or action not in ACTIONS:
        return None
    if resource != "*" and resource not in RESOURCES:
        return None
    return resource, action


def resource_for_path(path: str) -> str | None:
    """The resource a path (or route template) belongs to, or None when unmapped."""
    first = path.lstrip("/").split("/", 1)[0]
    first = PATH_ALIASES.get(first, first)
    return first if first in RESOURCES else None


def has_permission(scopes: Iterable[str], resource: str, method: str) -> bool:
    """True when a scope allows `method` on `resource` (Blnk's HasPermission)."""
    action = METHOD_ACTIONS.get(method.upper())
    if action is None:
        return False
    for scope in scopes:
        parsed = parse_scope(scope)
        if parsed is None:
            continue
        granted_resource, granted_action = parsed
        if granted_resource in {"*", resource} and granted_action in {"*", action}:
            return True
    return False


def scope_covers(granted: str, requested: str) -> bool:
    """True when `granted` is at least as broad as `requested`."""
    have, want = parse_scope(granted), parse_scope(requested)
    if have is None or want is None:
        return False
    return have[0] in {"*", want[0]} and have[1] in {"*", want[1]}


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key, without its secret."""

    api_key_id: str
    name: str
    owner_id: str
    scopes: tuple[str, ...]
    expires_at: datetime
    created_at: datetime
    last_used_at: datetime | None
    is_revoked: bool
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ApiKeyRecord:
        """Map a `ledger.api_keys` row."""
        return cls(
            api_key_id=row["api_key_id"],
            name=row["name"],
            owner_id=row["owner_id"],
            scopes=tuple(row["scopes"]),
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            is_revoked=row["is_revoked"],
            revoked_at=row["revoked_at"],
        )

    def is_valid_at(self, now: datetime) -> bool:
        """Neither revoked nor expired."""
        return not self.is_revoked and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the master key, or an API key."""

    is_master: bool
    key: ApiKeyRecord | None = None

    @property
    def scopes(self) -> tuple[str, ...]:
        """The key's scopes (the master key needs none)."""
        return self.key.scopes if self.key is not None else ()


MASTER: Final = Principal(is_master=True)


def api_key_json(record: ApiKeyRecord, *, key: str = "") -> dict[str, Any]:
    """A key as Blnk returns it; `key` is the secret, given only at creation."""
    body: dict[str, Any] = {
        "api_key_id": record.api_key_id,
        "key": key,
        "name": record.name,
        "owner_id": record.owner_id,
        "scopes": list(record.scopes),
        "expires_at": timestamp(record.expires_at),
        "created_at": timestamp(record.created_at),
        "last_used_at": timestamp(record.last_used_at),
        "is_revoked": record.is_revoked,
    }
    if record.revoked_at is not None:
        body["revoked_at"] = timestamp(record.revoked_at)
    return body


@dataclass(slots=True)
class _Cached:
    record: ApiKeyRecord | None  # None: no such key
    fetched_s: float


class KeyVerifier:
    """Turns an X-Blnk-Key into a `Principal`, or raises Blnk's 401."""

    def __init__(
        self,
        db: Database,
        *,
        master_key: SecretStr,
        clock: Clock,
        cache_ttl_s: float = API_KEY_CACHE_TTL_S,
        cache_entries_max: int = API_KEY_CACHE_ENTRIES_MAX,
    ) -> None:
        self._db = db
        self._master = master_key.get_secret_value().encode()
        self._clock = clock
        self._ttl_s = cache_ttl_s
        self._entries_max = cache_entries_max
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._loads: SingleFlight[str, ApiKeyRecord | None] = SingleFlight()
        self._generation = 0
        self._touched_s: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def verify(self, key: str) -> Principal:
        """The principal a key stands for."""
        if hmac.compare_digest(key.encode(), self._master):
            return MASTER
        if len(key) > KEY_LENGTH_MAX:
            raise InvalidApiKeyError("Invalid API key")
        record = await self._lookup(hash_key(key))
        if record is None:
            raise InvalidApiKeyError("Invalid API key")
        if not record.is_valid_at(self._clock.now()):
            raise ExpiredApiKeyError()
        return Principal(is_master=False, key=record)

    async def _lookup(self, key_hash: str) -> ApiKeyRecord | None:
        cached = self._cache.get(key_hash)
        if cached is not None and self._clock.monotonic() - cached.fetched_s < self._ttl_s:
            return cached.record
        return await self._loads.run(key_hash, lambda: self._load(key_hash, self._generation))

    async def _load(self, key_hash: str, generation: int) -> ApiKeyRecord | None:
        started_s = self._clock.monotonic()
        async with self._db.connection() as conn:
            row = await repository.find_by_hash(conn, key_hash)
        record = None if row is None else ApiKeyRecord.from_row(row)
        if generation == self._generation:  # no revocation here since the read began
            self._cache[key_hash] = _Cached(record, started_s)
            self._cache.move_to_end(key_hash)
            while len(self._cache) > self._entries_max:
                self._cache.popitem(last=False)
        return record

    def forget(self, api_key_id: str) -> None:
        """Drop a key from the cache (it was just revoked here); reads in flight are not cached."""
        self._generation += 1
        self._loads.forget()
        for key_hash in [
            h for h, c in self._cache.items() if c.record and c.record.api_key_id == api_key_id
        ]:
            del self._cache[key_hash]

    def touch(self, record: ApiKeyRecord) -> None:
        """Record a use of the key in the background, at most once per interval."""
        now_s = self._clock.monotonic()
        last_s = self._touched_s.get(record.api_key_id)
        if last_s is not None and now_s - last_s < LAST_USED_WRITE_INTERVAL_S:
            return
        if len(self._writes) >= LAST_USED_WRITES_PENDING_MAX:
            logger.warning("api key use not recorded: too many writes pending")
            return
        if len(self._touched_s) >= self._entries_max:
            self._touched_s.clear()
        self._touched_s[record.api_key_id] = now_s
        task = asyncio.create_task(self._write_use(record.api_key_id, self._clock.now()))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_use(self, api_key_id: str, at: datetime) -> None:
        try:
            async with self._db.connection() as conn:
                await repository.touch_api_key(conn, api_key_id, at)
        except (AppError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A lost last-use stamp must not fail a request; the next use writes a new one.
            logger.warning("api key use not recorded", exc_info=True)


# ---------------------------------------------------------------- management (service)


def _resolve_owner(principal: Principal | None, requested: str, *, required: bool) -> str:
    """Whose keys a request may manage (Blnk's resolveAPIKeyOwner)."""
    if principal is None:
        raise MissingPrincipalError()
    if principal.is_master:
        if required and not requested:
            raise ApiKeyOwnerRequiredError()
        return requested
    if principal.key is None:
        raise MissingPrincipalError()
    if requested and requested != principal.key.owner_id:
        raise CrossOwnerAccessError()
    return principal.key.owner_id


def _check_scopes(scopes: Sequence[str]) -> None:
    if not 1 <= len(scopes) <= SCOPES_MAX:
        raise ApiKeyInvalidError(f"scopes must list 1 to {SCOPES_MAX} scopes")
    for scope in scopes:
        if parse_scope(scope) is None:
            raise ApiKeyInvalidError(
                f"invalid scope {scope[:80]!r}: expected resource:action with action"
                " read, write, delete or *",
                scope=scope[:80],
            )


async def create_api_key(
    conn: asyncpg.Connection,
    *,
    principal: Principal | None,
    name: str,
    owner: str,
    scopes: Sequence[str],
    expires_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """POST /api-keys: the new key, with its secret (shown this once)."""
    owner_id = _resolve_owner(principal, owner, required=True)
    if not 1 <= len(name) <= NAME_LENGTH_MAX or len(owner_id) > OWNER_LENGTH_MAX:
        raise ApiKeyInvalidError("name and owner must be 1 to 255 characters")
    _check_scopes(scopes)
    mine = () if principal is None or principal.is_master else principal.scopes
    if mine and not all(any(scope_covers(have, want) for have in mine) for want in scopes):
        raise ScopeEscalationError()
    if expires_at.tzinfo is None or expires_at <= now:
        raise ApiKeyInvalidError("expires_at must be a future RFC 3339 time with an offset")
    try:
        check_utc_years(expires_at)
    except ValueError as exc:
        raise ApiKeyInvalidError("expires_at is outside years 1-9999 in UTC") from exc
    # A key's children expire no later than it does: else it could renew itself for ever by
    # minting its successor before it expires.
    maker = None if principal is None else principal.key
    if maker is not None and expires_at > maker.expires_at:
        raise ApiKeyInvalidError(
            f"expires_at may not be later than the creating key's own ({timestamp(maker.expires_at)})"
        )
    if maker is not None:
        # The key was checked when the request began; a revocation committed since then must
        # stop it minting, and one in flight must not commit while a child is being made.
        held = await repository.share_api_key(conn, maker.api_key_id)
        if held is None or not ApiKeyRecord.from_row(held).is_valid_at(now):
            raise ExpiredApiKeyError()
    key = secrets.token_urlsafe(KEY_BYTES)
    row = await repository.insert_api_key(
        conn,
        api_key_id=new_id(IdPrefix.API_KEY),
        key_hash=hash_key(key),
        name=name,
        owner_id=owner_id,
        scopes=list(dict.fromkeys(scopes)),
        expires_at=expires_at,
        created_at=now,
    )
    return api_key_json(ApiKeyRecord.from_row(row), key=key)


async def list_api_keys(
    conn: asyncpg.Connection, *, principal: Principal | None, owner: str
) -> list[dict[str, Any]]:
    """GET /api-keys?owner=: an owner's keys, without their secrets."""
    owner_id = _resolve_owner(
        principal, owner, required=principal is not None and principal.is_master
    )
    rows = await repository.list_api_keys(conn, owner_id, limit=API_KEYS_LIST_MAX)
    return [api_key_json(ApiKeyRecord.from_row(row)) for row in rows]


async def revoke_api_key(
    conn: asyncpg.Connection,
    *,
    principal: Principal | None,
    api_key_id: str,
    owner: str,
    now: datetime,
) -> None:
    """DELETE /api-keys/{id}: revoke (the row stays, for its history)."""
    owner_id = _resolve_owner(
        principal, owner, required=principal is not None and principal.is_master
    )
    row = await repository.find_api_key(conn, api_key_id)
    if row is None:
        raise ApiKeyNotFoundError()
    if row["owner_id"] != owner_id:
        raise CrossOwnerAccessError("unauthorized")
    await repository.revoke_api_key(conn, api_key_id, now)
