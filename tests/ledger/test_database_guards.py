"""Bypass tests: bad ledger rows written with raw SQL are refused by PostgreSQL itself.

Python checks every invariant first; these tests skip Python entirely and prove the database
would catch the same mistakes. Each attempt runs in a savepoint of the test's rolled-back
transaction; `SET CONSTRAINTS ... IMMEDIATE` makes the deferred batch check fire at once
instead of at a COMMIT that never comes.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from kit.db import Database

pytestmark = pytest.mark.db

Attempt = Callable[[asyncpg.Connection], Awaitable[object]]


async def _balance(conn: asyncpg.Connection, currency: str = "USD") -> str:
    balance_id = f"bln_{uuid.uuid4()}"
    await conn.execute(
        "INSERT INTO ledger.balances (balance_id, ledger_id, currency) VALUES ($1, 'general_ledger_id', $2)",
        balance_id,
        currency,
    )
    return balance_id


async def _batch(conn: asyncpg.Connection) -> int:
    batch_id: int = await conn.fetchval(
        "INSERT INTO ledger.commit_batches (writer, item_count) VALUES ('raw-sql', 1) RETURNING batch_id"
    )
    return batch_id


async def _transaction(
    conn: asyncpg.Connection,
    batch_id: int | None,
    source: str,
    destination: str,
    amount: int,
    *,
    status: str = "APPLIED",
    effect: str = "applied",
    currency: str = "USD",
) -> str:
    transaction_id = f"txn_{uuid.uuid4()}"
    await conn.execute(
        "INSERT INTO ledger.transactions (transaction_id, source, destination, reference, precise_amount,"
        " precision, currency, status, effect, batch_id) VALUES ($1, $2, $3, $4, $5, 100, $6, $7, $8, $9)",
        transaction_id,
        source,
        destination,
        f"raw-{uuid.uuid4()}",
        amount,
        currency,
        status,
        effect,
        batch_id,
    )
    return transaction_id


async def _changes(
    conn: asyncpg.Connection, batch_id: int, rows: list[tuple[str, int, int]]
) -> None:
    for balance_id, credit, debit in rows:
        await conn.execute(
            "INSERT INTO ledger.balance_changes (batch_id, balance_id, credit, debit) VALUES ($1, $2, $3, $4)",
            batch_id,
            balance_id,
            credit,
            debit,
        )


async def _attempt_and_check(conn: asyncpg.Connection, attempt: Attempt) -> None:
    async with conn.transaction():
        await attempt(conn)
        await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")


async def _refused(conn: asyncpg.Connection, attempt: Attempt) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await _attempt_and_check(conn, attempt)
    return caught.value


class TestBalanceRows:
    @pytest.mark.parametrize(
        ("column", "value", "constraint"),
        [
            ("balance_id", "bln_not-a-uuid", "balances_balance_id_check"),
            ("indicator", "@with space", "balances_indicator_check"),
            ("currency", "US D", "balances_currency_check"),
        ],
    )
    async def test_identifier_formats_are_refused_on_insert_and_update(
        self, conn: asyncpg.Connection, column: str, value: str, constraint: str
    ) -> None:
        """A malformed id, indicator or currency is refused whether the row is inserted with
        it or an existing row is changed to it (the figures-only updates of the engine skip
        this check; a write of these columns never does)."""
        good = {"balance_id": f"bln_{uuid.uuid4()}", "indicator": None, "currency": "USD"}
        bad = {**good, column: value}
        inserted = await _refused(
            conn,
            lambda c: c.execute(
                "INSERT INTO ledger.balances (balance_id, ledger_id, indicator, currency)"
                " VALUES ($1, 'general_ledger_id', $2, $3)",
                bad["balance_id"],
                bad["indicator"],
                bad["currency"],
            ),
        )
        assert isinstance(inserted, asyncpg.CheckViolationError)
        assert inserted.constraint_name == constraint
        balance_id = await _balance(conn)
        updated = await _refused(
            conn,
            lambda c: c.execute(
                f"UPDATE ledger.balances SET {column} = $2 WHERE balance_id = $1",
                balance_id,
                value,
            ),
        )
        assert isinstance(updated, asyncpg.CheckViolationError)
        assert updated.constraint_name == constraint

    async def test_balance_must_equal_credit_minus_debit(self, conn: asyncpg.Connection) -> None:
        """A balance whose figures disagree is refused by a CHECK."""
        balance_id = await _balance(conn)
        error = await _refused(
            conn,
            lambda c: c.execute(
                "UPDATE ledger.balances SET balance = 5 WHERE balance_id = $1", balance_id
            ),
        )
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_negative_credit_is_refused(self, conn: asyncpg.Connection) -> None:
        """Credit and debit totals never go negative."""
        balance_id = await _balance(conn)
        error = await _refused(
            conn,
            lambda c: c.execute(
                "UPDATE ledger.balances SET credit_balance = -1, balance = -1 WHERE balance_id = $1",
                balance_id,
            ),
        )
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_fractional_amounts_are_refused(self, conn: asyncpg.Connection) -> None:
        """Minor units are whole numbers."""
        balance_id = await _balance(conn)
        error = await _refused(
            conn,
            lambda c: c.execute(
                "UPDATE ledger.balances SET credit_balance = 1.5, balance = 1.5 WHERE balance_id = $1",
                balance_id,
            ),
        )
        assert isinstance(error, asyncpg.CheckViolationError)


class TestTransactionRows:
    async def test_negative_amount_is_refused(self, conn: asyncpg.Connection) -> None:
        """A transaction moves a non-negative amount."""
        a, b = await _balance(conn), await _balance(conn)
        error = await _refused(
            conn, lambda c: _transaction(c, None, a, b, -5, status="QUEUED", effect="none")
        )
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_duplicate_reference_is_refused(self, conn: asyncpg.Connection) -> None:
        """A reference is unique across all transactions."""
        a, b = await _balance(conn), await _balance(conn)

        async def twice(c: asyncpg.Connection) -> None:
            for _ in range(2):
                await c.execute(
                    "INSERT INTO ledger.transactions (transaction_id, source, destination, reference, precise_amount,"
                    " precision, currency, status, effect) VALUES ($1, $2, $3, 'same-ref', 1, 1, 'USD', 'QUEUED', 'none')",
                    f"txn_{uuid.uuid4()}",
                    a,
                    b,
                )

        assert isinstance(await _refused(conn, twice), asyncpg.UniqueViolationError)

    async def test_posted_transaction_needs_a_batch(self, conn: asyncpg.Connection) -> None:
        """An APPLIED row outside any commit batch is refused."""
        a, b = await _balance(conn), await _balance(conn)
        error = await _refused(conn, lambda c: _transaction(c, None, a, b, 10))
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_status_and_effect_must_agree(self, conn: asyncpg.Connection) -> None:
        """A QUEUED row cannot claim to have moved money."""
        a, b = await _balance(conn), await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            await _transaction(c, await _batch(c), a, b, 10, status="QUEUED", effect="applied")

        assert isinstance(await _refused(conn, attempt), asyncpg.CheckViolationError)

    async def test_an_empty_end_only_on_a_split_parent(self, conn: asyncpg.Connection) -> None:
        """A row may leave an end empty only when it moves nothing and lists its legs on that
        side (the stored parent of a queued or scheduled split)."""
        a, b = await _balance(conn), await _balance(conn)
        legs = [{"identifier": b, "distribution": "left"}]

        async def parent(c: asyncpg.Connection, *, effect: str, status: str, legs: object) -> None:
            await c.execute(
                "INSERT INTO ledger.transactions (transaction_id, source, destination, reference,"
                " precise_amount, precision, currency, status, effect, batch_id, destinations)"
                " VALUES ($1, $2, '', $3, 10, 100, 'USD', $4, $5, $6, $7::jsonb)",
                f"txn_{uuid.uuid4()}",
                a,
                f"raw-{uuid.uuid4()}",
                status,
                effect,
                None if effect == "none" else await _batch(c),
                legs,
            )

        async with conn.transaction():
            await parent(conn, effect="none", status="QUEUED", legs=legs)  # accepted
        for attempt in (
            lambda c: parent(c, effect="none", status="QUEUED", legs=None),
            lambda c: parent(c, effect="none", status="QUEUED", legs=[]),
            lambda c: parent(c, effect="none", status="QUEUED", legs={"identifier": b}),
            lambda c: parent(c, effect="applied", status="APPLIED", legs=legs),
            lambda c: _transaction(c, None, "", b, 10, status="QUEUED", effect="none"),
        ):
            assert isinstance(await _refused(conn, attempt), asyncpg.CheckViolationError)

    async def test_amounts_are_immutable(self, conn: asyncpg.Connection) -> None:
        """What a stored transaction moved cannot be edited."""
        a, b = await _balance(conn), await _balance(conn)
        transaction_id = await _transaction(conn, None, a, b, 10, status="QUEUED", effect="none")
        error = await _refused(
            conn,
            lambda c: c.execute(
                "UPDATE ledger.transactions SET precise_amount = 11 WHERE transaction_id = $1",
                transaction_id,
            ),
        )
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_transactions_cannot_be_deleted(self, conn: asyncpg.Connection) -> None:
        """The transaction history is append-only."""
        error = await _refused(conn, lambda c: c.execute("DELETE FROM ledger.transactions"))
        assert isinstance(error, asyncpg.InsufficientPrivilegeError)

    async def test_hold_cannot_be_overused(self, conn: asyncpg.Connection) -> None:
        """Commits and voids of a hold never exceed its amount."""
        a, b = await _balance(conn), await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            hold = await _transaction(c, batch_id, a, b, 100, status="INFLIGHT", effect="inflight")
            await c.execute(
                "UPDATE ledger.transactions SET committed_amount = 80, voided_amount = 30 WHERE transaction_id = $1",
                hold,
            )

        assert isinstance(await _refused(conn, attempt), asyncpg.CheckViolationError)


class TestBatchProof:
    async def test_balanced_batch_is_accepted(self, conn: asyncpg.Connection) -> None:
        """A batch whose recorded changes match its transactions passes the deferred check."""
        a, b = await _balance(conn), await _balance(conn)
        async with conn.transaction():
            batch_id = await _batch(conn)
            await _transaction(conn, batch_id, a, b, 10)
            await _changes(conn, batch_id, [(a, 0, 10), (b, 10, 0)])
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")

    async def test_a_transaction_of_nothing_needs_no_recorded_change(
        self, conn: asyncpg.Connection
    ) -> None:
        """A zero-amount row (a split leg that rounds down to nothing) implies no change, so
        none is recorded for it; its balances must still exist and be in its currency."""
        a, b, c = await _balance(conn), await _balance(conn), await _balance(conn)
        euros = await _balance(conn, "EUR")
        async with conn.transaction():
            batch_id = await _batch(conn)
            await _transaction(conn, batch_id, a, b, 10)
            await _transaction(conn, batch_id, a, c, 0)
            await _changes(conn, batch_id, [(a, 0, 10), (b, 10, 0)])
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # The test's connection stays in one outer transaction: back to deferred checks.
        await conn.execute("SET CONSTRAINTS ALL DEFERRED")

        async def other_currency(cn: asyncpg.Connection) -> None:
            batch_id = await _batch(cn)
            await _transaction(cn, batch_id, a, b, 10)
            await _transaction(cn, batch_id, a, euros, 0)
            await _changes(cn, batch_id, [(a, 0, 10), (b, 10, 0)])

        error = await _refused(conn, other_currency)
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_changes_that_do_not_match_transactions_are_refused(
        self, conn: asyncpg.Connection
    ) -> None:
        """Crediting more than the transaction moved is caught at COMMIT."""
        a, b = await _balance(conn), await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            await _transaction(c, batch_id, a, b, 10)
            await _changes(c, batch_id, [(a, 0, 10), (b, 11, 0)])

        error = await _refused(conn, attempt)
        assert isinstance(error, asyncpg.CheckViolationError)
        assert "changed other than its transactions imply" in str(error)

    async def test_money_from_nowhere_is_refused(self, conn: asyncpg.Connection) -> None:
        """A balance change with no transaction behind it is caught at COMMIT."""
        a = await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            await _changes(c, batch_id, [(a, 1_000_000, 0)])

        assert isinstance(await _refused(conn, attempt), asyncpg.CheckViolationError)

    async def test_one_sided_batch_is_refused(self, conn: asyncpg.Connection) -> None:
        """Debiting the source without crediting the destination (money vanishing) is caught."""
        a, b = await _balance(conn), await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            await _transaction(c, batch_id, a, b, 10)
            await _changes(c, batch_id, [(a, 0, 10)])

        error = await _refused(conn, attempt)
        assert isinstance(error, asyncpg.CheckViolationError)
        assert "changed other than its transactions imply" in str(error)

    async def test_changes_that_net_to_zero_must_still_match_transactions(
        self, conn: asyncpg.Connection
    ) -> None:
        """Zero-sum changes that credit a balance no transaction names are caught."""
        a, b, c_ = await _balance(conn), await _balance(conn), await _balance(conn)

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            await _transaction(c, batch_id, a, b, 10)
            await _changes(c, batch_id, [(a, 0, 10), (b, 5, 0), (c_, 5, 0)])

        error = await _refused(conn, attempt)
        assert isinstance(error, asyncpg.CheckViolationError)
        assert "changed other than its transactions imply" in str(error)

    async def test_cross_currency_transaction_is_refused(self, conn: asyncpg.Connection) -> None:
        """A USD transaction cannot touch a EUR balance."""
        usd, eur = await _balance(conn, "USD"), await _balance(conn, "EUR")

        async def attempt(c: asyncpg.Connection) -> None:
            batch_id = await _batch(c)
            await _transaction(c, batch_id, usd, eur, 10)
            await _changes(c, batch_id, [(usd, 0, 10), (eur, 10, 0)])

        assert isinstance(await _refused(conn, attempt), asyncpg.CheckViolationError)

    async def test_rows_cannot_join_an_old_batch(
        self, conn: asyncpg.Connection, db: Database
    ) -> None:
        """Changes may only join a batch opened by the same database transaction."""
        async with db.transaction() as other:
            committed = await _batch(other)  # an empty batch, committed by another transaction
        a = await _balance(conn)
        error = await _refused(conn, lambda c: _changes(c, committed, [(a, 5, 0)]))
        assert isinstance(error, asyncpg.CheckViolationError)

    async def test_balance_changes_are_append_only(self, conn: asyncpg.Connection) -> None:
        """Recorded changes cannot be edited or deleted."""
        error = await _refused(conn, lambda c: c.execute("DELETE FROM ledger.balance_changes"))
        assert isinstance(error, asyncpg.InsufficientPrivilegeError)


def _seq_scans(plan: dict[str, object]) -> set[str]:
    """Relations a plan reads with a sequential scan."""
    found = {str(plan["Relation Name"])} if plan.get("Node Type") == "Seq Scan" else set()
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]  # a list of plan nodes
        found |= _seq_scans(child)
    return found


async def _history(conn: asyncpg.Connection) -> int:
    """A batch with 30,000 recorded balance changes (made up, never checked), never analyzed."""
    history = await _batch(conn)
    await conn.copy_records_to_table(
        "balance_changes",
        schema_name="ledger",
        records=[(history, f"bln_{i:08d}", 1, 0) for i in range(30_000)],
        columns=["batch_id", "balance_id", "credit", "debit"],
    )
    return history


class TestBatchProofCost:
    """The check at every COMMIT must cost what the batch wrote, not what the ledger holds."""

    async def test_connections_plan_every_statement(self, db: Database) -> None:
        """No cached generic plan chosen while a table was small outlives its growth."""
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"

    async def test_the_batch_check_reads_the_batch_by_key(self, conn: asyncpg.Connection) -> None:
        """With 30,000 recorded changes of another batch (never analyzed, as on a server whose
        autovacuum is off), the check's plan reads this batch's rows through an index."""
        # A savepoint of the test's rolled-back transaction: the made-up history is never checked.
        async with conn.transaction():
            await _history(conn)
            batch_id = await _batch(conn)
            source = await conn.fetchval(
                "SELECT prosrc FROM pg_proc WHERE oid = 'ledger.check_batch_balanced'::regproc"
            )
            query = source[source.index("WITH moves AS") :]
            query = query[: query.index(";")].replace("INTO bad", "")
            query = query.replace("NEW.batch_id", str(batch_id))
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}")
            assert "balance_changes" not in _seq_scans(plan[0]["Plan"])

    async def test_the_batch_check_plans_once_and_reads_by_key(
        self, conn: asyncpg.Connection
    ) -> None:
        """The check keeps one generic plan per connection instead of planning at every COMMIT,
        and that plan reads every table through an index: 30,000 recorded changes and
        transactions of another batch (never analyzed) are not scanned."""
        config = await conn.fetchval(
            "SELECT proconfig FROM pg_proc WHERE oid = 'ledger.check_batch_balanced'::regproc"
        )
        assert set(config or ()) == {"plan_cache_mode=force_generic_plan", "enable_seqscan=off"}
        source = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE oid = 'ledger.check_batch_balanced'::regproc"
        )
        query = source[source.index("WITH moves AS") :]
        query = query[: query.index(";")].replace("INTO bad", "").replace("NEW.batch_id", "$1")
        savepoint = conn.transaction()
        await savepoint.start()
        try:
            left, right = await _balance(conn), await _balance(conn)
            history = await _history(conn)
            fixed = (100, "USD", "APPLIED", "applied", history)
            columns = ["transaction_id", "source", "destination", "reference", "precise_amount"]
            columns += ["precision", "currency", "status", "effect", "batch_id"]
            await conn.copy_records_to_table(
                "transactions",
                schema_name="ledger",
                records=[
                    (f"txn_{uuid.uuid4()}", left, right, f"history-{i}-{uuid.uuid4()}", 1, *fixed)
                    for i in range(30_000)
                ],
                columns=columns,
            )
            batch_id = await _batch(conn)
            for setting in config:  # as the function runs
                name, value = setting.split("=")
                await conn.execute(f"SET LOCAL {name} = {value}")
            await conn.execute(f"PREPARE batch_check(bigint) AS {query}")
            try:
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE batch_check({batch_id})")
            finally:
                await conn.execute("DEALLOCATE batch_check")
            assert plan[0]["Plan"]["Node Type"] != "Result"  # a real plan was read
            assert _seq_scans(plan[0]["Plan"]) == set()
        finally:
            await savepoint.rollback()
