"""`record`: the same frozen, slotted dataclass, with a cheaper `__init__`."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import field

import pytest

from polycascade._records import record


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


def test_fields_defaults_and_factories_behave_as_a_dataclass():
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, [])
    assert Point(1).tags is not p.tags  # a fresh list per instance, from the factory
    assert Point(1, 2, ["a"]) == Point(x=1, y=2, tags=["a"])
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_it_stays_frozen_and_slotted():
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert pickle.loads(pickle.dumps(p)) == p
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))  # type: ignore[arg-type]


def test_what_it_cannot_build_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="plain fields"):

        @record
        class WithPostInit:
            x: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError, match="plain fields"):

        @record
        class WithInitVar:
            x: int
            scale: dataclasses.InitVar[int] = 1
