"""The ledger as a capability: what the API, wallets and tests post transactions through.

Implementations: `LedgerEngine` (in-process group commit, for tests and one-process runs), the
sharded engine behind Ray actors (`actors.ledger_shard.ShardedLedger`, injected by
`deployments`), and `ledger.remote.BlnkHttpLedger` (a remote Blnk server).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ledger.models import Command, Outcome


class LedgerPort(Protocol):
    """Executes ledger commands; one outcome per command, in order."""

    async def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Run the commands; nothing is answered before it is durable."""
        ...
