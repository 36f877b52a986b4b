"""Auth events in audit_log (the data model's audit trail).

An event is one audit_log row: table_name `auth_events`, action INSERT, the event in
new_values, the acting user in changed_by/actor_id, and the ip and user agent that the edge set
with `kit.db.audit_context` for the transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

EVENT_TABLE = "auth_events"


async def insert_event(
    conn: asyncpg.Connection, *, user_id: uuid.UUID | None, values: dict[str, Any]
) -> None:
    """Append one auth event."""
    await conn.execute(
        "INSERT INTO audit_log (table_name, record_id, action, new_values, changed_by, actor_id,"
        " ip_address, user_agent)"
        " VALUES ($1, coalesce($2, gen_random_uuid()), 'INSERT', $3,"
        " (SELECT u.id FROM users u WHERE u.id = $2), $2,"
        " NULLIF(current_setting('dwaybank.ip', true), '')::inet,"
        " NULLIF(current_setting('dwaybank.user_agent', true), ''))",
        EVENT_TABLE,
        user_id,
        values,
    )
