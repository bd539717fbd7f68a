"""A LangGraph state's reducers, read from its `Annotated` fields, so that its nodes can be stepped
without LangGraph's scheduler (replays, nesting) and still merge updates as the graph does.

    class State(TypedDict):
        attempts: Annotated[list[Attempt], operator.add]   # reduced
        stop_reason: str                                     # overwritten

    apply_update(state, {"attempts": [a]}, reducers(State))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Annotated, Any, get_args, get_origin, get_type_hints

__all__ = ["Reducer", "apply_update", "reducers"]

Reducer = Callable[[Any, Any], Any]


def reducers(schema: type) -> dict[str, Reducer]:
    """Each key's reducer: the last item of its `Annotated[...]` metadata when callable, as LangGraph reads it."""
    found: dict[str, Reducer] = {}
    for key, hint in get_type_hints(schema, include_extras=True).items():
        if get_origin(hint) is Annotated and callable(last := get_args(hint)[-1]):
            found[key] = last
    return found


def apply_update(state: MutableMapping[str, Any], update: Mapping[str, Any], by_key: Mapping[str, Reducer]) -> None:
    """Merge a node's `update` into `state`: reduced keys through their reducer, the rest overwritten.
    A reduced key not yet in the state starts from its first update, as LangGraph's empty channel does."""
    for key, value in update.items():
        reducer = by_key.get(key)
        state[key] = reducer(state[key], value) if reducer is not None and key in state else value
