"""Structured logs: one JSON line per record, request id attached, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from kit.errors import InvariantError
from kit.metrics import counter, gauge, histogram, render_latest
from kit.telemetry import REDACTED, JsonFormatter, bind_request_id, redact, reset_request_id


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
