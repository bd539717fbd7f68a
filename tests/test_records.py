"""`frozen`: the same frozen, slotted dataclass, with a cheaper `__init__`; and `replace`."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import field

import pytest

from polycascade.records import frozen, replace


@frozen
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
    assert pickle.loads(pickle.dumps(Point(1, 2, ["a"]))).tags == ["a"]
    assert p.__reduce__() == (Point, (1, 0, []))  # pickled as the class and its fields, rebuilt by __init__
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))  # type: ignore[arg-type]


def test_what_it_cannot_build_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match="plain fields"):

        @frozen
        class WithPostInit:
            x: int

            def __post_init__(self) -> None:
                pass

    with pytest.raises(TypeError, match="plain fields"):

        @frozen
        class WithInitVar:
            x: int
            scale: dataclasses.InitVar[int] = 1


def test_replace_copies_every_field_but_the_changed_ones_as_dataclasses_does():
    tags = ["a"]
    p = Point(1, 2, tags)
    moved = replace(p, y=5)
    assert moved == dataclasses.replace(p, y=5) == Point(1, 5, tags)
    assert moved.tags is tags  # a shallow copy: the factory is not called again
    assert p == Point(1, 2, ["a"])  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.y = 6  # type: ignore[misc]
    with pytest.raises(TypeError, match="Point has no field"):
        replace(p, z=1)


def test_replace_falls_back_to_dataclasses_for_other_dataclasses():
    @dataclasses.dataclass(frozen=True)
    class Plain:
        x: int
        y: int = 0

    assert replace(Plain(1), y=3) == Plain(1, 3)
    with pytest.raises(TypeError):
        replace(Plain(1), z=1)
