"""Forward-only SQL migrations: ordered, atomic, checksummed, serialised.

Files are `migrations/NNNN_slug.sql`. Each is applied in its own transaction together with the
row that records it (version, name, SHA-256 of the file, time taken), so a migration is either
wholly applied and recorded or not at all; a crash leaves nothing half-migrated. Every run holds
a PostgreSQL advisory lock for its whole length, so concurrent starts (several replicas, a
developer and CI) apply each file exactly once: the second waits, then finds nothing to do.
Before applying anything, every recorded checksum is compared with its file; an applied file
that changed, or disappeared, stops the run with an error naming it.

Why not yoyo-migrations: it records an applied migration in a second transaction on another
connection (a crash between the two re-applies the file), guards concurrency with a lock row
that outlives a killed process, splits files with sqlparse, and keeps no checksum of the file,
which is the one thing this runner must refuse on. Those are the whole of a runner; what is
left here is about 150 lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import asyncpg

from kit.errors import ConfigurationError, DependencyError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"
LOCK_KEY: Final = 0x6477_6179_6D69_6772 & 0x7FFF_FFFF_FFFF_FFFF  # "dwaymigr", a stable bigint
LOCK_WAIT_S: Final = 120.0  # how long a second starter waits for the first to finish
LOCK_POLL_S: Final = 0.2
FILE_SIZE_MAX: Final = 4 << 20  # a migration is schema, not data
FILES_MAX: Final = 10_000
_NAME = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")

_HISTORY_DDL: Final = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    CHAR(64) NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0)
)
"""


class MigrationError(ConfigurationError):
    """The migrations on disk disagree with the database, or a file is malformed."""

    code = "MIG_REFUSED"


class MigrationLockTimeoutError(DependencyError):
    """Another process held the migration lock for longer than we wait."""

    code = "MIG_LOCK_TIMEOUT"


@dataclass(frozen=True, slots=True)
class MigrationFile:
    """One SQL file on disk."""

    version: int
    name: str
    sql: str
    checksum: str


class MigrationState(StrEnum):
    """Where one migration stands relative to the database."""

    APPLIED = "applied"
    PENDING = "pending"
    CHANGED = "changed"  # applied, but the file no longer matches its checksum
    MISSING = "missing"  # applied, but the file is gone


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One line of `dwaybank migrate --status`."""

    version: int
    name: str
    state: MigrationState
    applied_at: str | None


def discover(directory: Path = MIGRATIONS_DIR) -> list[MigrationFile]:
    """Read every migration file in version order; malformed names and duplicates are errors."""
    files: dict[int, MigrationFile] = {}
    paths = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
    if len(paths) > FILES_MAX:
        raise MigrationError(f"more than {FILES_MAX} migration files in {directory}")
    for path in paths:
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_slug.sql")
        if path.stat().st_size > FILE_SIZE_MAX:
            raise MigrationError(f"migration {path.name} is larger than {FILE_SIZE_MAX} bytes")
        raw = path.read_bytes()
        version = int(match["version"])
        if version in files:
            raise MigrationError(f"two migration files share version {version:04d}")
        files[version] = MigrationFile(
            version=version,
            name=path.stem,
            sql=raw.decode("utf-8"),
            checksum=hashlib.sha256(raw).hexdigest(),
        )
    return [files[v] for v in sorted(files)]


async def _acquire_lock(conn: asyncpg.Connection, *, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationLockTimeoutError(
                f"another process held the migration lock for more than {wait_s:.0f}s"
            )
        await asyncio.sleep(LOCK_POLL_S)


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM public.schema_migrations ORDER BY version"
    )
    return {row["version"]: row for row in rows}


def _compare(
    files: list[MigrationFile], applied: dict[int, asyncpg.Record]
) -> list[MigrationStatus]:
    by_version = {f.version: f for f in files}
    report: list[MigrationStatus] = []
    for version in sorted(by_version.keys() | applied.keys()):
        file, row = by_version.get(version), applied.get(version)
        applied_at = row["applied_at"].isoformat() if row is not None else None
        if row is None and file is not None:
            report.append(MigrationStatus(version, file.name, MigrationState.PENDING, None))
        elif file is None and row is not None:
            report.append(MigrationStatus(version, row["name"], MigrationState.MISSING, applied_at))
        elif file is not None and row is not None:
            state = (
                MigrationState.APPLIED
                if row["checksum"] == file.checksum and row["name"] == file.name
                else MigrationState.CHANGED
            )
            report.append(MigrationStatus(version, file.name, state, applied_at))
    return report


async def status(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR
) -> list[MigrationStatus]:
    """Compare the files with what the database recorded, without changing anything."""
    return _compare(discover(directory), await _applied(conn))


async def migrate(
    conn: asyncpg.Connection,
    directory: Path = MIGRATIONS_DIR,
    *,
    lock_wait_s: float = LOCK_WAIT_S,
) -> list[MigrationFile]:
    """Apply every pending migration in order; returns the ones this call applied.

    Raises:
        MigrationError: an applied file changed or disappeared, or a file is malformed.
        MigrationLockTimeoutError: another migrator held the lock too long.
    """
    files = discover(directory)
    await _acquire_lock(conn, wait_s=lock_wait_s)
    try:
        await conn.execute(_HISTORY_DDL)
        report = _compare(files, await _applied(conn))
        refused = [s for s in report if s.state in {MigrationState.CHANGED, MigrationState.MISSING}]
        if refused:
            listing = ", ".join(f"{s.name} ({s.state.value})" for s in refused)
            raise MigrationError(f"applied migrations no longer match their files: {listing}")
        pending = {s.version for s in report if s.state is MigrationState.PENDING}
        done: list[MigrationFile] = []
        for file in files:
            if file.version not in pending:
                continue
            started = time.monotonic()
            async with conn.transaction():
                await conn.execute(file.sql)
                await conn.execute(
                    "INSERT INTO public.schema_migrations (version, name, checksum, duration_ms)"
                    " VALUES ($1, $2, $3, $4)",
                    file.version,
                    file.name,
                    file.checksum,
                    int((time.monotonic() - started) * 1000),
                )
            done.append(file)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
