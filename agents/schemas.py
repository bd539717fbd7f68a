"""Any schema LangChain users pass to `with_structured_output` as the pydantic model the cascade checks.

    model, to_result = as_checked_model(schema)   # pydantic v2 or v1 class, TypedDict, or JSON schema

The cascade validates answers against a pydantic (v2) model; `to_result` turns the validated
model into what the caller asked for: the same model, the v1 model, or a dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic
import pydantic.v1
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel, create_model

__all__ = ["as_checked_model", "json_schema_of"]

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def json_schema_of(schema: Any) -> dict[str, Any]:
    return dict(convert_to_json_schema(schema))


def as_checked_model(schema: Any) -> tuple[type[BaseModel], Callable[[BaseModel], Any]]:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema, lambda validated: validated
    model = _model_from(json_schema_of(schema))
    if isinstance(schema, type) and issubclass(schema, pydantic.v1.BaseModel):
        v1 = schema
        return model, lambda validated: v1.parse_obj(validated.model_dump())
    return model, lambda validated: validated.model_dump(exclude_unset=True)


def _model_from(schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model for an object schema: its properties typed, the required ones required."""
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        annotation = _annotation(prop)
        fields[name] = (annotation, ...) if name in required else (annotation | None, None)
    title = str(schema.get("title") or "Answer")
    return create_model(title, __doc__=schema.get("description"), **fields)  # type: ignore[call-overload, no-any-return]


def _annotation(prop: dict[str, Any]) -> Any:
    kind = prop.get("type")
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        return list[Any]
    if kind == "object":
        return dict[str, Any]
    return Any
