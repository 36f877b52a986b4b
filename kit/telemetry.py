"""Structured JSON logging with request ids.

One JSON object per line: time, level, logger, message, the current request id, and any
`extra=` fields (not the private attributes a framework adds to every record). Fields whose
names say they hold a secret (password, token, code, secret, authorization, cookie, key) are
replaced by `[REDACTED]` before anything is written, so a careless `extra={"password": ...}`
cannot leak. The request id lives in a context variable that
the edge sets per request; every line logged while serving it carries it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import re
import sys
import time
import weakref
from contextvars import Context, ContextVar, Token
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


# Each millisecond's tail of a timestamp, and the text of the second last rendered: a log line's
# time costs an index and a comparison (lines come in bursts within one second).
_MILLIS_TEXT: Final = tuple(f".{millis:03d}+00:00" for millis in range(1000))
_last_second: list[tuple[int, str]] = [(-1, "")]


def timestamp_text(created: float) -> str:
    """`created` (seconds since the epoch) as ISO 8601 UTC to the millisecond, as
    `datetime.isoformat(timespec="milliseconds")` writes it; the date and time of day are
    rendered once per second."""
    second = int(created)
    millis = int((created - second) * 1000)
    last_second, text = _last_second[0]
    if second != last_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = (second, text)
    return text + _MILLIS_TEXT[millis if millis < 1000 else 999]


def json_line(
    created: float,
    level: str,
    logger: str,
    message: str,
    fields: dict[str, Any],
    *,
    request_id: str | None,
    unredacted: dict[str, Any] | None = None,
    is_redacted: bool = False,
) -> bytes:
    """One log line (UTF-8, no terminator) as `JsonFormatter` writes it: time, level, logger,
    message, the request id (when there is one), the fields (redacted unless the caller has:
    `is_redacted`), then `unredacted` ones (a traceback, kept whole). Built as one dict display
    (this runs for every audit line)."""
    clean = fields if is_redacted else redact(fields)
    ts = timestamp_text(created)
    payload: dict[str, Any] = (
        {"ts": ts, "level": level, "logger": logger, "message": message, **clean}
        if request_id is None
        else {
            "ts": ts,
            "level": level,
            "logger": logger,
            "message": message,
            "request_id": request_id,
            **clean,
        }
    )
    if unredacted:
        payload.update(unredacted)
    return orjson.dumps(payload, default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        extras = {
            k: v
            for k, v in vars(record).items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")  # a framework's, not a field
        }
        failure: dict[str, Any] | None = None
        if record.exc_info:
            failure = {
                "exc_type": record.exc_info[0].__name__ if record.exc_info[0] else None,
                "exc": self.formatException(record.exc_info),
            }
        return json_line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            extras,
            request_id=REQUEST_ID.get(),
            unredacted=failure,
        ).decode()


def plain_json_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler `logger`'s records end at when that is a plain `StreamHandler` with a
    `JsonFormatter` and nothing on the way filters or adds anything (the configuration
    `configure_logging` installs); else None. A caller holding a line in that format may then
    write it to the handler's stream itself, skipping the record machinery (several
    microseconds a line) without changing a byte of the output."""
    found: logging.StreamHandler[Any] | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


LINE_BATCH_MAX: Final = 256  # lines a `LineBatcher` holds before it writes them at once
LINE_BATCH_DELAY_S: Final = 0.05  # the longest a held line waits for its batch
_BATCHERS: weakref.WeakSet[LineBatcher] = weakref.WeakSet()


class LineBatcher:
    """INFO lines of one logger that come on every request (the audit line), written in batches:
    one write of up to `lines_max` lines at most `delay_s` after the first of them, instead of a
    write and a flush per line. Under Ray Serve a replica's stderr is a pipe that Ray drains
    into its log files, and a write per request cost the replica more CPU than everything else
    the edge does for a public route.

    The output is what `logger.info(message, extra=fields)` would have written at the moment
    the line was added (its time and request id): straight to the stream when
    `plain_json_handler` finds the plain JSON configuration, else as records through the logging
    machinery, so every handler and filter still sees each line.

    Lines wait on the running event loop's timer (one loop owns a batcher); outside a loop they
    are written at once. `flush_line_batches()` writes every batcher's waiting lines (at
    shutdown, and at exit); a process killed outright loses at most `delay_s` of lines.

    `is_redacted`: the caller vouches that no field name asks for masking and no value needs
    cutting (fixed names, bounded values), which saves the masking pass on the direct path."""

    __slots__ = (
        "__weakref__",
        "_delay_s",
        "_lines_max",
        "_logger",
        "_message",
        "_pending",
        "_timer",
        "_timer_loop",
        "is_redacted",
    )

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        is_redacted: bool = False,
        lines_max: int = LINE_BATCH_MAX,
        delay_s: float = LINE_BATCH_DELAY_S,
    ) -> None:
        if lines_max < 1 or delay_s < 0:
            raise ValueError("a line batch holds at least one line and waits no negative time")
        self._logger = logger
        self._message = message
        self.is_redacted = is_redacted
        self._lines_max = lines_max
        self._delay_s = delay_s
        self._pending: list[tuple[float, str | None, dict[str, Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        _BATCHERS.add(self)

    @property
    def pending(self) -> int:
        """Lines waiting for their batch."""
        return len(self._pending)

    def add(self, fields: dict[str, Any]) -> None:
        """Queue one line; it is written with the current time and request id."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        pending = self._pending
        pending.append((time.time(), REQUEST_ID.get(), fields))
        if len(pending) >= self._lines_max:
            self.flush()
            return
        timer_loop = self._timer_loop
        if timer_loop is not None and timer_loop.is_running():
            # The batch's timer is armed on a running loop (the one adding, as one loop owns a
            # batcher): nothing to do. `get_running_loop` would make a system call (getpid).
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: write it now
            self.flush()
            return
        if self._timer is not None:
            if self._timer_loop is not loop:  # the loop holding the timer is gone: write now
                self.flush()
            return
        # An empty context: the timer must not keep the first request's context alive.
        self._timer = loop.call_later(self._delay_s, self.flush, context=Context())
        self._timer_loop = loop

    def flush(self) -> None:
        """Write every waiting line now."""
        timer, self._timer, self._timer_loop = self._timer, None, None
        if timer is not None:
            timer.cancel()
        pending, self._pending = self._pending, []
        if not pending:
            return
        logger, message = self._logger, self._message
        handler = plain_json_handler(logger)
        if handler is not None:
            name, terminator = logger.name, handler.terminator.encode()
            lines = [
                json_line(
                    created,
                    "INFO",
                    name,
                    message,
                    fields,
                    request_id=request_id,
                    is_redacted=self.is_redacted,
                )
                for created, request_id, fields in pending
            ]
            text = (terminator.join(lines) + terminator).decode()  # one decode per batch
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            except (OSError, ValueError):
                pass  # the record path below retries and reports it as logging does
            else:
                return
            finally:
                handler.release()
        for created, request_id, fields in pending:
            record = logger.makeRecord(
                logger.name, logging.INFO, __file__, 0, message, (), None, extra=fields
            )
            record.created, record.msecs = created, (created - int(created)) * 1000
            token = REQUEST_ID.set(request_id)
            try:
                logger.handle(record)
            finally:
                REQUEST_ID.reset(token)


def flush_line_batches() -> None:
    """Write the waiting lines of every `LineBatcher` (shutdown, exit)."""
    for batcher in list(_BATCHERS):
        batcher.flush()


atexit.register(flush_line_batches)


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
