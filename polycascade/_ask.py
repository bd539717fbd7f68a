"""What `polycascade ask` does: build the pool (models file, catalog ids, local rung), run the cascade."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .catalog import ModelsFile
from .errors import CatalogError, ConfigError
from .graphs.cascade import CascadeSettings
from .service import Service, open_service
from .sync import run_sync
from .tasks import Task, TaskResult
from .yamlfile import load_yaml_model


@dataclass(frozen=True)
class AskOptions:
    prompt: str
    schema: str | None
    policy: str | None
    models_file: Path | None
    models: list[str]
    judges: list[str]
    local: bool
    kind: str | None
    data_class: str | None
    max_tokens: int
    max_rungs: int | None
    ledger: str


def load_object(ref: str, option: str, what: str = "name", example: str = "myapp.schemas:Invoice") -> Any:
    """`package.module:name` → the object. The current directory is importable."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ConfigError(f"{option} {ref!r}: write it as module:{what}, e.g. {example}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{option} {ref!r}: cannot import ({exc}).") from None


def load_schema(ref: str) -> type[BaseModel]:
    """`package.module:Model` → the pydantic class."""
    cls = load_object(ref, "--schema", "Model")
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise ConfigError(f"--schema {ref!r} is not a pydantic model class.")
    return cls


def pool_ids(models: list[str], models_file: Path | None) -> list[str]:
    """Models named with --model, and every model a --models file declares."""
    ids = list(models)
    if models_file is not None:
        ids += [m.id for m in load_yaml_model(models_file, ModelsFile, CatalogError).models]
    return list(dict.fromkeys(ids))


def run_ask(options: AskOptions) -> TaskResult:
    return run_sync(_run(options))


@contextlib.contextmanager
def open_cli_service(**options: Any) -> Iterator[Service]:
    """`open_service`, saying on stderr which models were left out for want of credentials."""
    with open_service(**options) as service:
        if service.skipped:
            variables = sorted({k for keys in service.skipped.values() for k in keys})
            print(f"note: {len(service.skipped)} model(s) skipped, no credentials: set {', '.join(variables)} "
                  "to use them", file=sys.stderr)  # fmt: skip
        yield service


async def _run(options: AskOptions) -> TaskResult:
    schema = load_schema(options.schema) if options.schema else None
    models = pool_ids(options.models, options.models_file)
    with open_cli_service(
        policy=options.policy,
        models_file=options.models_file,
        models=models,
        judges=options.judges,
        local=options.local,
        ledger=options.ledger,
    ) as service:  # fmt: skip
        settings = CascadeSettings.from_policy(service.policy)
        if options.max_rungs:
            settings = replace(settings, max_rungs=options.max_rungs)
        task = Task(
            options.prompt, kind=options.kind, data_class=options.data_class, schema=schema,
            max_tokens=options.max_tokens,
        )  # fmt: skip
        return await service.cascade(settings=settings).run(task)
