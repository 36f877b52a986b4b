"""The startup heap is frozen; what comes later is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kit.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[_Node]:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.mark.usefixtures("unfrozen")
def test_startup_objects_leave_the_collectors_sight() -> None:
    kept = _Node()
    frozen = freeze_startup_heap()
    # Not equal: a frozen object that another thread (a test server's) frees meanwhile leaves
    # the count, so it can only have fallen since.
    assert 0 < gc.get_freeze_count() <= frozen
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked


@pytest.mark.usefixtures("unfrozen")
def test_startup_garbage_is_collected_before_freezing() -> None:
    garbage = _cycle()
    freeze_startup_heap()
    assert garbage() is None  # collected, not frozen alive


@pytest.mark.usefixtures("unfrozen")
def test_later_garbage_is_still_collected() -> None:
    freeze_startup_heap()
    garbage = _cycle()
    assert garbage() is not None
    gc.collect()
    assert garbage() is None
