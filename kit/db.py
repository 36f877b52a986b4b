"""PostgreSQL access: a bounded asyncpg pool, error translation, and acting-for-user context.

The edge owns the transaction: an endpoint or actor method opens `async with db.transaction()
as conn:` and passes `conn` down; services and repositories never commit and never take
connections from the pool. Driver failures that mean "the database is not there" become
`DatabaseUnavailableError` here, once; constraint violations are domain outcomes and are
translated by the repository that knows what they mean.

Row-level security: the service role (whatever `DATABASE_URL` logs in as, a superuser or a
member of `dwaybank_service`, which has BYPASSRLS) sees every row. `acting_for` switches a
transaction to the `dwaybank_user` role with `dwaybank.user_id` set, so PostgreSQL itself limits
the transaction to that user's rows. `audit_context` sets the acting user, ip and user agent
that the audit trigger records.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from kit import json_exact
from kit.errors import ConfigurationError, DatabaseUnavailableError
from kit.settings import Settings, redact_url

USER_ROLE: Final = "dwaybank_user"
SERVICE_ROLE: Final = "dwaybank_service"
SETTING_USER_ID: Final = "dwaybank.user_id"
SETTING_IP: Final = "dwaybank.ip"
SETTING_USER_AGENT: Final = "dwaybank.user_agent"
USER_AGENT_LENGTH_MAX: Final = 512  # audit rows keep a bounded user agent
STATEMENT_CACHE_SIZE: Final = 256
POOL_ACQUIRE_TIMEOUT_S: Final = 5.0  # a request waits this long for a connection, then 503

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database could not be reached or went away."""
    return isinstance(exc, _UNAVAILABLE)


# Plan every statement for its own parameters. A cached statement otherwise switches to a
# generic plan after five runs, chosen with the statistics of that moment: one chosen while a
# table was small (a fresh ledger, or a server whose autovacuum never analyzes) is a sequential
# scan that stays for the connection's life, so a lookup by unique key grew to 27 ms per batch
# with 50,000 rows. A custom plan of our short statements costs tens of microseconds.
SERVER_SETTINGS: Final = {"plan_cache_mode": "force_custom_plan"}
JSONB_FORMAT_VERSION: Final = b"\x01"  # the binary jsonb wire format starts with its version


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary codecs: orjson straight to and from the wire, no text round trip; integers past
    # 64 bits (amounts in answers, outcomes and events) stay exact both ways.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: JSONB_FORMAT_VERSION + json_exact.encode(value),
        decoder=lambda data: json_exact.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "json",
        encoder=json_exact.encode,
        decoder=json_exact.loads,
        schema="pg_catalog",
        format="binary",
    )


async def connect(dsn: str, *, timeout_s: float) -> asyncpg.Connection:
    """One connection with our codecs; raises `DatabaseUnavailableError` naming the server."""
    try:
        conn = await asyncpg.connect(
            dsn, timeout=timeout_s, statement_cache_size=0, server_settings=SERVER_SETTINGS
        )
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailableError(
            f"cannot reach PostgreSQL at {redact_url(dsn)}: {type(exc).__name__}: {exc}"
        ) from exc
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise ConfigurationError(
            f"the PostgreSQL URL {redact_url(dsn)} is not valid: {type(exc).__name__}"
        ) from exc
    except asyncpg.PostgresError as exc:
        raise DatabaseUnavailableError(
            f"PostgreSQL at {redact_url(dsn)} refused the connection: {exc}"
        ) from exc
    await _init_connection(conn)
    return conn


async def _rollback_if_in_transaction(conn: asyncpg.Connection) -> None:
    if conn.is_in_transaction():
        await conn.reset()


class Database:
    """A bounded pool with translated errors."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, settings: Settings, dsn: str, *, keeps_session: bool = False) -> Database:
        """Create the pool (bounded by settings) and check one connection.

        `keeps_session`: the pool's users never change session state (no session `SET`,
        advisory lock, `LISTEN` or cursor outside a transaction), so a released connection is
        only rolled back if it is still in a transaction, instead of asyncpg's full reset (one
        more round trip of four statements per use, ~0.6 ms of each ledger batch here).
        """
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min(settings.db_pool_min_size, settings.db_pool_max_size),
                max_size=settings.db_pool_max_size,
                timeout=settings.db_connect_timeout_s,
                command_timeout=settings.db_command_timeout_s,
                max_inactive_connection_lifetime=settings.db_connection_lifetime_s,
                statement_cache_size=STATEMENT_CACHE_SIZE,
                init=_init_connection,
                server_settings=SERVER_SETTINGS,
                reset=_rollback_if_in_transaction if keeps_session else None,
            )
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailableError(
                f"cannot reach PostgreSQL at {redact_url(dsn)}: {type(exc).__name__}"
            ) from exc
        return cls(pool)

    async def close(self) -> None:
        """Close every connection, waiting for those in use (bounded)."""
        await asyncio.wait_for(self.pool.close(), timeout=10)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, outside any transaction."""
        try:
            async with self.pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as proxy:
                # A pool hands out a proxy that forwards every Connection method; callers type
                # it as the Connection it stands for.
                yield cast(asyncpg.Connection, proxy)
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailableError() from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction, committed when the block ends."""
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except _UNAVAILABLE as exc:
                raise DatabaseUnavailableError() from exc

    async def ping(self, *, timeout_s: float = 2.0) -> None:
        """Round trip `SELECT 1`; raises `DatabaseUnavailableError`."""
        try:
            async with asyncio.timeout(timeout_s), self.connection() as conn:
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailableError() from exc


async def audit_context(
    conn: asyncpg.Connection,
    *,
    actor_id: uuid.UUID | str | None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """Record who acts, from where, for the audit trigger; lasts until the transaction ends."""
    await conn.execute(
        "SELECT set_config($1, $2, true), set_config($3, $4, true), set_config($5, $6, true)",
        SETTING_USER_ID,
        str(actor_id) if actor_id else "",
        SETTING_IP,
        ip or "",
        SETTING_USER_AGENT,
        (user_agent or "")[:USER_AGENT_LENGTH_MAX],
    )


async def acting_for(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID | str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """Limit the current transaction to `user_id`'s rows (row-level security).

    Must be called inside a transaction: both the role and the settings are transaction-local.
    """
    await audit_context(conn, actor_id=user_id, ip=ip, user_agent=user_agent)
    await conn.execute(f"SET LOCAL ROLE {USER_ROLE}")


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def jsonb(value: Any) -> str:
    """Encode a value for a `$n::jsonb` parameter when no codec is installed."""
    return json_exact.encode(value).decode()
