"""Load YAML into pydantic models with errors that name file, line and field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Located(Generic[M]):
    """A validated document that can still say where each field was written."""

    path: Path
    value: M
    root: yaml.Node | None

    def where(self, *loc: str | int) -> str:
        """`file:line` of the field at `loc`, for errors found after validation."""
        return f"{self.path}:{_line_of(self.root, loc)}"


def load_yaml_model(path: str | Path, model: type[M], error: type[ConfigError] = ConfigError) -> M:
    """Parse `path` and validate it as `model`; raise `error` with `file:line: field: problem`."""
    return load_located(path, model, error).value


def load_located(
    path: str | Path,
    model: type[M],
    error: type[ConfigError] = ConfigError,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Located[M]:
    """`path` validated as `model`; `prepare` may rewrite the parsed mapping first (a policy's `extends`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror}). Check the path.") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text. Save it as UTF-8 YAML.") from None
    try:
        root = yaml.compose(text)
        data = yaml.load(text, Loader=_UniqueKeys)
    except DuplicateKey as exc:
        raise error(
            f"{path}:{exc.line}: key {exc.key!r} is given twice (first at line {exc.first}); keep one"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise error(f"{path}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    if data is not None and not isinstance(data, dict):
        raise error(f"{path}:1: expected a mapping of fields at the top level, got {type(data).__name__}")
    if prepare is not None:
        data = prepare(dict(data or {}))
    try:
        return Located(path, model.model_validate(data or {}), root)
    except ValidationError as exc:
        raise error(_describe(path, root, exc)) from None


class DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.line = key, first, line


class _UniqueKeys(yaml.SafeLoader):
    """YAML's own loader keeps the last of two equal keys; a second `budgets:` would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


def _describe(path: Path, root: yaml.Node | None, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        secretish = any(word in field.lower() for word in ("key", "secret", "token", "password"))
        value = f" (got {err['input']!r})" if err["type"] != "missing" and not secretish else ""
        lines.append(f"{path}:{_line_of(root, loc)}: field '{field}': {err['msg']}{value}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line where the deepest field on `loc` that exists in the document is written
    (a mapping's key, not its value, which may start lines below)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        found = _child(node, part)
        if found is None:
            break
        node, line = found[1], found[0].start_mark.line + 1
    return line


def _child(node: yaml.Node | None, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
    """(where the field is written, its value)."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == str(key):
                return cast(yaml.Node, k), cast(yaml.Node, v)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        item = cast(yaml.Node, node.value[key])
        return item, item
    return None
