"""What every ledger router shares: its dependencies, body reading, outcome rendering, paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, SecretStr

from kit.clock import Clock
from kit.crypto import EnvelopeCipher
from kit.db import Database
from kit.errors import AppError
from kit.json_exact import dumps
from ledger.errors import LedgerValidationError
from ledger.models import Command, Outcome
from ledger.port import LedgerPort
from ledger.schemas import load_json
from ledger.wire import outcome_body

PAGE_LIMIT_MAX: Final = 100
OFFSET_MAX: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class LedgerDeps:
    """What the ledger's routers need, injected by the composition root."""

    db: Database
    port: LedgerPort
    clock: Clock
    # Field tokenization of identities (AES-GCM envelopes); None disables it (403, as Blnk).
    cipher: EnvelopeCipher | None = None
    # Blnk's secure mode: with a master key set, every route but / and /health needs X-Blnk-Key.
    master_key: SecretStr | None = None
    # Outbound HTTP (hooks, webhooks, rate providers); bounded timeouts set by the wiring.
    http: httpx.AsyncClient | None = None
    # run_async bulks are stored before the 202 and recovered by the scheduler (the embedded
    # engine); off for a remote Blnk, which runs them itself.
    durable_async_bulks: bool = True


def json_response(body: Any, status_code: int = 200) -> Response:
    """A JSON response; big integers stay exact (orjson would refuse ints above 64 bits)."""
    return Response(dumps(body), status_code=status_code, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The parsed body (Blnk's "Invalid input" when it is not JSON)."""
    return load_json(await request.body())


async def read_optional_json(request: Request) -> Any:
    """The parsed body, or an empty object when there is none."""
    raw = await request.body()
    return load_json(raw) if raw.strip() else {}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """A route's `openapi_extra` documenting its JSON body by the model that validates it.

    The routes read the raw body (so that a bad one gets Blnk's own error), which FastAPI cannot
    see; without this the document listed no request body at all. The model's schema is
    inlined: its `$defs` would otherwise point at the document's root.
    """
    return json_schema_body(_inlined(model.model_json_schema(mode="validation")), required=required)


def json_schema_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """A route's `openapi_extra` documenting its JSON body by a JSON schema."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.pop("$defs", {})

    def resolve(node: Any, within: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, within) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith(_LOCAL_DEFINITION):
            name = reference.removeprefix(_LOCAL_DEFINITION)
            if name in within:  # a recursive model: its inner levels take any JSON
                return {"description": f"a nested {name}"}
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return resolve({**definitions[name], **rest}, (*within, name))
        return {key: resolve(value, within) for key, value in node.items()}

    resolved: dict[str, Any] = resolve(schema, ())
    return resolved


_LOCAL_DEFINITION: Final = "#/$defs/"


def render_outcome(outcome: Outcome) -> Response:
    """The response for an engine outcome; an error outcome raises for the renderer."""
    if outcome.error is not None:
        raise outcome.error
    return json_response(outcome_body(outcome), outcome.status_code)


async def execute_one(deps: LedgerDeps, command: Command) -> Response:
    """Run one command through the ledger port and render its outcome."""
    (outcome,) = await deps.port.execute([command])
    return render_outcome(outcome)


def page(request: Request, *, default_limit: int, lenient: bool) -> tuple[int, int]:
    """`limit` and `offset`; transactions fall back to defaults on bad values (as Blnk does)."""
    raw_limit = request.query_params.get("limit")
    raw_offset = request.query_params.get("offset")
    try:
        limit = default_limit if raw_limit is None else int(raw_limit)
        offset = 0 if raw_offset is None else int(raw_offset)
    except ValueError:
        limit, offset = -1, -1
    if 1 <= limit <= PAGE_LIMIT_MAX and 0 <= offset <= OFFSET_MAX:
        return limit, offset
    if lenient:
        return default_limit, 0
    raise LedgerValidationError(f"limit must be 1-{PAGE_LIMIT_MAX} and offset 0-{OFFSET_MAX}")


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: each status with the Blnk codes it can carry."""
    by_status: dict[int | str, list[str]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error.code)
    return {
        status: {"description": ", ".join(sorted(set(codes))), "model": BlnkErrorBody}
        for status, codes in by_status.items()
    }


class BlnkErrorDetail(BaseModel):
    """Blnk's `error_detail`."""

    code: str
    message: str
    details: Any = None


class BlnkErrorBody(BaseModel):
    """Blnk's error body: `error` (the message) and `error_detail`. Where Blnk kept older bodies
    (`ledger.errors.BlnkBody`), `errors` replaces `error` (request validation of ledgers,
    balances, monitors and transactions: the message; query filters that do not parse: a list
    of `{"Param", "Message"}`), and the hook routes answer `code`, `message` and `details` at
    the top level instead. `error_detail` is in every one."""

    error: str | None = None
    errors: str | list[dict[str, str]] | None = None
    code: str | None = None
    message: str | None = None
    details: Any = None
    error_detail: BlnkErrorDetail
