"""What `polycascade ask` does: build the pool (models file, catalog ids, local rung), run the cascade."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ._sync import run_sync
from ._yaml import load_yaml_model
from .catalog import ModelsFile
from .errors import CatalogError, ConfigError
from .tasks import Task, TaskResult


@dataclass(frozen=True)
class AskOptions:
    prompt: str
    schema: str | None
    policy: str | None
    models_file: Path | None
    models: list[str]
    judges: list[str]
    local: bool
    kind: str
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


async def _run(options: AskOptions) -> TaskResult:
    from dataclasses import replace

    from graphs.cascade import CascadeSettings

    from .service import open_service

    schema = load_schema(options.schema) if options.schema else None
    models = pool_ids(options.models, options.models_file)
    with open_service(
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
        data_class = options.data_class or service.policy.default_data_class
        task = Task(
            options.prompt, kind=options.kind, data_class=data_class, schema=schema, max_tokens=options.max_tokens
        )
        return await service.cascade(settings=settings).run(task)
