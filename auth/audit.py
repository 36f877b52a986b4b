"""Recording auth events: who, what, when, where; never a secret.

Every event of `AuthEvent` is written with `record_event` inside the transaction of the action
it describes, so an event exists exactly when its action committed (a refused login commits
its failure event too: the edge commits refusals before raising them). Fields are checked
against the secret-looking names of `kit.telemetry` and masked, so a careless caller cannot put
a password, code or token into the audit trail.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from auth.models import AuthEvent
from auth.repository import audit as repository
from kit.telemetry import redact


async def record_event(
    conn: asyncpg.Connection,
    event: AuthEvent,
    *,
    user_id: uuid.UUID | None,
    factor: str | None = None,
    **details: Any,
) -> None:
    """Append `event` to audit_log, with its factor type and non-secret details."""
    values: dict[str, Any] = {"event": event.value}
    if factor is not None:
        values["factor"] = factor
    values.update(redact(details))
    await repository.insert_event(conn, user_id=user_id, values=values)


async def record_password_refusal(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, reason: str
) -> None:
    """Audit a password refused after its account was found (a wrong current password, or a
    hash replaced since the password was checked) as a failed password sign-in."""
    await record_event(
        conn, AuthEvent.LOGIN_FAILED, user_id=user_id, factor="password", reason=reason
    )
