"""The OpenAPI document: every route with its security scheme and its problem responses.

Routes declare the problems their handlers raise with `problem_responses(ErrorClass, ...)`;
`document_edge` then adds what the edge itself can answer on each operation, from the same
`RouteTable` and policy the edge uses, so the document cannot drift from the behaviour:

- `security`: the bearer JWT scheme (`bearerAuth`) on protected routes, `[]` on public ones,
  when the edge checks tokens (an app without an authentication slot documents none);
- 400 (a NUL in the URL; a body that cannot be read), 401 (with the Bearer challenge, and the
  RFC 9470 step-up where it applies), 403, 413 on methods with a body, 429 with the rate-limit
  headers and an `x-rate-limit` description of the rule where a rule applies, 500 and 503
  everywhere;
- FastAPI's default 422 schema is replaced by ours: validation errors are problem documents too;
- on the Blnk-compatible ledger every problem response is Blnk's error body instead.

A route's own declaration of a status wins over the edge's generic one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from gateway.policy import GatewayPolicy, RateLimitRule
from gateway.problems import PROBLEM_CONTENT_TYPE, ErrorStyle
from gateway.routes import RouteInfo, RouteTable
from kit.errors import AppError

PROBLEM_REF: Final = "#/components/schemas/Problem"
BLNK_ERROR_REF: Final = "#/components/schemas/BlnkError"
BEARER_SCHEME: Final = "bearerAuth"
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_FASTAPI_VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, with our stable `code` and the request id.",
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "code": {"type": "string", "examples": ["GEN_NOT_FOUND"]},
        "request_id": {"type": ["string", "null"]},
        "details": {"type": "object", "additionalProperties": True},
    },
    "additionalProperties": True,
}

BLNK_ERROR_SCHEMA: Final[dict[str, Any]] = {
    "title": "BlnkError",
    "description": "Blnk's error body.",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "error_detail": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
        },
    },
}

BEARER_SECURITY_SCHEME: Final[dict[str, Any]] = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "An RS256 access token from /api/v1/auth (keys at /.well-known/jwks.json).",
}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}}


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for the problems a route's handler can raise.

    Errors sharing a status are listed together by code, e.g.
    `responses=problem_responses(BalanceNotFoundError, InsufficientFundsError)`.
    """
    by_status: dict[int, list[type[AppError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    return {
        status: {
            "description": " ".join(
                dict.fromkeys(f"{e.code}: {e.default_message}" for e in classes)
            ),
            "content": _problem_content(),
        }
        for status, classes in sorted(by_status.items())
    }


def _response(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _problem_content()}
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


def _edge_responses(
    method: str, info: RouteInfo, policy: GatewayPolicy, *, authenticates: bool
) -> dict[str, Any]:
    step_up = policy.auth.step_up
    responses: dict[str, dict[str, Any]] = {}
    if authenticates and not info.is_public:
        text = "AUTH_TOKEN_MISSING, AUTH_INVALID_TOKEN: no valid bearer access token."
        if info.is_step_up:
            text += (
                f" AUTH_STEP_UP_REQUIRED: a second factor within {step_up.max_age_s} s is "
                "needed (RFC 9470 `insufficient_user_authentication`)."
            )
        if info.is_admin and policy.admin.second_factor:
            text += (
                " AUTH_STEP_UP_REQUIRED: the admin surface needs a sign-in with a second factor"
                " (RFC 9470 `insufficient_user_authentication`)."
            )
        responses["401"] = _response(text, **{"WWW-Authenticate": "The Bearer challenge."})
    forbidden = "GW_BOT_DENIED: the user agent is on the deny list."
    if info.is_admin:
        forbidden += (
            " GW_ADDRESS_NOT_ALLOWED: the client address is outside the admin allow-list."
            " AUTH_ADMIN_REQUIRED: the token lacks the admin role."
        )
    responses["403"] = _response(forbidden)
    malformed = "GW_NUL_IN_URL: the path or query string contains %00."
    if method in _BODY_METHODS:
        malformed += (
            " GEN_BAD_REQUEST, GEN_MALFORMED_REQUEST: the body could not be read or parsed."
        )
    responses["400"] = _response(malformed)
    if method in _BODY_METHODS:
        responses["413"] = _response(
            f"GEN_PAYLOAD_TOO_LARGE: the body exceeds {info.body_bytes_max} bytes."
        )
    if info.rate_rule is not None:
        responses["429"] = _response(
            f"GEN_RATE_LIMITED: the `{info.rate_rule.name}` rate limit is exhausted.",
            **{
                "Retry-After": "Seconds until the request would be admitted.",
                "RateLimit-Policy": "The windows of the rule (RateLimit draft).",
                "RateLimit": "What remains in each window (RateLimit draft).",
            },
        )
    responses["500"] = _response("GEN_INTERNAL: an internal error; the detail is in our logs.")
    responses["503"] = _response(
        "A dependency is unavailable (GEN_*_UNAVAILABLE).",
        **{"Retry-After": "Seconds to wait before retrying."},
    )
    return responses


def _rate_limit_extension(rule: RateLimitRule) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "key": rule.key.value,
        "windows": [{"name": w.name, "seconds": w.seconds, "limit": w.limit} for w in rule.windows],
        "tier_multipliers": rule.tier_multipliers.model_dump(),
    }


def _operations(schema: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                yield operation


def document_edge(
    schema: dict[str, Any],
    *,
    table: RouteTable,
    policy: GatewayPolicy,
    style: ErrorStyle,
    authenticates: bool = True,
) -> dict[str, Any]:
    """Add security and edge problem responses to FastAPI's `schema` (in place; idempotent).

    `authenticates`: the edge checks bearer tokens (its authentication slot is filled). Without
    it no operation is documented as needing one: the ledger, which has no slot, takes Blnk's
    `X-Blnk-Key` (documented by its own routers in secure mode) and no bearer token.
    """
    components = schema.setdefault("components", {})
    if authenticates:
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = BEARER_SECURITY_SCHEME
    _document_operations(schema, table=table, policy=policy, authenticates=authenticates)
    for operation in _operations(schema):
        validation = operation["responses"].get("422")
        if validation is not None:
            validation["description"] = "GEN_VALIDATION: the request did not pass validation."
            validation["content"] = _problem_content()
    schemas = components.setdefault("schemas", {})
    text = orjson.dumps(schema).decode()
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            schemas.pop(name, None)
    if style is ErrorStyle.BLNK:
        _to_blnk(schema)
        schemas["BlnkError"] = BLNK_ERROR_SCHEMA
    else:
        schemas["Problem"] = PROBLEM_SCHEMA
    return schema


def _document_operations(
    schema: dict[str, Any], *, table: RouteTable, policy: GatewayPolicy, authenticates: bool
) -> None:
    paths = schema.get("paths", {})
    for entry in table.entries:
        path_item = paths.get(entry.template)
        if not entry.is_in_schema or not path_item:
            continue
        for method in sorted(entry.methods or ()):
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            info = table.describe(
                method, entry.template, entry, template=entry.template, is_matched=True
            )
            if authenticates:
                operation["security"] = [] if info.is_public else [{BEARER_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            edge = _edge_responses(method, info, policy, authenticates=authenticates)
            for status, response in edge.items():
                responses.setdefault(status, response)
            if authenticates and info.is_step_up:
                step_up = policy.auth.step_up
                operation["x-step-up"] = {
                    "acr_values": list(step_up.acr_values),
                    "max_age_s": step_up.max_age_s,
                }
            if info.rate_rule is not None:
                operation["x-rate-limit"] = _rate_limit_extension(info.rate_rule)


def _to_blnk(schema: dict[str, Any]) -> None:
    for operation in _operations(schema):
        for response in operation["responses"].values():
            content = response.get("content", {})
            if PROBLEM_CONTENT_TYPE in content:
                del content[PROBLEM_CONTENT_TYPE]
                content["application/json"] = {"schema": {"$ref": BLNK_ERROR_REF}}
