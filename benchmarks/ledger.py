"""Ledger throughput, side by side: the engine in-process, through the shard actors, over HTTP.

Every measurement posts transfers between random pairs of 10,000 funded balances (one
transfer is one posting: a debit and a credit). Latency is per transfer, from submission to the
answer, which comes only after COMMIT. After each run the books are verified (zero sums,
balances equal to their history), so a fast wrong answer cannot pass.

- engine: `LedgerEngine.execute` with 1,024 transfers outstanding at any time;
- shards: the same through `ShardedLedger` and one `LedgerShard` actor on a local Ray;
- hot balance: as shards, but every transfer credits the same balance;
- HTTP: `dwaybank up` (Serve behind HAProxy, one shard) driven by wrk with 32 connections,
  single transactions and bulks of 100; wrk runs on the same two cores as everything else.
  Single transactions run three times for 10 s and the median run is reported with every
  run's rate (a VM's speed drifts by several percent from one run to the next); it also prints
  the CPU each process group spent per request in that run (the ingress replica, the shard,
  PostgreSQL, HAProxy, the rest of Ray), from the processes' own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import httpx
import psutil

from benchmarks.report import Result, free_port, percentiles
from kit.db import Database, connect, dsn_with_database
from kit.migrations import migrate
from kit.settings import Settings
from ledger.engine import LedgerEngine
from ledger.models import Command, PostTransaction
from ledger.port import LedgerPort
from ledger.verification import verify

BALANCES: Final = 10_000
ENGINE_TRANSFERS: Final = 60_000
OUTSTANDING: Final = 1_024
HTTP_CONNECTIONS: Final = 32
HTTP_DURATION_S: Final = 10  # one run of single transactions
HTTP_RUNS: Final = 3  # single transactions: the median of this many runs, all printed
HTTP_BULK_DURATION_S: Final = 15
HTTP_WARMUP_S: Final = 3
BULK_SIZE: Final = 100
STARTUP_TIMEOUT_S: Final = 300
FUND_UNITS: Final = 10**12
# Where the CPU of an HTTP run goes: process groups by a marker in their command line (Ray
# names its workers `ray::<actor>`) or, for PostgreSQL, by process name; every other Ray
# process is "other Ray".
CPU_GROUPS: Final = (
    ("replica", "ServeReplica:ledger"),
    ("shard", "LedgerShard"),
    ("HAProxy", "/haproxy "),
)
POSTGRES: Final = "PostgreSQL"
OTHER_RAY: Final = "other Ray"


def _transfer(source: str, destination: str) -> PostTransaction:
    return PostTransaction(
        transaction_id=f"txn_{uuid.uuid4()}",
        reference=f"bench-{uuid.uuid4()}",
        precise_amount=random.randint(1, 1_000),
        precision=100,
        currency="USD",
        description="bench",
        source=source,
        destination=destination,
        skip_queue=True,
    )


async def _drive(port: LedgerPort, commands: list[Command]) -> tuple[float, list[float], int]:
    """Submit with `OUTSTANDING` in flight; (seconds, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    queue = iter(commands)

    async def worker() -> None:
        nonlocal errors
        for command in queue:
            started = time.perf_counter()
            (outcome,) = await port.execute([command])
            latencies.append(time.perf_counter() - started)
            errors += outcome.error is not None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(OUTSTANDING)))
    return time.perf_counter() - started, latencies, errors


def _result(
    name: str, seconds: float, latencies: list[float], count: int, note: str = ""
) -> Result:
    p50, p95, p99 = percentiles(latencies)
    return Result(name, "posting", count / seconds, p50, p95, p99, note)


async def _prepare(dsn: str) -> tuple[Database, list[str]]:
    conn = await connect(dsn, timeout_s=10)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    db = await Database.open(  # as a shard opens its engine's pool
        Settings().model_copy(update={"db_pool_max_size": 4}), dsn, keeps_session=True
    )
    ids = [f"bln_{uuid.uuid4()}" for _ in range(BALANCES)]
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ledger.balances (balance_id, ledger_id, currency)"
            " SELECT id, 'general_ledger_id', 'USD' FROM unnest($1::text[]) id",
            ids,
        )
    engine = LedgerEngine(db, writer="bench-fund")
    funding: list[Command] = [
        PostTransaction(
            transaction_id=f"txn_{uuid.uuid4()}",
            reference=f"fund-{uuid.uuid4()}",
            precise_amount=FUND_UNITS,
            precision=100,
            currency="USD",
            description="fund",
            source="@WorldUSD",
            destination=b,
            allow_overdraft=True,
            skip_queue=True,
        )
        for b in ids
    ]
    outcomes = await engine.execute(funding)
    if any(o.error for o in outcomes):
        raise SystemExit("benchmark funding failed")
    return db, ids


async def _check_books(db: Database) -> str:
    async with db.connection() as conn:
        report = await verify(conn)
    if not report.is_clean:
        raise SystemExit(f"the books do not verify after the benchmark: {report.findings[:3]}")
    return "books verified"


