"""Structured JSON logging with request ids.

One JSON object per line: time, level, logger, message, the current request id, and any
`extra=` fields. Fields whose names say they hold a secret (password, token, code, secret,
authorization, cookie, key) are replaced by `[REDACTED]` before anything is written, so a
careless `extra={"password": ...}` cannot leak. The request id lives in a context variable that
the edge sets per request; every line logged while serving it carries it.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Final

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
REDACTED: Final = "[REDACTED]"
_SECRET_FIELD = re.compile(
    r"(pass(word)?|token|secret|authorization|cookie|otp|mfa_code|code|api_?key|kek|dsn)",
    re.IGNORECASE,
)
_VALUE_LENGTH_MAX: Final = 2048  # a log field is a hint, not a payload
SECRET_NAME_CACHE_SIZE: Final = 4096  # distinct field names ever logged; far more than we use
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Set the request id for the current context; returns a token for `reset_request_id`."""
    return REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    """Restore the request id that was current before `bind_request_id`."""
    REQUEST_ID.reset(token)


@functools.lru_cache(maxsize=SECRET_NAME_CACHE_SIZE)
def is_secret_name(name: str) -> bool:
    """True when a field name says it holds a secret (cached: log lines repeat their names)."""
    return _SECRET_FIELD.search(name) is not None


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """Copy of `fields` with secret-looking names masked and long values cut."""
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if is_secret_name(key):
            clean[key] = REDACTED
        elif isinstance(value, dict):
            clean[key] = redact(value)
        elif isinstance(value, str) and len(value) > _VALUE_LENGTH_MAX:
            clean[key] = value[:_VALUE_LENGTH_MAX] + "..."
        else:
            clean[key] = value
    return clean


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            payload["request_id"] = request_id
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        payload.update(redact(extras))
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", *, is_json: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines or plain text."""
    # The process's real stderr: Ray Serve replaces `sys.stderr` in replicas with a stream that
    # walks the caller's stack on every write, which cost a fifth of a replica's CPU here.
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if is_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
