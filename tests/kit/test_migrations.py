"""The migration runner: ordered, atomic, checksummed, serialised across processes.

Each test gets an empty scratch database and its own folder of migration files, so it can
change files between runs the way a careless commit would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from kit.db import connect, dsn_with_database
from kit.migrations import (
    LOCK_KEY,
    MigrationError,
    MigrationLockTimeoutError,
    MigrationState,
    discover,
    migrate,
    status,
)

pytestmark = pytest.mark.db


@pytest.fixture
async def scratch_dsn(servers: tuple[str, str]) -> AsyncIterator[str]:
    """An empty database, dropped after the test."""
    admin_dsn = servers[0]
    name = f"dwaybank_scratch_{uuid.uuid4().hex[:10]}"
    admin = await connect(admin_dsn, timeout_s=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield dsn_with_database(admin_dsn, name)
    admin = await connect(admin_dsn, timeout_s=10)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with two good migrations."""
    _write(tmp_path, "0001_accounts.sql", "CREATE TABLE accounts (id int PRIMARY KEY);")
    _write(
        tmp_path,
        "0002_account_names.sql",
        "ALTER TABLE accounts ADD COLUMN name text;\n"
        "CREATE FUNCTION two() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 2; END $$;",
    )
    return tmp_path


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


class TestApply:
    async def test_applies_in_order_and_records_checksums(
        self, scratch_dsn: str, folder: Path
    ) -> None:
        """Pending files are applied in version order and recorded with their SHA-256."""
        conn = await connect(scratch_dsn, timeout_s=5)
        try:
            applied = await migrate(conn, folder)
            assert [m.version for m in applied] == [1, 2]
            assert await conn.fetchval("SELECT two()") == 2
            rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY 1")
            assert [(r["version"], r["checksum"]) for r in rows] == [
                (f.version, f.checksum) for f in discover(folder)
            ]
        finally:
            await conn.close()

    async def test_is_idempotent(self, scratch_dsn: str, folder: Path) -> None:
        """A second run applies nothing and changes nothing."""
        conn = await connect(scratch_dsn, timeout_s=5)
        try:
            await migrate(conn, folder)
            assert await migrate(conn, folder) == []
            report = await status(conn, folder)
            assert {line.state for line in report} == {MigrationState.APPLIED}
        finally:
            await conn.close()

    async def test_a_failing_file_leaves_nothing_half_applied(
        self, scratch_dsn: str, folder: Path
    ) -> None:
        """A file that fails midway is rolled back whole and not recorded."""
        _write(folder, "0003_broken.sql", "CREATE TABLE half (id int);\nSELECT no_such_function();")
        conn = await connect(scratch_dsn, timeout_s=5)
        try:
            with pytest.raises(asyncpg.UndefinedFunctionError):
                await migrate(conn, folder)
            assert "half" not in await _tables(conn)
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 2
        finally:
            await conn.close()

    async def test_concurrent_starts_apply_once(self, scratch_dsn: str, folder: Path) -> None:
        """Four migrators racing apply each file exactly once between them."""
        _write(folder, "0003_slow.sql", "SELECT pg_sleep(0.3); CREATE TABLE slow (id int);")
        conns = [await connect(scratch_dsn, timeout_s=5) for _ in range(4)]
        try:
            results = await asyncio.gather(*(migrate(c, folder) for c in conns))
            applied = sorted(m.version for result in results for m in result)
            assert applied == [1, 2, 3]
            count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
            assert count == 3
        finally:
            for c in conns:
                await c.close()

    async def test_lock_wait_is_bounded(self, scratch_dsn: str, folder: Path) -> None:
        """A migrator gives up with a clear error when the lock is held too long."""
        holder = await connect(scratch_dsn, timeout_s=5)
        waiter = await connect(scratch_dsn, timeout_s=5)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
            with pytest.raises(MigrationLockTimeoutError):
                await migrate(waiter, folder, lock_wait_s=0.3)
        finally:
            await holder.close()
            await waiter.close()


class TestRefusals:
    async def test_a_changed_file_is_refused(self, scratch_dsn: str, folder: Path) -> None:
        """Editing an applied migration stops the next run before anything is applied."""
        conn = await connect(scratch_dsn, timeout_s=5)
        try:
            await migrate(conn, folder)
            _write(folder, "0001_accounts.sql", "CREATE TABLE accounts (id bigint PRIMARY KEY);")
            _write(folder, "0003_more.sql", "CREATE TABLE more (id int);")
            with pytest.raises(MigrationError, match="0001_accounts"):
                await migrate(conn, folder)
            assert "more" not in await _tables(conn)
            states = {line.name: line.state for line in await status(conn, folder)}
            assert states["0001_accounts"] is MigrationState.CHANGED
            assert states["0003_more"] is MigrationState.PENDING
        finally:
            await conn.close()

    async def test_a_deleted_file_is_refused(self, scratch_dsn: str, folder: Path) -> None:
        """Removing an applied migration is refused too."""
        conn = await connect(scratch_dsn, timeout_s=5)
        try:
            await migrate(conn, folder)
            (folder / "0002_account_names.sql").unlink()
            with pytest.raises(MigrationError, match="missing"):
                await migrate(conn, folder)
        finally:
            await conn.close()

    @pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
    def test_malformed_names_are_refused(self, tmp_path: Path, name: str) -> None:
        """File names must be NNNN_slug.sql."""
        _write(tmp_path, name, "SELECT 1;")
        with pytest.raises(MigrationError, match="is not NNNN_slug"):
            discover(tmp_path)

    def test_duplicate_versions_are_refused(self, tmp_path: Path) -> None:
        """Two files may not share a version."""
        _write(tmp_path, "0001_a.sql", "SELECT 1;")
        _write(tmp_path, "0001_b.sql", "SELECT 1;")
        with pytest.raises(MigrationError, match="share version"):
            discover(tmp_path)


class TestProjectMigrations:
    def test_the_project_files_are_well_formed(self) -> None:
        """The shipped migrations parse; each area numbers within its own hundred."""
        files = discover()
        assert files, "the project ships migrations"
        versions = [f.version for f in files]
        assert versions == sorted(set(versions))
        assert versions[:8] == list(range(1, 9)), "the foundation's data model comes first"
