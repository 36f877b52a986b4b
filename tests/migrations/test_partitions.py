"""Transaction history: monthly partitions of transactions_archive and the archiving function.

Partitions are created inside the test's transaction (DDL is transactional in PostgreSQL), for
months far from today so that they never collide with the ones the migration made; the
rollback at the end of each test removes them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

pytestmark = pytest.mark.db

InsertRow = Callable[..., Awaitable[asyncpg.Record]]


async def _partition_of(conn: asyncpg.Connection, row_id: uuid.UUID) -> str:
    name = await conn.fetchval(
        "SELECT tableoid::regclass::text FROM transactions_archive WHERE id = $1", row_id
    )
    assert isinstance(name, str)
    return name


async def _partition_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{name}"))


async def _create(conn: asyncpg.Connection, months_ahead: int | None, start: date | None) -> int:
    created = await conn.fetchval(
        "SELECT create_transactions_archive_partitions($1, $2)", months_ahead, start
    )
    assert isinstance(created, int)
    return created


class TestArchivePartitions:
    """transactions_archive is range-partitioned by UTC month."""

    async def test_specified_january_2025_partition_exists(self, conn: asyncpg.Connection) -> None:
        """The specification's January 2025 partition covers that month in UTC."""
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        bound = await conn.fetchval(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class"
            " WHERE oid = 'public.transactions_archive_2025_01'::regclass"
        )
        assert bound == ("FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')")

    async def test_current_month_and_twelve_ahead_exist(self, conn: asyncpg.Connection) -> None:
        """The migration made this month's partition and the next twelve."""
        names = await conn.fetch(
            "SELECT 'transactions_archive_' || to_char("
            "  date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => n),"
            "  'YYYY_MM') AS name FROM generate_series(0, 12) AS n"
        )
        for row in names:
            assert await _partition_exists(conn, row["name"]), row["name"]

    async def test_row_lands_in_its_month_partition(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A row created in January 2025 is stored in transactions_archive_2025_01."""
        row = await rows("transactions_archive", created_at=datetime(2025, 1, 31, 23, tzinfo=UTC))
        assert await _partition_of(conn, row["id"]) == "transactions_archive_2025_01"

    async def test_partitions_are_created_idempotently(self, conn: asyncpg.Connection) -> None:
        """A second call creates nothing, and an overlapping call creates only the new month."""
        assert await _create(conn, 2, date(2031, 3, 1)) == 3
        assert await _create(conn, 2, date(2031, 3, 1)) == 0
        assert await _create(conn, 3, date(2031, 3, 17)) == 1
        for month in ("2031_03", "2031_04", "2031_05", "2031_06"):
            assert await _partition_exists(conn, f"transactions_archive_{month}")
        assert not await _partition_exists(conn, "transactions_archive_2031_07")

    async def test_created_partition_receives_its_rows(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A row for a month whose partition was just created is stored there."""
        await _create(conn, 0, date(2032, 7, 1))
        row = await rows("transactions_archive", created_at=datetime(2032, 7, 9, tzinfo=UTC))
        assert await _partition_of(conn, row["id"]) == "transactions_archive_2032_07"

    async def test_bounds_are_utc_whatever_the_session_time_zone(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """Partitions made from a New York session still split months at midnight UTC."""
        await conn.execute("SET LOCAL TimeZone = 'America/New_York'")
        await _create(conn, 1, date(2033, 3, 1))
        new_york = timezone(timedelta(hours=-4))
        late_march = await rows(
            "transactions_archive", created_at=datetime(2033, 3, 31, 21, 30, tzinfo=new_york)
        )
        assert await _partition_of(conn, late_march["id"]) == "transactions_archive_2033_04"

    @pytest.mark.parametrize(
        ("months_ahead", "start"),
        [
            (-1, date(2031, 1, 1)),
            (121, date(2031, 1, 1)),
            (None, date(2031, 1, 1)),
            (0, None),
            (0, date(1899, 12, 1)),
            (0, date(9990, 1, 1)),
        ],
    )
    async def test_out_of_range_arguments_are_refused(
        self, conn: asyncpg.Connection, months_ahead: int | None, start: date | None
    ) -> None:
        """months_ahead outside 0..120, or a start month without four-digit year, is refused."""
        with pytest.raises(asyncpg.InvalidParameterValueError):
            async with conn.transaction():
                await _create(conn, months_ahead, start)

    async def test_largest_allowed_range_is_accepted(self, conn: asyncpg.Connection) -> None:
        """months_ahead = 120 creates 121 monthly partitions."""
        assert await _create(conn, 120, date(2040, 1, 1)) == 121

    async def test_row_outside_any_partition_is_refused(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A row for a month without a partition is refused, not stored elsewhere."""
        with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
            async with conn.transaction():
                await rows("transactions_archive", created_at=datetime(1990, 6, 1, tzinfo=UTC))

    async def test_primary_key_is_id_and_created_at(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """The same (id, created_at) is refused twice."""
        row = await rows("transactions_archive")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await rows("transactions_archive", id=row["id"], created_at=row["created_at"])


class TestArchiveTransactions:
    """archive_transactions moves settled transactions into the history, in bounded batches."""

    async def test_moves_only_settled_rows_older_than_the_cutoff(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """Old completed, failed and cancelled rows move; pending and recent rows stay."""
        old = datetime(2001, 5, 10, tzinfo=UTC)
        moved = [
            (await rows("transactions", status=status, created_at=old))["id"]
            for status in ("completed", "failed", "cancelled")
        ]
        kept = [
            (await rows("transactions", status="pending", created_at=old))["id"],
            (await rows("transactions", status="processing", created_at=old))["id"],
            (
                await rows(
                    "transactions", status="completed", created_at=datetime(2001, 6, 2, tzinfo=UTC)
                )
            )["id"],
        ]
        count = await conn.fetchval(
            "SELECT archive_transactions($1)", datetime(2001, 6, 1, tzinfo=UTC)
        )
        assert count == 3
        for row_id in moved:
            assert await _partition_of(conn, row_id) == "transactions_archive_2001_05"
        live = await conn.fetch(
            "SELECT id FROM transactions WHERE id = ANY($1::uuid[])", moved + kept
        )
        assert {row["id"] for row in live} == set(kept)

    async def test_archived_row_is_unchanged(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """Every column of a transaction arrives in the archive as it was."""
        original = await rows(
            "transactions",
            status="completed",
            merchant_name="Corner Shop",
            metadata={"channel": "pos"},
            created_at=datetime(2001, 5, 10, tzinfo=UTC),
        )
        await conn.fetchval("SELECT archive_transactions($1)", datetime(2001, 6, 1, tzinfo=UTC))
        archived = await conn.fetchrow(
            "SELECT * FROM transactions_archive WHERE id = $1", original["id"]
        )
        assert archived is not None
        assert dict(archived) == dict(original)

    async def test_respects_the_batch_limit(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """No more than batch_limit rows move per call, oldest first."""
        created = [datetime(2001, 5, day, tzinfo=UTC) for day in (1, 2, 3)]
        ids = [
            (await rows("transactions", status="completed", created_at=at))["id"] for at in created
        ]
        count = await conn.fetchval(
            "SELECT archive_transactions($1, 2)", datetime(2001, 6, 1, tzinfo=UTC)
        )
        assert count == 2
        left = await conn.fetch("SELECT id FROM transactions WHERE id = ANY($1::uuid[])", ids)
        assert [row["id"] for row in left] == [ids[2]]

    async def test_keeps_rows_that_compliance_records_reference(
        self, conn: asyncpg.Connection, rows: InsertRow
    ) -> None:
        """A transaction still referenced by a compliance record is not moved."""
        transaction = await rows(
            "transactions", status="completed", created_at=datetime(2001, 5, 10, tzinfo=UTC)
        )
        await rows(
            "compliance_records", user_id=transaction["user_id"], transaction_id=transaction["id"]
        )
        count = await conn.fetchval(
            "SELECT archive_transactions($1)", datetime(2001, 6, 1, tzinfo=UTC)
        )
        assert count == 0

    async def test_nothing_to_move_returns_zero(self, conn: asyncpg.Connection) -> None:
        """With no settled row before the cutoff, nothing moves."""
        assert (
            await conn.fetchval("SELECT archive_transactions($1)", datetime(1980, 1, 1, tzinfo=UTC))
            == 0
        )

    @pytest.mark.parametrize(
        ("before", "batch_limit"),
        [
            (None, 10),
            (datetime(2001, 6, 1, tzinfo=UTC), 0),
            (datetime(2001, 6, 1, tzinfo=UTC), 100_001),
            (datetime(2001, 6, 1, tzinfo=UTC), None),
        ],
    )
    async def test_bad_arguments_are_refused(
        self, conn: asyncpg.Connection, before: datetime | None, batch_limit: int | None
    ) -> None:
        """A missing cutoff or a batch_limit outside 1..100000 is refused."""
        with pytest.raises(asyncpg.InvalidParameterValueError):
            async with conn.transaction():
                await conn.fetchval("SELECT archive_transactions($1, $2)", before, batch_limit)
