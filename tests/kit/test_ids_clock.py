"""Prefixed ids and the injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from kit.clock import FrozenClock, SystemClock
from kit.ids import IdPrefix, InvalidIdError, is_id, new_id, parse_id, uuid4_text


class TestIds:
    def test_new_id_has_prefix_and_uuid4(self) -> None:
        """Minted ids are `<prefix>_<uuid4>` and unique."""
        ids = {new_id(IdPrefix.TRANSACTION) for _ in range(1000)}
        assert len(ids) == 1000
        sample = ids.pop()
        assert sample.startswith("txn_")
        assert parse_id(sample, IdPrefix.TRANSACTION).version == 4

    def test_uuid4_text_is_a_canonical_version_4_uuid(self) -> None:
        """Every minted text is a version 4, RFC 4122 variant UUID written as `uuid` writes it
        (lowercase, hyphenated), and they differ: over 2,000 of them every variant digit shows."""
        texts = [uuid4_text() for _ in range(2000)]
        assert len(set(texts)) == len(texts)
        parsed = [uuid.UUID(text) for text in texts]
        assert all(str(u) == text for u, text in zip(parsed, texts, strict=True))
        assert {u.version for u in parsed} == {4}
        assert {u.variant for u in parsed} == {uuid.RFC_4122}
        assert {text[19] for text in texts} == set("89ab")

    def test_wrong_prefix_is_refused(self) -> None:
        """A balance id is not accepted where a transaction id is expected."""
        with pytest.raises(InvalidIdError):
            parse_id(new_id(IdPrefix.BALANCE), IdPrefix.TRANSACTION)
        assert not is_id(new_id(IdPrefix.BALANCE), IdPrefix.TRANSACTION)

    @pytest.mark.parametrize("value", ["txn_", "txn_not-a-uuid", "txn_" + "a" * 200, ""])
    def test_malformed_ids_are_refused(self, value: str) -> None:
        """Ids that do not end in a uuid are refused."""
        assert not is_id(value, IdPrefix.TRANSACTION)

    def test_prefixes_are_distinct(self) -> None:
        """No two kinds of record share a prefix."""
        values = [p.value for p in IdPrefix]
        assert len(values) == len(set(values))


class TestClock:
    def test_system_clock_is_aware_utc(self) -> None:
        """The system clock never returns a naive datetime."""
        now = SystemClock().now()
        assert now.tzinfo is not None
        assert now.utcoffset() == timedelta(0)

    def test_frozen_clock_moves_only_when_told(self) -> None:
        """A frozen clock advances both wall and monotonic time by hand."""
        start = datetime(2026, 1, 1, tzinfo=UTC)
        clock = FrozenClock(start)
        assert clock.now() == start
        clock.advance(1.5)
        assert clock.now() == start + timedelta(seconds=1.5)
        assert clock.monotonic() == 1.5
        with pytest.raises(ValueError, match="backwards"):
            clock.advance(-1)

    def test_frozen_clock_refuses_naive_start(self) -> None:
        """Naive datetimes are refused at the door."""
        with pytest.raises(ValueError, match="timezone"):
            FrozenClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
