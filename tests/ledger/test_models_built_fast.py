"""The ledger's frozen models build through a generated `__init__` (`_built_fast`): every command
and record must come out exactly as the frozen dataclass's own `__init__` builds it."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from ledger import models
from ledger.models import _built_fast

FROZEN_MODELS = [
    value
    for value in vars(models).values()
    if isinstance(value, type)
    and dataclasses.is_dataclass(value)
    and value.__module__ == models.__name__
    and value.__dataclass_params__.frozen  # type: ignore[attr-defined]
]


def _reference(cls: type, values: dict[str, Any]) -> Any:
    """What the frozen dataclass's own `__init__` does: every field through object.__setattr__."""
    built: Any = object.__new__(cls)
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = values[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            value = f.default_factory()  # type: ignore[operator]
        object.__setattr__(built, f.name, value)
    return built


def test_every_frozen_model_is_built_fast() -> None:
    """All of them go through the generated `__init__` (none was left out)."""
    assert len(FROZEN_MODELS) >= 10
    for cls in FROZEN_MODELS:
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__init__.__code__.co_filename == "<string>", cls


@pytest.mark.parametrize("cls", FROZEN_MODELS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("given", ["all", "required"])
def test_built_exactly_as_the_frozen_init_builds(cls: type, given: str) -> None:
    """Each field holds the very object passed (or its default, or a fresh factory value); the
    instance is of the frozen class, equal to the reference, and refuses assignment."""
    params = dataclasses.fields(cls)
    values = {
        f.name: object()
        for f in params
        if given == "all"
        or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    }
    built = cls(**values)
    positional = cls(*[values[f.name] for f in params if f.name in values])
    expected = _reference(cls, values)
    assert type(built) is cls
    assert built == expected
    for f in params:
        got, want = getattr(built, f.name), getattr(expected, f.name)
        if f.name in values or f.default is not dataclasses.MISSING:
            assert got is want, f.name
        else:  # a default_factory: equal, but a fresh object for every instance
            assert got == want, f.name
            assert got is not getattr(cls(**values), f.name), f.name
    assert positional == built
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, params[0].name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(built, params[0].name)


@pytest.mark.parametrize("cls", FROZEN_MODELS, ids=lambda cls: cls.__name__)
def test_signature_is_the_dataclass_one(cls: type) -> None:
    """help(), IDEs and argument errors see the fields, their order and their defaults."""
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(cls)]
    for parameter, f in zip(parameters, dataclasses.fields(cls), strict=True):
        if f.default is not dataclasses.MISSING:
            assert parameter.default is f.default, f.name
        elif f.default_factory is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty, f.name
    if any(p.default is inspect.Parameter.empty for p in parameters):
        with pytest.raises(TypeError, match="missing"):
            cls()


def test_refuses_what_it_cannot_build() -> None:
    """A class that is not frozen, or that has a __post_init__, is refused when it is defined."""

    @dataclasses.dataclass(slots=True)
    class Plain:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Plain, Checked):
        with pytest.raises(TypeError, match="only a frozen dataclass"):
            _built_fast(cls)
