"""Transactions: create (queued, immediate, inflight, scheduled, split, dry run), bulk, lookups,
lists, inflight commit and void (single and bulk), refunds, lineage, recovery, metadata."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from ledger import repository, service
from ledger.api_port import stamped_bulk_request
from ledger.endpoints.common import (
    LedgerDeps,
    error_responses,
    execute_one,
    json_body,
    json_response,
    page,
    read_json,
    read_optional_json,
)
from ledger.endpoints.ledgers import PAGING_PARAMS, run_filter
from ledger.errors import (
    AlreadyCommittedError,
    AlreadyRefundedError,
    AlreadyVoidedError,
    BulkLimitExceededError,
    CommitAmountExceededError,
    DuplicateReferenceError,
    IdempotencyConflictError,
    InsufficientFundsError,
    LedgerUnavailableError,
    LedgerValidationError,
    MalformedRequestError,
    MetadataEntityNotFoundError,
    MetadataInvalidEntityError,
    TransactionNotFoundError,
    TransactionValidationError,
)
from ledger.filters import COLLECTIONS, FilterRequest, from_query_params
from ledger.models import ASYNC_BULK_LEASE_S, CommitInflight, Outcome, VoidInflight
from ledger.preview import preview_bulk, preview_inflight, preview_transaction
from ledger.schemas import (
    BULK_INFLIGHT_MAX,
    BulkCommitIn,
    BulkIn,
    BulkVoidIn,
    InflightUpdateIn,
    RefundIn,
    TransactionIn,
    bulk_command,
    inflight_command,
    refund_command,
    transaction_command,
    validate_body,
)
from ledger.wire import transaction_json

IDEMPOTENCY_HEADER: Final = "idempotency-key"
ASYNC_BULKS_MAX: Final = 64  # background bulk jobs one replica runs at once
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
DURATION_MAX_NS: Final = 10 * 365 * 24 * 3600 * 10**9  # a threshold beyond ten years is a typo
_ITEM_CODES: Final = {
    "TXN_NOT_FOUND": "NOT_FOUND",
    "TXN_ALREADY_VOIDED": "ALREADY_VOIDED",
    "TXN_ALREADY_COMMITTED": "ALREADY_COMMITTED",
    "TXN_NOT_INFLIGHT": "NOT_INFLIGHT",
    "TXN_INVALID_AMOUNT": "INVALID_AMOUNT",
    "TXN_COMMIT_AMOUNT_EXCEEDED": "INVALID_AMOUNT",
}


class MetadataIn(BaseModel):
    """POST /{entity_id}/metadata."""

    model_config = ConfigDict(extra="ignore")

    meta_data: dict[str, Any] | None = None


def go_duration(text: str) -> tuple[int, str]:
    """Nanoseconds and Go's rendering of a duration such as "2m" or "1h30m" (Blnk's threshold)."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise LedgerValidationError("threshold must be a Go duration such as 2m, 90s or 1h30m")
    total = sum(int(Decimal(number) * _DURATION_UNITS_NS[unit]) for number, unit in parts)
    if total > DURATION_MAX_NS:
        raise LedgerValidationError("threshold is too long")
    return total, _render_go_duration(total)


