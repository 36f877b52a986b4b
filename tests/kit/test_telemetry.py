"""Structured logs: one JSON line per record, request id attached, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

import pytest

from kit.errors import InvariantError
from kit.metrics import counter, gauge, histogram, render_latest
from kit.telemetry import (
    REDACTED,
    JsonFormatter,
    bind_request_id,
    log_info_fast,
    redact,
    reset_request_id,
    timestamp_text,
)


def _format(message: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


class TestJsonLogs:
    def test_line_has_request_id(self) -> None:
        """A record logged while serving a request carries its id."""
        token = bind_request_id("req-abcdef12")
        try:
            line = _format("hello", user_id="u1")
        finally:
            reset_request_id(token)
        assert line["message"] == "hello"
        assert line["request_id"] == "req-abcdef12"
        assert line["user_id"] == "u1"
        assert line["level"] == "INFO"

    def test_private_attributes_are_not_fields(self) -> None:
        """Attributes a framework puts on every record (Ray's `_ray_timestamp_ns`) are not
        fields of the line."""
        line = _format("hello", _ray_timestamp_ns=1, user_id="u1")
        assert "_ray_timestamp_ns" not in line
        assert line["user_id"] == "u1"

    def test_secrets_are_masked(self) -> None:
        """Fields named like secrets never reach the log."""
        line = _format(
            "login", password="hunter2", refresh_token="rt", mfa_code="123456", email="a@b.c"
        )
        assert line["password"] == REDACTED
        assert line["refresh_token"] == REDACTED
        assert line["mfa_code"] == REDACTED
        assert line["email"] == "a@b.c"
        assert "hunter2" not in json.dumps(line)

    def test_nested_and_long_values(self) -> None:
        """Redaction reaches nested dicts and long values are cut."""
        clean = redact({"ctx": {"api_key": "k"}, "blob": "x" * 5000})
        assert clean["ctx"] == {"api_key": REDACTED}
        assert len(clean["blob"]) < 2100


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A fresh logger under its own root-like parent, configured as `configure_logging` does:
    one plain StreamHandler with the JSON formatter (into a buffer)."""
    parent = logging.getLogger(f"fast-{uuid.uuid4().hex}")
    parent.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    yield parent.getChild("audit"), stream
    parent.removeHandler(handler)


FAST_FIELDS: Final = {"service": "api", "status": 200, "latency_ms": 0.25, "api_key": "k-123"}


class TestFastInfoLines:
    def test_fast_line_is_the_formatters_line(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """Written straight to the stream, the line says what `logger.info` would have: same
        keys, values, request id and masking, one line."""
        logger, stream = json_logger
        token = bind_request_id("req-fast-0001")
        try:
            log_info_fast(logger, "request", dict(FAST_FIELDS))
            logger.info("request", extra=dict(FAST_FIELDS))
        finally:
            reset_request_id(token)
        fast, slow = (json.loads(line) for line in stream.getvalue().splitlines())
        assert fast.pop("ts")[:16] == slow.pop("ts")[:16]
        assert fast == slow
        assert fast["api_key"] == REDACTED
        assert (fast["request_id"], fast["logger"]) == ("req-fast-0001", logger.name)

    def test_other_configurations_get_the_record(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """With a filter or a second handler on the way the line goes through the logging
        machinery, so every handler sees it and the filter decides."""
        logger, stream = json_logger
        seen: list[logging.LogRecord] = []

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        extra = Collect()
        logger.addHandler(extra)
        log_info_fast(logger, "request", dict(FAST_FIELDS))
        assert len(seen) == 1
        assert seen[0].status == 200  # type: ignore[attr-defined]
        assert json.loads(stream.getvalue())["status"] == 200
        logger.removeHandler(extra)
        logger.addFilter(lambda record: False)
        log_info_fast(logger, "request", dict(FAST_FIELDS))
        assert len(stream.getvalue().splitlines()) == 1  # the filter dropped the second line

    def test_disabled_level_writes_nothing(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        logger, stream = json_logger
        logger.setLevel(logging.WARNING)
        log_info_fast(logger, "request", dict(FAST_FIELDS))
        assert stream.getvalue() == ""

    @pytest.mark.parametrize("created", [0.0, 1_700_000_000.0, 1_700_000_000.9994, 1_799_999_999.5])
    def test_timestamp_matches_isoformat(self, created: float) -> None:
        expected = datetime.fromtimestamp(int(created), UTC).isoformat(timespec="seconds")
        text = timestamp_text(created)
        assert text.startswith(expected.removesuffix("+00:00"))
        assert text.endswith("+00:00")
        assert int(text[20:23]) == int((created - int(created)) * 1000)


class TestMetrics:
    def test_get_or_create_returns_the_same_metric(self) -> None:
        """Registering a metric twice returns the first one instead of raising."""
        assert counter("t_same_total", "d", ["a"]) is counter("t_same_total", "d", ["a"])
        assert gauge("t_gauge", "d") is gauge("t_gauge", "d")
        assert histogram("t_hist_seconds", "d") is histogram("t_hist_seconds", "d")

    def test_shape_mismatch_is_an_invariant_error(self) -> None:
        """The same name with other labels is a bug, not a silent second metric."""
        counter("t_shape_total", "d", ["a"])
        with pytest.raises(InvariantError):
            counter("t_shape_total", "d", ["b"])

    def test_render_includes_values(self) -> None:
        """The exposition text contains what was counted."""
        counter("t_rendered_total", "d").inc(3)
        body, content_type = render_latest()
        assert b"t_rendered_total 3.0" in body
        assert content_type.startswith("text/plain")
