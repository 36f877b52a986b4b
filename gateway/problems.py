"""One error renderer for every route: RFC 9457 problem+json, or Blnk's error body on /ledger.

Both shapes come from the same `AppError`. Anything that is not an `AppError` is a bug: it is
logged with its stack and answered as a generic 500, so no stack trace, SQL or driver text ever
reaches a client. `DependencyError`s carry `Retry-After`, a 401 always carries a Bearer
challenge (RFC 9110 requires one), and the edge answers through `send_error`, so a
refusal before the router (413, 403, 401, 429) has exactly the shape of one raised by a handler.

An error class may refine its problem document with two optional attributes: `problem_type` (a
registered type URI instead of ours, such as the RateLimit draft's quota-exceeded) and
`problem_members` (extension members at the top level, such as `violated-policies`).

On `/ledger` an error's `body_variant` may name one of Blnk's older bodies (`BlnkBody`: the
message or the filter problems under `"errors"`, or the hook routes' top-level
`code`/`message`/`details`); each keeps `error_detail`, which both Blnk SDKs read first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kit.errors import (
    AppError,
    DependencyError,
    DomainError,
    ForbiddenError,
    InvariantError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
)
from kit.json_exact import dumps
from kit.telemetry import REQUEST_ID
from ledger.errors import BlnkBody

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://docs.dwaybank.dev/problems/"
VALIDATION_ERRORS_MAX: Final = 20  # a client gets the first 20 field errors, not thousands
BEARER_CHALLENGE: Final = "Bearer"  # RFC 6750 §3: the challenge when no token was examined


class ErrorStyle(StrEnum):
    """Which wire shape errors take on an ingress."""

    PROBLEM = "problem"
    BLNK = "blnk"


class MethodNotAllowedError(DomainError):
    """The path exists but not for this method."""

    code = "GEN_METHOD_NOT_ALLOWED"
    status = 405
    title = "Method not allowed"
    default_message = "The method is not allowed on this resource."


class MalformedRequestError(DomainError):
    """The body is not valid JSON or does not match the route's schema."""

    code = "GEN_MALFORMED_REQUEST"
    status = 400
    title = "Malformed request"
    default_message = "The request body could not be parsed."


_HTTP_STATUS_ERRORS: Final[dict[int, type[AppError]]] = {
    400: DomainError,  # Starlette's own 400s (a form that does not parse), not an internal error
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
}


# What a path segment may hold as it is (RFC 3986 `pchar` and `/`); every other character of a
# decoded request path is percent-encoded again, so `instance` stays a URI reference.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"


def problem_body(error: AppError, *, instance: str) -> dict[str, Any]:
    """The RFC 9457 document for `error`; `instance` is the request's (decoded) path."""
    problem_type = getattr(error, "problem_type", None)
    body: dict[str, Any] = {
        "type": problem_type or PROBLEM_TYPE_BASE + error.code.lower().replace("_", "-"),
        "title": error.title,
        "status": error.status,
        "detail": error.public_message,
        "instance": quote(instance, safe=_PATH_SAFE),
        "code": error.code,
        "request_id": REQUEST_ID.get(),
    }
    if error.public_details:
        body["details"] = error.public_details
    members = getattr(error, "problem_members", None)
    if members:
        body.update({k: v for k, v in members.items() if k not in body})
    return body


# Blnk's codes from before its catalog, which its hook routes still answer at the top level.
_HOOK_LEGACY_CODES: Final[dict[str, str]] = {
    BlnkBody.HOOK: "INVALID_INPUT",
    BlnkBody.HOOK_LOOKUP: "NOT_FOUND",
}


def blnk_body(error: AppError) -> dict[str, Any]:
    """Blnk's error body: `error` plus `error_detail{code,message,details}`, or the older
    variant that the error's `body_variant` names (`api/errors.go`: `writeError` with a legacy
    key or value, `respondBareAPIError`)."""
    message, details = error.public_message, error.public_details
    detail: dict[str, Any] = {"code": error.code, "message": message}
    variant = error.body_variant
    if variant in _HOOK_LEGACY_CODES:
        # Blnk passes the handler's Go error as details, so both copies are always present.
        detail["details"] = details
        return {
            "code": _HOOK_LEGACY_CODES[str(variant)],
            "message": message,
            "details": details,
            "error_detail": detail,
        }
    if variant == BlnkBody.PARSE_ERRORS:
        problems = details.get("errors", [])
        detail["details"] = problems
        return {"errors": problems, "error_detail": detail}
    if details:
        detail["details"] = details
    return {"errors" if variant == BlnkBody.ERRORS else "error": message, "error_detail": detail}


def render_error(
    error: AppError,
    *,
    style: ErrorStyle,
    instance: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The HTTP response for `error` in the given style, with any extra `headers`."""
    headers = dict(headers or {})
    challenge = getattr(error, "challenge", None)
    if isinstance(challenge, str) and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = challenge
    if error.status == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = BEARER_CHALLENGE
    if isinstance(error, DependencyError):
        headers["Retry-After"] = str(error.retry_after_s)
    retry_after = error.details.get("retry_after_s")
    if isinstance(error, RateLimitedError) and isinstance(retry_after, int):
        headers["Retry-After"] = str(max(retry_after, 1))
    if style is ErrorStyle.BLNK:
        payload, media_type = blnk_body(error), "application/json"
    else:
        payload, media_type = problem_body(error, instance=instance), PROBLEM_CONTENT_TYPE
    return Response(
        dumps(payload),  # exact: an error's details may name an amount past 64 bits
        status_code=error.status,
        media_type=media_type,
        headers=headers,
    )


async def send_error(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: AppError,
    *,
    style: ErrorStyle,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer the request with `error` from inside the edge (an ASGI layer)."""
    response = render_error(error, style=style, instance=scope["path"], headers=headers)
    await response(scope, receive, send)


def _validation_error(exc: RequestValidationError) -> ValidationError:
    fields = [
        {"loc": [str(part) for part in item.get("loc", ())], "message": str(item.get("msg", ""))}
        for item in exc.errors()[:VALIDATION_ERRORS_MAX]
    ]
    return ValidationError("the request did not pass validation", errors=fields)


def install_error_handlers(app: FastAPI, *, style: ErrorStyle) -> None:
    """Route every exception on `app` through `render_error`."""

    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        if isinstance(exc, DomainError):
            logger.info("request refused", extra={"code": exc.code, "status": exc.status})
        else:
            logger.error(
                "request failed", extra={"code": exc.code, "detail": exc.message}, exc_info=exc
            )
        return render_error(exc, style=style, instance=request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_error(_validation_error(exc), style=style, instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # The edge may raise an HTTPException carrying the precise error (a body
        # that outgrew its limit while a handler read it), since FastAPI re-raises those as is.
        carried = getattr(exc, "app_error", None)
        error_class = _HTTP_STATUS_ERRORS.get(exc.status_code)
        error: AppError
        if isinstance(carried, AppError):
            error = carried
        else:
            error = error_class() if error_class else InvariantError("unmapped HTTP error")
        return render_error(error, style=style, instance=request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled exception", exc_info=exc)
        return render_error(
            InvariantError("unhandled exception"), style=style, instance=request.url.path
        )

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