def _pairs(ids: list[str], count: int, *, hot: str | None = None) -> list[Command]:
    commands: list[Command] = []
    for _ in range(count):
        source = random.choice(ids)
        destination = hot or random.choice(ids)
        while destination == source:
            destination = random.choice(ids)
        commands.append(_transfer(source, destination))
    return commands


async def engine_results(dsn: str) -> list[Result]:
    """The engine in-process, then through one shard actor (uncontended and hot)."""
    db, ids = await _prepare(dsn)
    results: list[Result] = []
    try:
        engine = LedgerEngine(db, writer="bench")
        seconds, latencies, errors = await _drive(engine, _pairs(ids, ENGINE_TRANSFERS))
        results.append(
            _result(
                "engine in-process (group commit)",
                seconds,
                latencies,
                ENGINE_TRANSFERS - errors,
                await _check_books(db),
            )
        )
        results.extend(await _shard_results(dsn, db, ids))
    finally:
        await db.close()
    return results


async def _shard_results(dsn: str, db: Database, ids: list[str]) -> list[Result]:
    import ray  # noqa: PLC0415 - only this part needs Ray

    from actors.ledger_shard import ShardConfig, ShardedLedger, start_shards  # noqa: PLC0415

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace=f"bench-{uuid.uuid4().hex[:6]}",
        log_to_driver=False,
    )
    try:
        port = ShardedLedger(start_shards(1, ShardConfig(database_url=dsn, pool_max_size=4)))
        await _drive(port, _pairs(ids, 2_000))  # warm the actor and its pool
        seconds, latencies, errors = await _drive(port, _pairs(ids, ENGINE_TRANSFERS))
        uncontended = _result(
            "engine through 1 shard actor (coalesced)",
            seconds,
            latencies,
            ENGINE_TRANSFERS - errors,
            await _check_books(db),
        )
        hot = random.choice(ids)
        seconds, latencies, errors = await _drive(port, _pairs(ids, ENGINE_TRANSFERS, hot=hot))
        contended = _result(
            "  same, every transfer into one hot balance",
            seconds,
            latencies,
            ENGINE_TRANSFERS - errors,
            "",
        )
        ratio = contended.rate_per_s / uncontended.rate_per_s
        contended = Result(
            contended.name,
            contended.unit,
            contended.rate_per_s,
            contended.p50_ms,
            contended.p95_ms,
            contended.p99_ms,
            f"{ratio:.0%} of uncontended; {await _check_books(db)}",
        )
        return [uncontended, contended]
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- over HTTP


@contextlib.contextmanager
def _running(database_url: str | None) -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="dwaybank-bench-up-"))
    folder.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS"}}
    env.update(
        DWAYBANK_DATA_DIR=str(folder),
        DWAYBANK_HTTP_PORT=str(port),
        DWAYBANK_DASHBOARD_PORT=str(free_port()),
        DWAYBANK_HAPROXY_METRICS_PORT=str(free_port()),
        DWAYBANK_HAPROXY_STATS_PORT=str(free_port()),
        DWAYBANK_LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise SystemExit("dwaybank up exited before it was ready")
            if line.startswith("DwayBank is up"):
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=120)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


_LUA = """
local ids = {%(ids)s}
local counter = 0
math.randomseed(os.time())
function setup(thread) thread:set("tid", tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))) end
local function leg()
  local a = ids[math.random(#ids)]
  local b = ids[math.random(#ids)]
  while b == a do b = ids[math.random(#ids)] end
  counter = counter + 1
  return string.format('{"precise_amount":%%d,"precision":100,"reference":"w-%%s-%%d","currency":"USD","source":"%%s","destination":"%%s","description":"bench","skip_queue":true,"allow_overdraft":true}', math.random(1, 1000), tid, counter, a, b)
end
request = function()
  if %(bulk)d == 0 then
    return wrk.format("POST", "/ledger/transactions", {["Content-Type"] = "application/json", ["User-Agent"] = "bench"}, leg())
  end
  local items = {}
  for i = 1, %(bulk)d do items[i] = leg() end
  local body = '{"atomic":false,"transactions":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/ledger/transactions/bulk", {["Content-Type"] = "application/json", ["User-Agent"] = "bench"}, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%.3f %%.3f %%.3f %%.6f\\n", summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
"""


class _WrkRun(NamedTuple):
    rate_per_s: float  # requests
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int  # socket errors and non-2xx answers


