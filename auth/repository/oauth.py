"""oauth_clients and oauth_authorization_codes."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def insert_client(
    conn: asyncpg.Connection,
    *,
    client_id: str,
    secret_hash: str | None,
    name: str,
    redirect_uris: list[str],
    allowed_scopes: list[str],
    is_first_party: bool,
) -> None:
    """Register a client."""
    await conn.execute(
        "INSERT INTO oauth_clients (client_id, client_secret_hash, name, redirect_uris,"
        " allowed_scopes, grant_types, is_first_party)"
        " VALUES ($1, $2, $3, $4, $5, ARRAY['authorization_code', 'refresh_token'], $6)",
        client_id,
        secret_hash,
        name,
        redirect_uris,
        allowed_scopes,
        is_first_party,
    )


async def find_client(conn: asyncpg.Connection, client_id: str) -> asyncpg.Record | None:
    """An enabled client."""
    return await conn.fetchrow(
        "SELECT client_id, client_secret_hash, name, redirect_uris, allowed_scopes, grant_types,"
        " is_first_party FROM oauth_clients WHERE client_id = $1 AND disabled_at IS NULL",
        client_id,
    )


async def list_clients(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every client (no secrets)."""
    return list(
        await conn.fetch(
            "SELECT client_id, name, redirect_uris, allowed_scopes, is_first_party,"
            " client_secret_hash IS NOT NULL AS is_confidential, created_at, disabled_at"
            " FROM oauth_clients ORDER BY created_at"
        )
    )


async def insert_code(
    conn: asyncpg.Connection,
    *,
    code_hash: bytes,
    client_id: str,
    user_id: uuid.UUID,
    redirect_uri: str,
    scope: str,
    code_challenge: str,
    nonce: str | None,
    amr: list[str],
    acr: str,
    auth_time: datetime,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """Store an authorization code (its hash)."""
    await conn.execute(
        "INSERT INTO oauth_authorization_codes (code_hash, client_id, user_id, redirect_uri,"
        " scope, code_challenge, code_challenge_method, nonce, amr, acr, auth_time, created_at,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, 'S256', $7, $8, $9, $10, $11, $12)",
        code_hash,
        client_id,
        user_id,
        redirect_uri,
        scope,
        code_challenge,
        nonce,
        amr,
        acr,
        auth_time,
        created_at,
        expires_at,
    )


async def lock_code(conn: asyncpg.Connection, code_hash: bytes) -> asyncpg.Record | None:
    """An authorization code, locked for its exchange."""
    return await conn.fetchrow(
        "SELECT code_hash, client_id, user_id, redirect_uri, scope, code_challenge, nonce, amr,"
        " acr, auth_time, expires_at, consumed_at, family_id FROM oauth_authorization_codes"
        " WHERE code_hash = $1 FOR UPDATE",
        code_hash,
    )


async def find_family_session(conn: asyncpg.Connection, family_id: uuid.UUID) -> str | None:
    """The session of a refresh family (a code's exchange started both)."""
    session_id: str | None = await conn.fetchval(
        "SELECT session_id FROM auth_refresh_families WHERE id = $1", family_id
    )
    return session_id


async def consume_code(
    conn: asyncpg.Connection, code_hash: bytes, *, now: datetime, family_id: uuid.UUID | None
) -> None:
    """Mark a code exchanged, remembering the family it started."""
    await conn.execute(
        "UPDATE oauth_authorization_codes SET consumed_at = $2, family_id = $3"
        " WHERE code_hash = $1",
        code_hash,
        now,
        family_id,
    )