def _trim(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _render_go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return _trim(Decimal(ns) / size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim(Decimal(rest) / 10**9) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _item_result(transaction_id: str, outcome: Outcome) -> dict[str, Any]:
    if outcome.error is None:
        return {"transaction_id": transaction_id, "status": "succeeded"}
    error = outcome.error
    return {
        "transaction_id": transaction_id,
        "status": "failed",
        "code": _ITEM_CODES.get(error.code, error.code),
        "message": error.public_message,
    }


def transactions_router(deps: LedgerDeps) -> APIRouter:  # noqa: PLR0915 - one closure per route
    """Transaction routes."""
    router = APIRouter(tags=["transactions"])
    background: set[asyncio.Task[Any]] = set()
    errors = error_responses(
        TransactionValidationError,
        InsufficientFundsError,
        MalformedRequestError,
        CommitAmountExceededError,
        TransactionNotFoundError,
        DuplicateReferenceError,
        AlreadyCommittedError,
        AlreadyVoidedError,
        AlreadyRefundedError,
        IdempotencyConflictError,
        LedgerUnavailableError,
    )

    @router.post(
        "/transactions",
        status_code=201,
        responses=errors,
        summary="Record a transaction",
        openapi_extra=json_body(TransactionIn),
    )
    async def create(request: Request) -> Response:
        raw = await read_json(request)
        body = validate_body(TransactionIn, raw)
        command = transaction_command(
            body,
            now=deps.clock.now(),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            raw=raw,
        )
        if body.dry_run:
            async with deps.db.connection() as conn:
                return json_response(await preview_transaction(conn, command, now=deps.clock.now()))
        return await execute_one(deps, command)

    @router.post(
        "/transactions/bulk",
        status_code=201,
        responses=errors,
        summary="Record many transactions",
        openapi_extra=json_body(BulkIn),
    )
    async def bulk(request: Request) -> Response:
        raw = await read_json(request)
        body = validate_body(BulkIn, raw)
        command = bulk_command(body, now=deps.clock.now())
        if body.dry_run:
            async with deps.db.connection() as conn:
                return json_response(await preview_bulk(conn, command, now=deps.clock.now()))
        if body.run_async:
            if len(background) >= ASYNC_BULKS_MAX:
                raise BulkLimitExceededError("too many bulk requests are running; retry later")
            if deps.durable_async_bulks:
                # Stored before the 202: if this replica stops first, the scheduler runs it.
                command = replace(command, is_durable=True)
                lease_until = deps.clock.now() + timedelta(seconds=ASYNC_BULK_LEASE_S)
                async with deps.db.transaction() as conn:
                    await repository.insert_async_bulk(
                        conn, command.batch_id, stamped_bulk_request(raw), lease_until=lease_until
                    )
            task = asyncio.create_task(deps.port.execute([command]))
            background.add(task)
            task.add_done_callback(background.discard)
            return json_response(
                {
                    "message": "Bulk transaction processing started",
                    "batch_id": command.batch_id,
                    "status": "processing",
                },
                202,
            )
        (outcome,) = await deps.port.execute([command])
        if outcome.error is not None:
            raise outcome.error
        return json_response(outcome.body, outcome.status_code)

    @router.post(
        "/transactions/filter",
        responses=errors,
        summary="Filter transactions",
        openapi_extra=json_body(FilterRequest),
    )
    async def filter_transactions(request: Request) -> Response:
        return await run_filter(
            deps, "transactions", validate_body(FilterRequest, await read_json(request))
        )

    @router.get("/transactions", responses=errors, summary="List transactions")
    async def listing(request: Request) -> Response:
        limit, offset = page(request, default_limit=20, lenient=True)
        query = from_query_params(
            COLLECTIONS["transactions"], request.query_params, skip=PAGING_PARAMS
        )
        async with deps.db.connection() as conn:
            return json_response(
                await service.list_collection(
                    conn, "transactions", query, limit=limit, offset=offset
                )
            )

    @router.get(
        "/transactions/reference/{reference}",
        responses=errors,
        summary="Get a transaction by reference",
    )
    async def by_reference(reference: str) -> Response:
        async with deps.db.connection() as conn:
            return json_response(
                transaction_json(await service.get_transaction_by_reference(conn, reference))
            )

    @router.get("/transactions/{transaction_id}", responses=errors, summary="Get a transaction")
    async def get(transaction_id: str) -> Response:
        async with deps.db.connection() as conn:
            return json_response(
                transaction_json(await service.get_transaction(conn, transaction_id))
            )

    @router.get(
        "/transactions/{transaction_id}/lineage", responses=errors, summary="Fund lineage (empty)"
    )
    async def lineage(transaction_id: str) -> Response:
        async with deps.db.connection() as conn:
            await service.get_transaction(conn, transaction_id)
        return json_response(
            {"transaction_id": transaction_id, "fund_allocation": [], "shadow_transactions": []}
        )

    @router.put(
        "/transactions/inflight/{transaction_id}",
        responses=errors,
        summary="Commit or void a hold",
        openapi_extra=json_body(InflightUpdateIn),
    )
    async def update_inflight(transaction_id: str, request: Request) -> Response:
        body = validate_body(InflightUpdateIn, await read_json(request))
        command = inflight_command(transaction_id, body, now=deps.clock.now())
        if body.dry_run:
            async with deps.db.connection() as conn:
                return json_response(await preview_inflight(conn, command, now=deps.clock.now()))
        return await execute_one(deps, command)

    async def settle_many(
        commands: list[CommitInflight | VoidInflight], ids: list[str]
    ) -> Response:
        outcomes = await deps.port.execute(commands)
        results = [_item_result(i, o) for i, o in zip(ids, outcomes, strict=True)]
        succeeded = sum(1 for r in results if r["status"] == "succeeded")
        return json_response(
            {"succeeded": succeeded, "failed": len(results) - succeeded, "results": results}
        )

    @router.post(
        "/transactions/inflight/bulk/commit",
        responses=errors,
        summary="Commit many holds",
        openapi_extra=json_body(BulkCommitIn),
    )
    async def bulk_commit(request: Request) -> Response:
        body = validate_body(BulkCommitIn, await read_json(request))
        if not 1 <= len(body.transactions) <= BULK_INFLIGHT_MAX:
            raise TransactionValidationError(f"send 1 to {BULK_INFLIGHT_MAX} transactions")
        now = deps.clock.now()
        commands: list[CommitInflight | VoidInflight] = []
        for item in body.transactions:
            update = InflightUpdateIn(
                status="commit",
                amount=item.amount,
                precise_amount=item.precise_amount,
                skip_queue=True,
            )
            commands.append(inflight_command(item.transaction_id, update, now=now))
        return await settle_many(commands, [item.transaction_id for item in body.transactions])

    @router.post(
        "/transactions/inflight/bulk/void",
        responses=errors,
        summary="Void many holds",
        openapi_extra=json_body(BulkVoidIn),
    )
    async def bulk_void(request: Request) -> Response:
        body = validate_body(BulkVoidIn, await read_json(request))
        if not 1 <= len(body.transaction_ids) <= BULK_INFLIGHT_MAX:
            raise TransactionValidationError(f"send 1 to {BULK_INFLIGHT_MAX} transaction ids")
        now = deps.clock.now()
        commands: list[CommitInflight | VoidInflight] = [
            inflight_command(i, InflightUpdateIn(status="void", skip_queue=True), now=now)
            for i in body.transaction_ids
        ]
        return await settle_many(commands, list(body.transaction_ids))

    @router.post(
        "/refund-transaction/{transaction_id}",
        status_code=201,
        responses=errors,
        summary="Refund",
        openapi_extra=json_body(RefundIn, required=False),
    )
    async def refund(transaction_id: str, request: Request) -> Response:
        body = validate_body(RefundIn, await read_optional_json(request))
        return await execute_one(deps, refund_command(transaction_id, body, now=deps.clock.now()))

    @router.post("/transactions/recover", summary="Re-run queued transactions that never ran")
    async def recover(request: Request) -> Response:
        _, rendered = go_duration(request.query_params.get("threshold") or "2m")
        # Queued requests run in the same database transaction that stores them, so none is
        # ever left waiting; this answers Blnk's contract truthfully with nothing to recover.
        return json_response({"recovered": 0, "threshold": rendered})

    return router


def metadata_router(deps: LedgerDeps) -> APIRouter:
    """POST /{entity_id}/metadata (mounted last: its path matches any first segment)."""
    router = APIRouter(tags=["metadata"])

    @router.post(
        "/{entity_id}/metadata",
        responses=error_responses(
            MetadataEntityNotFoundError,
            MetadataInvalidEntityError,
            LedgerValidationError,
            MalformedRequestError,
        ),
        summary="Merge keys into an entity's metadata",
        openapi_extra=json_body(MetadataIn),
    )
    async def merge(entity_id: str, request: Request) -> Response:
        body = validate_body(MetadataIn, await read_json(request))
        if body.meta_data is None:
            raise LedgerValidationError("meta_data is required")
        async with deps.db.transaction() as conn:
            merged = await service.merge_metadata(conn, entity_id, body.meta_data)
        return json_response({"meta_data": merged})

    return router
