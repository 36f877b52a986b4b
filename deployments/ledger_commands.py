"""`dwaybank ledger verify`: the ledger's reconciliation proofs from the command line."""

from __future__ import annotations

import argparse
import asyncio

from deployments.runtime import resolve_servers
from kit.db import connect
from kit.settings import Settings
from ledger.verification import verify

EXIT_FINDINGS = 1
CONNECT_TIMEOUT_S = 5.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dwaybank ledger ...`."""
    ledger = commands.add_parser("ledger", help="ledger maintenance")
    actions = ledger.add_subparsers(dest="ledger_command", required=True)
    actions.add_parser("verify", help="prove zero sums and that balances match their history")


async def _verify(database_url: str) -> int:
    conn = await connect(database_url, timeout_s=CONNECT_TIMEOUT_S)
    try:
        report = await verify(conn)
    finally:
        await conn.close()
    print(
        f"checked {report.balances} balances, {report.transactions} transactions, {report.batches} batches"
    )
    if report.is_clean:
        print("ledger verified: every currency sums to zero; every balance matches its changes,")
        print("its transactions and every hold its commits and voids.")
        return 0
    for finding in report.findings:
        print(f"FAIL {finding}")
    return EXIT_FINDINGS


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run `dwaybank ledger verify`; None for other commands."""
    if args.command != "ledger":
        return None
    servers = resolve_servers(settings, with_redis=False)
    try:
        return asyncio.run(_verify(servers.database_url))
    finally:
        servers.stop_started()