def _wrk(base_url: str, ids: list[str], *, bulk: int, seconds: int) -> _WrkRun:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(_LUA % {"ids": ",".join(f'"{i}"' for i in ids), "bulk": bulk})
    try:
        output = subprocess.run(
            ["wrk", "-t1", f"-c{HTTP_CONNECTIONS}", f"-d{seconds}s", "-s", str(script), base_url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        script.unlink()
    line = next(x for x in output.splitlines() if x.startswith("BENCH"))
    _, requests, socket_errors, status_errors, p50, p95, p99, duration = line.split()
    return _WrkRun(
        int(requests) / float(duration),
        float(p50),
        float(p95),
        float(p99),
        int(socket_errors) + int(status_errors),
    )


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds each process group has used so far."""
    totals = dict.fromkeys([name for name, _ in CPU_GROUPS] + [POSTGRES, OTHER_RAY], 0.0)
    for process in psutil.process_iter(["cmdline", "name"]):
        command = " ".join(process.info["cmdline"] or ()) + " "
        group = next((name for name, marker in CPU_GROUPS if marker in command), None)
        if group is None and process.info["name"] == "postgres":
            group = POSTGRES
        elif group is None and any(m in command for m in ("ray::", "raylet", "gcs_server")):
            group = OTHER_RAY
        if group is None:
            continue
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue  # it ended meanwhile
        totals[group] += times.user + times.system
    return totals


def _cpu_note(before: dict[str, float], after: dict[str, float], requests: float) -> str:
    parts = [
        f"{name} {(after[name] - before[name]) / requests * 1e6:,.0f} us"
        for name in after
        if requests > 0
    ]
    return "CPU per request: " + ", ".join(parts)


def http_results(database_url: str | None) -> list[Result]:
    """Single transactions and bulks over HTTP through the whole stack."""
    if shutil.which("wrk") is None:
        return [Result("HTTP (skipped: install wrk, e.g. apt-get install wrk)", "request", 0.0)]
    results: list[Result] = []
    with (
        _running(database_url) as base_url,
        httpx.Client(base_url=base_url, headers={"User-Agent": "bench"}, timeout=30) as http,
    ):
        ids = []
        for _ in range(200):
            response = http.post(
                "/ledger/balances", json={"ledger_id": "general_ledger_id", "currency": "USD"}
            )
            response.raise_for_status()
            ids.append(response.json()["balance_id"])
        _wrk(base_url, ids, bulk=0, seconds=HTTP_WARMUP_S)
        runs: list[tuple[_WrkRun, str]] = []  # each run and where its CPU went
        for _ in range(HTTP_RUNS):
            before, started = _cpu_seconds(), time.perf_counter()
            run = _wrk(base_url, ids, bulk=0, seconds=HTTP_DURATION_S)
            requests = run.rate_per_s * (time.perf_counter() - started)
            runs.append((run, _cpu_note(before, _cpu_seconds(), requests)))
        rates = ", ".join(f"{run.rate_per_s:,.0f}" for run, _ in runs)
        errors = sum(run.errors for run, _ in runs)
        median, cpu = sorted(runs, key=lambda pair: pair[0].rate_per_s)[len(runs) // 2]
        results.append(
            Result(
                f"HTTP single transactions ({HTTP_CONNECTIONS} connections)",
                "posting",
                median.rate_per_s,
                median.p50_ms,
                median.p95_ms,
                median.p99_ms,
                f"median of {HTTP_RUNS} runs of {HTTP_DURATION_S} s ({rates}/s); "
                f"{errors} errors in all; {cpu}",
            )
        )
        bulk = _wrk(base_url, ids, bulk=BULK_SIZE, seconds=HTTP_BULK_DURATION_S)
        results.append(
            Result(
                f"HTTP bulk of {BULK_SIZE} ({HTTP_CONNECTIONS} connections)",
                "posting",
                bulk.rate_per_s * BULK_SIZE,
                bulk.p50_ms,
                bulk.p95_ms,
                bulk.p99_ms,
                f"{bulk.rate_per_s:,.0f} requests/s, {bulk.errors} errors; latency per request",
            )
        )
    return results


def run(admin_dsn: str, label: str, *, external: bool) -> tuple[list[Result], list[Result]]:
    """(engine results, HTTP results), each on its own scratch database of the given server
    (the HTTP run starts from an empty ledger, as the embedded one does, instead of inheriting
    the engine runs' history and its backlog of events to dispatch)."""
    names = [f"dwaybank_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]

    async def create() -> None:
        conn = await connect(admin_dsn, timeout_s=10)
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop(*dropped: str) -> None:
        conn = await connect(admin_dsn, timeout_s=10)
        for name in dropped:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    try:
        engine = asyncio.run(engine_results(dsn_with_database(admin_dsn, names[0])))
        # Gone before the HTTP run: autovacuum working through the engine runs' hundreds of
        # thousands of fresh rows would otherwise share the two cores with it.
        asyncio.run(drop(names[0]))
        http = http_results(dsn_with_database(admin_dsn, names[1]) if external else None)
    finally:
        asyncio.run(drop(*names))
    return engine, http


def noted(results: list[Result], label: str) -> list[Result]:
    """Tag results with the server they ran on."""
    return [
        Result(
            r.name,
            r.unit,
            r.rate_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            (r.note + "; " if r.note else "") + label,
        )
        for r in results
    ]


Factory = Callable[[], Any]
