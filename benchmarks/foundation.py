"""Foundation numbers: the raw PostgreSQL ceiling of this machine, money and crypto costs.

The PostgreSQL part runs in a scratch database that is dropped afterwards: single-row commits
on one connection (the cost of one durable commit), and a batched double-entry write of 100
postings per transaction (COPY of 200 entry rows plus one UPDATE of summed deltas over 1,000
accounts), the shape the ledger's group commit uses.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import asyncpg

from benchmarks.report import Result, time_async, time_sync
from kit.crypto import EnvelopeCipher, KeyRing, decode_kek, generate_kek
from kit.db import connect, dsn_with_database
from kit.money import to_minor_units

ACCOUNTS = 1_000
POSTINGS_PER_TXN = 100
PG_DURATION_S = 3.0
CPU_DURATION_S = 1.0


def cpu_results() -> list[Result]:
    """Money conversion and envelope encryption, per call on one core."""
    cipher = EnvelopeCipher(KeyRing(decode_kek(generate_kek())))
    sealed = cipher.encrypt(b"x" * 32, context="bench")
    amounts = [
        Decimal(f"{random.randint(1, 10**9)}.{random.randint(0, 99):02d}") for _ in range(1000)
    ]
    index = iter(range(10**9))
    return [
        time_sync(
            "money: decimal -> minor units",
            "conv",
            lambda: to_minor_units(amounts[next(index) % 1000], 100),
            duration_s=CPU_DURATION_S,
        ),
        time_sync(
            "crypto: envelope encrypt (32 B)",
            "op",
            lambda: cipher.encrypt(b"x" * 32, context="bench"),
            duration_s=CPU_DURATION_S,
        ),
        time_sync(
            "crypto: envelope decrypt (32 B)",
            "op",
            lambda: cipher.decrypt(sealed, context="bench"),
            duration_s=CPU_DURATION_S,
        ),
    ]


async def postgres_results(admin_dsn: str, server_label: str) -> list[Result]:
    """Single-row commits and batched postings in a scratch database."""
    name = f"dwaybank_bench_{uuid.uuid4().hex[:10]}"
    admin = await connect(admin_dsn, timeout_s=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await connect(dsn_with_database(admin_dsn, name), timeout_s=10)
        try:
            return await _measure(conn, server_label)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _measure(conn: asyncpg.Connection, server_label: str) -> list[Result]:
    await conn.execute(
        "CREATE TABLE commits (id bigserial PRIMARY KEY, v int NOT NULL);"
        "CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL DEFAULT 0);"
        "CREATE TABLE entries (id bigserial PRIMARY KEY, posting bigint NOT NULL,"
        " account int NOT NULL, amount numeric NOT NULL);"
        f"INSERT INTO accounts (id) SELECT generate_series(1, {ACCOUNTS});"
    )
    single = await time_async(
        "postgres: single-row INSERT, one commit each",
        "commit",
        lambda: conn.execute("INSERT INTO commits (v) VALUES (1)"),
        duration_s=PG_DURATION_S,
        note=server_label,
    )
    counter = iter(range(10**12))

    async def batch() -> None:
        rows: list[tuple[int, int, int]] = []
        deltas: dict[int, int] = {}
        for _ in range(POSTINGS_PER_TXN):
            posting = next(counter)
            source, destination = random.sample(range(1, ACCOUNTS + 1), 2)
            amount = random.randint(1, 10_000)
            rows += [(posting, source, -amount), (posting, destination, amount)]
            deltas[source] = deltas.get(source, 0) - amount
            deltas[destination] = deltas.get(destination, 0) + amount
        ids = sorted(deltas)
        async with conn.transaction():
            await conn.execute(
                "SELECT id FROM accounts WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE", ids
            )
            await conn.copy_records_to_table(
                "entries", records=rows, columns=["posting", "account", "amount"]
            )
            await conn.execute(
                "UPDATE accounts a SET balance = a.balance + d.delta"
                " FROM unnest($1::int[], $2::numeric[]) AS d(id, delta) WHERE a.id = d.id",
                ids,
                [deltas[i] for i in ids],
            )

    batched = await time_async(
        f"postgres: {POSTINGS_PER_TXN} postings per transaction (COPY + UPDATE)",
        "posting",
        batch,
        duration_s=PG_DURATION_S,
        per_call=POSTINGS_PER_TXN,
        note=server_label,
    )
    total = await conn.fetchval("SELECT sum(balance) FROM accounts")
    if total != 0:
        raise SystemExit(f"benchmark corrupted its own books: sum of balances is {total}")
    return [single, batched]
