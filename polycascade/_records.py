"""`record`: a frozen, slotted dataclass that costs less to build.

A frozen dataclass's `__init__` sets each field with `object.__setattr__(self, name, value)`, the
frozen guard's way around itself: on CPython 3.11 about 130 ns a field, five times a plain class's.
Every model call builds a dozen such records (request, completion, ledger row, attempt, verdict …),
which was a tenth of a backtest's replay. `record` makes the same class (frozen, slots, eq, repr,
`dataclasses.replace`) and gives it an `__init__` that sets each slot through the slot's own
descriptor: half the cost, the same fields and defaults, and still no assignment after it.

Plain fields, defaults and default factories only: anything else (`InitVar`, `kw_only`,
`init=False`, `__post_init__`) is refused when the class is made.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar, dataclass_transform

__all__ = ["record"]

T = TypeVar("T")


class _Factory:
    """The default of a field with a default factory: call the factory."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: type[T]) -> type[T]:
    made = dataclasses.dataclass(frozen=True, slots=True)(cls)
    made.__init__ = _init(made)  # type: ignore[method-assign]
    return made


def _init(cls: type[Any]) -> Any:
    fields = dataclasses.fields(cls)
    generated = list(inspect.signature(cls.__init__).parameters)[1:]
    if [f.name for f in fields] != generated or hasattr(cls, "__post_init__") or any(f.kw_only for f in fields):
        raise TypeError(
            f"@record supports plain fields with defaults only; declare {cls.__name__} with "
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
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    namespace: dict[str, Any] = {}
    exec(source, env, namespace)  # as dataclasses itself makes __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
