"""Structured logs: one JSON line per record, request id attached, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

import pytest
from prometheus_client.registry import Collector

from kit.errors import InvariantError
from kit.metrics import collector, counter, gauge, histogram, render_latest
from kit.telemetry import (
    REDACTED,
    JsonFormatter,
    LineBatcher,
    bind_request_id,
    flush_line_batches,
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


class TestLineBatcher:
    async def test_batched_lines_are_the_formatters_lines(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """Held until the batch is due, then written at once: each line says what
        `logger.info` would have said when it was added (its request id, its time, the same
        keys, values and masking)."""
        logger, stream = json_logger
        batcher = LineBatcher(logger, "request", delay_s=0.02)
        for request_id in ("req-batch-0001", "req-batch-0002"):
            token = bind_request_id(request_id)
            try:
                batcher.add(dict(FAST_FIELDS))
            finally:
                reset_request_id(token)
        assert (stream.getvalue(), batcher.pending) == ("", 2)
        token = bind_request_id("req-batch-0001")
        try:
            logger.info("request", extra=dict(FAST_FIELDS))
        finally:
            reset_request_id(token)
        await asyncio.sleep(0.1)
        direct, first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert batcher.pending == 0
        assert (first["request_id"], second["request_id"]) == ("req-batch-0001", "req-batch-0002")
        assert first.pop("ts")[:16] == direct.pop("ts")[:16]
        assert first == direct
        assert first["api_key"] == REDACTED

    @pytest.mark.parametrize("request_id", ["req-vouch-0001", None])
    async def test_vouched_lines_are_the_formatters_lines(
        self, json_logger: tuple[logging.Logger, io.StringIO], request_id: str | None
    ) -> None:
        """A caller that vouches for its fields (`is_redacted`) gets the formatter's very
        bytes, with or without a request id, keys in the same order."""
        logger, stream = json_logger
        fields = {"service": "api", "status": 200, "latency_ms": 0.25, "decision": "allow"}
        batcher = LineBatcher(logger, "request", is_redacted=True, delay_s=60)
        token = bind_request_id(request_id)
        try:
            batcher.add(dict(fields))
            logger.info("request", extra=dict(fields))
        finally:
            reset_request_id(token)
        direct = stream.getvalue()
        batcher.flush()
        batched = stream.getvalue().removeprefix(direct)
        assert batched.endswith("\n")
        assert list(json.loads(batched)) == list(json.loads(direct))  # same keys, same order
        assert batched.split('"level"')[1] == direct.split('"level"')[1]  # all but the time
        assert ("request_id" in json.loads(batched)) is (request_id is not None)

    async def test_a_full_batch_is_written_at_once(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        logger, stream = json_logger
        batcher = LineBatcher(logger, "request", lines_max=3, delay_s=60)
        for status in (200, 201):
            batcher.add({"status": status})
        assert stream.getvalue() == ""
        batcher.add({"status": 202})
        assert [json.loads(x)["status"] for x in stream.getvalue().splitlines()] == [200, 201, 202]

    def test_a_line_left_on_a_finished_loop_is_written_by_the_next_one(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """A loop that ends before its timer fires does not strand its lines: the next line,
        added on another loop, writes them."""
        logger, stream = json_logger
        batcher = LineBatcher(logger, "request", delay_s=60)

        async def add(status: int) -> None:
            batcher.add({"status": status})

        asyncio.run(add(200))
        assert stream.getvalue() == ""
        asyncio.run(add(201))
        assert [json.loads(x)["status"] for x in stream.getvalue().splitlines()] == [200, 201]

    def test_without_a_loop_lines_are_written_at_once(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        logger, stream = json_logger
        LineBatcher(logger, "request").add({"status": 200})
        assert json.loads(stream.getvalue())["status"] == 200

    async def test_flush_writes_what_waits(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """Shutdown writes every batcher's waiting lines, whatever their delay."""
        logger, stream = json_logger
        batcher = LineBatcher(logger, "request", delay_s=60)
        batcher.add({"status": 200})
        flush_line_batches()
        assert (json.loads(stream.getvalue())["status"], batcher.pending) == (200, 0)

    async def test_other_configurations_get_the_records(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        """With a filter or a second handler on the way the lines go through the logging
        machinery, so every handler sees each one (with its own time and request id) and the
        filter decides."""
        logger, stream = json_logger
        seen: list[tuple[logging.LogRecord, dict[str, object]]] = []

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append((record, json.loads(JsonFormatter().format(record))))

        extra = Collect()
        logger.addHandler(extra)
        batcher = LineBatcher(logger, "request", delay_s=60)
        token = bind_request_id("req-record-0001")
        try:
            batcher.add(dict(FAST_FIELDS))
        finally:
            reset_request_id(token)
        added_at = time.time()
        await asyncio.sleep(0.05)
        batcher.flush()
        [(record, line)] = seen
        assert record.status == 200  # type: ignore[attr-defined]
        assert record.created <= added_at
        assert (line["request_id"], line["api_key"]) == ("req-record-0001", REDACTED)
        assert json.loads(stream.getvalue())["request_id"] == "req-record-0001"
        logger.removeHandler(extra)
        logger.addFilter(lambda record: False)
        batcher.add(dict(FAST_FIELDS))
        batcher.flush()
        assert len(stream.getvalue().splitlines()) == 1  # the filter dropped the second line

    def test_disabled_level_writes_nothing(
        self, json_logger: tuple[logging.Logger, io.StringIO]
    ) -> None:
        logger, stream = json_logger
        logger.setLevel(logging.WARNING)
        batcher = LineBatcher(logger, "request")
        batcher.add(dict(FAST_FIELDS))
        batcher.flush()
        assert (stream.getvalue(), batcher.pending) == ("", 0)

    def test_bounds_are_checked(self, json_logger: tuple[logging.Logger, io.StringIO]) -> None:
        logger, _ = json_logger
        with pytest.raises(ValueError, match="at least one line"):
            LineBatcher(logger, "request", lines_max=0)

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

    def test_a_collector_is_registered_once(self) -> None:
        """The same name returns the first collector, also for its class imported anew (a
        module reload); another kind under that name is a bug."""

        def kind(name: str) -> type[Collector]:
            made = type(name, (Collector,), {"collect": lambda self: iter(()), "describe": tuple})
            made.__module__ = __name__
            return made

        cells, cells_again, other = kind("Cells"), kind("Cells"), kind("Other")
        first = collector("t_collector", cells, cells)
        assert cells_again is not cells
        assert collector("t_collector", cells_again, cells_again) is first
        with pytest.raises(InvariantError):
            collector("t_collector", other, other)

    def test_render_includes_values(self) -> None:
        """The exposition text contains what was counted."""
        counter("t_rendered_total", "d").inc(3)
        body, content_type = render_latest()
        assert b"t_rendered_total 3.0" in body
        assert content_type.startswith("text/plain")
