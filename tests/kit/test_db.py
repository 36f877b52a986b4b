"""The pool's release: a full session reset by default, a rollback only for `keeps_session`."""

from __future__ import annotations

import pytest

from kit.db import Database
from kit.settings import Settings

pytestmark = pytest.mark.db


def _single(settings: Settings) -> Settings:
    return settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": 1})


async def test_default_pool_resets_the_session(settings: Settings, database_dsn: str) -> None:
    """A session setting made by one user of the pool is gone for the next."""
    db = await Database.open(_single(settings), database_dsn)
    try:
        async with db.connection() as conn:
            await conn.execute("SET application_name = 'left-behind'")
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW application_name") != "left-behind"
    finally:
        await db.close()


async def test_keeps_session_pool_still_rolls_back(settings: Settings, database_dsn: str) -> None:
    """A connection released inside a transaction comes back rolled back, not mid-transaction;
    a session setting survives (the pool's users promise not to make any)."""
    db = await Database.open(_single(settings), database_dsn, keeps_session=True)
    try:
        async with db.connection() as conn:
            await conn.execute("SET application_name = 'kept'")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
            assert conn.is_in_transaction()
        async with db.connection() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
            assert await conn.fetchval("SHOW application_name") == "kept"
    finally:
        await db.close()
