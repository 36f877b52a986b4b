"""Reconciliation: CSV upload, matching rules, start (from an upload or inline), get."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from kit.errors import PayloadTooLargeError
from ledger import reconciliation
from ledger.endpoints.common import LedgerDeps, error_responses, json_body, json_response, read_json
from ledger.errors import LedgerValidationError, MalformedRequestError
from ledger.reconciliation import (
    UPLOAD_BYTES_MAX,
    MatchingRuleIn,
    StartIn,
    StartInstantIn,
    instant_records,
    parse_csv,
)
from ledger.reconciliation_runner import ReconciliationRunner
from ledger.schemas import validate_body
from ledger.surface_errors import (
    ExternalTransactionsRequiredError,
    MatchingRuleInvalidError,
    MatchingRuleNotFoundError,
    MatchingRulesRequiredError,
    ReconciliationBackpressureError,
    ReconciliationNotFoundError,
    UploadFailedError,
    UploadHostNotAllowedError,
)

FORM_FIELDS_MAX: Final = 8  # file, source, url, and a little slack
FORM_FIELD_BYTES_MAX: Final = 64 * 1024  # the text parts (source, url); the file is read apart


async def _read_upload(request: Request) -> tuple[bytes, str, str]:
    """(file bytes, file name, source) of a multipart upload; a URL upload is refused."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        body = await read_json(request)
        if isinstance(body, dict) and body.get("url"):
            raise UploadHostNotAllowedError()
        raise UploadFailedError("File upload failed")
    if not content_type.startswith("multipart/form-data"):
        raise UploadFailedError("File upload failed: send multipart/form-data with a file part")
    try:
        form = await request.form(
            max_files=1, max_fields=FORM_FIELDS_MAX, max_part_size=FORM_FIELD_BYTES_MAX
        )
    except StarletteHTTPException as exc:
        if exc.status_code != HTTPStatus.BAD_REQUEST:  # the edge's 413 for a streamed body
            raise
        # Starlette's 400 for a form that does not parse (no boundary, a part over a bound).
        raise UploadFailedError(f"File upload failed: {exc.detail}") from exc
    try:
        upload, source, url = form.get("file"), form.get("source"), form.get("url")
        if not isinstance(upload, UploadFile):
            if url:
                raise UploadHostNotAllowedError()
            raise UploadFailedError("File upload failed: no file part")
        data = await upload.read(UPLOAD_BYTES_MAX + 1)
        file_name = upload.filename or ""
    finally:
        await form.close()
    if len(data) > UPLOAD_BYTES_MAX:
        raise PayloadTooLargeError(
            "upload exceeds the maximum allowed size", bytes_max=UPLOAD_BYTES_MAX
        )
    return data, file_name, source if isinstance(source, str) else ""


def reconciliation_router(deps: LedgerDeps, runner: ReconciliationRunner) -> APIRouter:
    """Reconciliation routes."""
    router = APIRouter(tags=["reconciliation"])
    errors = error_responses(
        UploadFailedError,
        UploadHostNotAllowedError,
        MatchingRuleInvalidError,
        MatchingRulesRequiredError,
        ExternalTransactionsRequiredError,
        LedgerValidationError,
        MalformedRequestError,
        ReconciliationNotFoundError,
        MatchingRuleNotFoundError,
        PayloadTooLargeError,
        ReconciliationBackpressureError,
    )

    @router.post("/reconciliation/upload", responses=errors, summary="Upload a statement (CSV)")
    async def upload(request: Request) -> Response:
        data, file_name, source = await _read_upload(request)
        records = await asyncio.to_thread(parse_csv, data, source=source)
        async with deps.db.transaction() as conn:
            upload_id = await reconciliation.store_upload(
                conn, records, source=source, file_name=file_name, now=deps.clock.now()
            )
        return json_response(
            {"upload_id": upload_id, "record_count": len(records), "source": source}
        )

    @router.post(
        "/reconciliation/matching-rules",
        status_code=201,
        responses=errors,
        summary="Create a matching rule",
        openapi_extra=json_body(MatchingRuleIn),
    )
    async def create_rule(request: Request) -> Response:
        body = validate_body(MatchingRuleIn, await read_json(request))
        async with deps.db.transaction() as conn:
            created = await reconciliation.create_rule(conn, body, now=deps.clock.now())
        return json_response(created, 201)

    @router.put(
        "/reconciliation/matching-rules/{rule_id}",
        responses=errors,
        summary="Replace a matching rule",
        openapi_extra=json_body(MatchingRuleIn),
    )
    async def update_rule(rule_id: str, request: Request) -> Response:
        body = validate_body(MatchingRuleIn, await read_json(request))
        async with deps.db.transaction() as conn:
            updated = await reconciliation.update_rule(conn, rule_id, body, now=deps.clock.now())
        return json_response(updated)

    @router.delete(
        "/reconciliation/matching-rules/{rule_id}",
        responses=errors,
        summary="Delete a matching rule",
    )
    async def delete_rule(rule_id: str) -> Response:
        async with deps.db.transaction() as conn:
            await reconciliation.delete_rule(conn, rule_id)
        return json_response({"message": "Matching rule deleted successfully"})

    @router.post(
        "/reconciliation/start",
        responses=errors,
        summary="Reconcile an upload (in the background)",
        openapi_extra=json_body(StartIn),
    )
    async def start(request: Request) -> Response:
        body = validate_body(StartIn, await read_json(request))
        runner.check_capacity()
        async with deps.db.transaction() as conn:
            reconciliation_id = await reconciliation.start_run(
                conn, body, upload_id=body.upload_id, now=deps.clock.now()
            )
        runner.launch(reconciliation_id)
        return json_response({"reconciliation_id": reconciliation_id})

    @router.post(
        "/reconciliation/start-instant",
        responses=errors,
        summary="Reconcile records sent inline (in the background)",
        openapi_extra=json_body(StartInstantIn),
    )
    async def start_instant(request: Request) -> Response:
        body = validate_body(StartInstantIn, await read_json(request))
        records = instant_records(body.external_transactions)
        runner.check_capacity()
        now = deps.clock.now()
        async with deps.db.transaction() as conn:
            upload_id = await reconciliation.store_upload(
                conn, records, source="instant", file_name="", now=now, instant=True
            )
            reconciliation_id = await reconciliation.start_run(
                conn, body, upload_id=upload_id, now=now
            )
        runner.launch(reconciliation_id)
        return json_response({"reconciliation_id": reconciliation_id})

    @router.get(
        "/reconciliation/{reconciliation_id}",
        responses=errors,
        summary="A reconciliation's progress",
    )
    async def get(reconciliation_id: str) -> Response:
        async with deps.db.connection() as conn:
            return json_response(await reconciliation.get_run(conn, reconciliation_id))

    return router
