"""The ledger port the HTTP API posts through: provenance and hooks around any `LedgerPort`.

`build_routers` wraps the injected port (the in-process engine, the shard actors, a remote
Blnk) in `ApiLedgerPort`, so what only the API needs stays out of the engine and off the paths
that do not come through the API (wallets, schedulers):

- a request made with an API key stamps `meta_data.BLNK_GENERATED_BY = api_key_id` on what it
  creates (transactions, each item of a bulk, refunds), as Blnk's auth middleware does;
- a new transaction (POST /transactions) passes the active PRE_TRANSACTION hooks before it is
  submitted, and the POST_TRANSACTION hooks are called once it is durable.

With no API key and no hooks the wrapper adds one context-variable read and two cache lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kit.errors import AppError
from kit.money import format_amount
from ledger.apikeys import GENERATED_BY_KEY, current_generated_by
from ledger.hooks import HookRunner, HookType
from ledger.models import Command, Outcome, PostBulk, PostTransaction, RefundTransaction
from ledger.port import LedgerPort
from ledger.wire import amount_float, leg_json, timestamp, transaction_json


def pending_transaction_json(command: PostTransaction) -> dict[str, Any]:
    """A transaction about to be submitted, as a pre hook sees it (no status or hash yet)."""
    body: dict[str, Any] = {
        "precise_amount": command.precise_amount,
        "amount": amount_float(command.precise_amount, command.precision),
        "amount_string": format_amount(command.precise_amount, command.precision),
        "precision": command.precision,
        "overdraft_limit": float(command.overdraft_limit),
        "transaction_id": command.transaction_id,
        "parent_transaction": command.parent_transaction,
        "source": command.source or "",
        "destination": command.destination or "",
        "reference": command.reference,
        "currency": command.currency,
        "description": command.description,
        "allow_overdraft": command.allow_overdraft,
        "inflight": command.inflight,
        "skip_queue": command.skip_queue,
        "atomic": command.atomic,
        "created_at": timestamp(command.created_at),
        "effective_date": timestamp(command.effective_date or command.created_at),
        "scheduled_for": timestamp(command.scheduled_for),
        "inflight_expiry_date": timestamp(command.inflight_expiry_date),
        "inflight_commit_date": timestamp(command.inflight_commit_date),
        "meta_data": command.meta_data,
    }
    if command.sources is not None:
        body["sources"] = [leg_json(leg) for leg in command.sources]
    if command.destinations is not None:
        body["destinations"] = [leg_json(leg) for leg in command.destinations]
    return body


def _stamped(command: Command, api_key_id: str) -> Command:
    mark = {GENERATED_BY_KEY: api_key_id}
    if isinstance(command, PostTransaction | RefundTransaction):
        return replace(command, meta_data={**command.meta_data, **mark})
    if isinstance(command, PostBulk):
        items = tuple(replace(item, meta_data={**item.meta_data, **mark}) for item in command.items)
        return replace(command, items=items)
    return command


def stamped_bulk_request(raw: dict[str, Any]) -> dict[str, Any]:
    """A bulk request body as stored for a later run without this port (the scheduler's
    recovery of a run_async bulk): its items carry the current API key's provenance, as the
    port would have stamped them."""
    api_key_id = current_generated_by()
    if api_key_id is None:
        return raw
    mark = {GENERATED_BY_KEY: api_key_id}
    items = [
        {**item, "meta_data": {**(item.get("meta_data") or {}), **mark}}
        for item in raw.get("transactions") or ()
    ]
    return {**raw, "transactions": items}


class ApiLedgerPort:
    """A `LedgerPort` that stamps API-key provenance and runs transaction hooks."""

    def __init__(self, inner: LedgerPort, hooks: HookRunner) -> None:
        self._inner = inner
        self._hooks = hooks

    async def execute(self, commands: Sequence[Command]) -> list[Outcome]:
        """Stamp, ask the pre hooks, execute what they let through, schedule the post hooks."""
        api_key_id = current_generated_by()
        if api_key_id is not None:
            commands = [_stamped(command, api_key_id) for command in commands]
        outcomes: list[Outcome | None] = [None] * len(commands)
        admitted: list[tuple[int, Command]] = []
        for index, command in enumerate(commands):
            refusal = await self._ask_pre_hooks(command)
            if refusal is not None:
                outcomes[index] = refusal
            else:
                admitted.append((index, command))
        if admitted:
            results = await self._inner.execute([command for _, command in admitted])
            for (index, _), outcome in zip(admitted, results, strict=True):
                outcomes[index] = outcome
        final = [outcome for outcome in outcomes if outcome is not None]
        await self._schedule_post_hooks(commands, final)
        return final

    async def _ask_pre_hooks(self, command: Command) -> Outcome | None:
        if not isinstance(command, PostTransaction):
            return None
        hooks = await self._hooks.active(HookType.PRE_TRANSACTION)
        if not hooks:
            return None
        try:
            await self._hooks.run_pre(
                hooks, command.transaction_id, pending_transaction_json(command)
            )
        except AppError as exc:
            return Outcome(exc.status, error=exc)
        return None

    async def _schedule_post_hooks(
        self, commands: Sequence[Command], outcomes: Sequence[Outcome]
    ) -> None:
        if not any(isinstance(command, PostTransaction) for command in commands):
            return
        hooks = await self._hooks.active(HookType.POST_TRANSACTION)
        if not hooks:
            return
        for command, outcome in zip(commands, outcomes, strict=True):
            if not isinstance(command, PostTransaction) or outcome.error is not None:
                continue
            if outcome.record is not None:
                record = outcome.record
                self._hooks.schedule_post(hooks, record.transaction_id, transaction_json(record))
            elif isinstance(outcome.body, dict) and isinstance(
                outcome.body.get("transaction_id"), str
            ):
                # A remote Blnk's answer is the stored transaction in the same shape.
                self._hooks.schedule_post(hooks, outcome.body["transaction_id"], outcome.body)
