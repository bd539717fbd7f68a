"""`frozen`: a frozen, slotted dataclass that costs less to build.

A frozen dataclass's `__init__` sets each field with `object.__setattr__(self, name, value)`, the
frozen guard's way around itself: on CPython 3.11 about 130 ns a field, five times a plain class's.
Every model call builds a dozen such records (request, completion, ledger row, attempt, verdict …),
which was a tenth of a backtest's replay. `frozen` makes the same class (frozen, slots, eq, repr,
`dataclasses.replace`) and gives it an `__init__` that sets each slot through the slot's own
descriptor: half the cost, the same fields and defaults, and still no assignment after it.
`replace(obj, **changes)` copies a record the same way, a third of `dataclasses.replace`'s cost
(the cascade amends an attempt, and the ledger a call, once per answer). A record pickles as its
class and field values, which unpickling passes to that `__init__` (a backtest's workers send
back tens of thousands of scores; the default for slotted dataclasses is four times slower).

Plain fields, defaults and default factories only: anything else (`InitVar`, `kw_only`,
`init=False`, `__post_init__`) is refused when the class is made. A record that must check its
values defines `__check__(self)`, which `__init__` and `replace` call last.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar, dataclass_transform

__all__ = ["frozen", "replace"]

T = TypeVar("T")


class _Factory:
    """The default of a field with a default factory: call the factory."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: type[T]) -> type[T]:
    made = dataclasses.dataclass(frozen=True, slots=True)(cls)
    made.__init__ = _init(made)  # type: ignore[method-assign]
    made.__replace__ = _replacer(made)  # type: ignore[attr-defined]
    made.__reduce__ = _reducer(made)  # type: ignore[assignment,method-assign]
    return made


def replace(obj: T, /, **changes: Any) -> T:
    """`dataclasses.replace`, a third of the cost for a record."""
    replacer = getattr(type(obj), "__replace__", None)
    if replacer is None:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    return replacer(obj, **changes)  # type: ignore[no-any-return]


def _init(cls: type[Any]) -> Any:
    fields = dataclasses.fields(cls)
    generated = list(inspect.signature(cls.__init__).parameters)[1:]
    if [f.name for f in fields] != generated or hasattr(cls, "__post_init__") or any(f.kw_only for f in fields):
        raise TypeError(
            f"@frozen supports plain fields with defaults only; declare {cls.__name__} with "
            "@dataclass(frozen=True, slots=True) instead"
        )
    env: dict[str, Any] = {"_FACTORY": _FACTORY}
    params, body = [], []
    for f in fields:
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's descriptor: no frozen guard to go around
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            value = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
        else:
            params.append(f.name)
        body.append(f"    _set_{f.name}(self, {value})")
    if hasattr(cls, "__check__"):
        body.append("    self.__check__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    return _compiled(cls, "__init__", source, env)


def _replacer(cls: type[Any]) -> Any:
    """`__replace__` (the name `copy.replace` looks for from Python 3.13): each slot copied or changed."""
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = ["    new = _new(_cls)"]
    for f in dataclasses.fields(cls):
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"    _set_{f.name}(new, changes.pop({f.name!r}, self.{f.name}))")
    body += [
        "    if changes:",
        f"        raise TypeError(f'{cls.__name__} has no field(s) {{\", \".join(changes)}}')",
        *(["    new.__check__()"] if hasattr(cls, "__check__") else []),
        "    return new",
    ]
    return _compiled(cls, "__replace__", "def __replace__(self, /, **changes):\n" + "\n".join(body), env)


def _reducer(cls: type[Any]) -> Any:
    values = "".join(f"self.{f.name}, " for f in dataclasses.fields(cls))
    return _compiled(cls, "__reduce__", f"def __reduce__(self):\n    return _cls, ({values})", {"_cls": cls})


def _compiled(cls: type[Any], name: str, source: str, env: dict[str, Any]) -> Any:
    namespace: dict[str, Any] = {}
    exec(source, env, namespace)  # as dataclasses itself makes __init__
    function = namespace[name]
    function.__qualname__ = f"{cls.__qualname__}.{name}"
    return function
