"""`run_task` and friends: the cascade in one call, for scripts and notebooks.

The graph layer is imported on first use, so `import polycascade` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._sync import run_sync
from .catalog import Catalog, ModelSpec
from .ledger import Ledger
from .tasks import Task, TaskResult

if TYPE_CHECKING:
    from agents.evaluators import Evaluator
    from graphs.cascade import Cascade, CascadeSettings
    from policies.routing import Rule

__all__ = ["arun_task", "cascade", "cascade_node", "run_task"]


def cascade(
    models: Sequence[str | ModelSpec],
    *,
    catalog: Catalog | None = None,
    evaluator: Evaluator | None = None,
    ledger: Ledger | None = None,
    settings: CascadeSettings | None = None,
    rules: Sequence[Rule] = (),
) -> Cascade:
    """A `Cascade` over `models` (catalog ids or specs), calling through a new gateway."""
    from graphs.cascade import Cascade, CascadeSettings

    from .gateway import Gateway
    from .ledger import open_ledger

    specs = [m for m in models if isinstance(m, ModelSpec)]
    catalog = (catalog or Catalog.bundled()).with_models(specs)
    pool = [catalog[m if isinstance(m, str) else m.id] for m in models]
    gateway = Gateway(catalog, ledger if ledger is not None else open_ledger("memory://"))
    return Cascade(gateway, pool, evaluator=evaluator, settings=settings or CascadeSettings(), rules=rules)


async def arun_task(task: Task | str, models: Sequence[str | ModelSpec], **options: Any) -> TaskResult:
    """Run one task through the cascade; see `cascade` for the options."""
    return await cascade(models, **options).run(task)


def run_task(task: Task | str, models: Sequence[str | ModelSpec], **options: Any) -> TaskResult:
    """The synchronous form of `arun_task`."""
    return run_sync(arun_task(task, models, **options))


def cascade_node(
    models: Sequence[str | ModelSpec], *, input_key: str = "task", output_key: str = "result", **options: Any
) -> Any:
    """A node for your own `StateGraph`: reads a Task or prompt at `input_key`, writes a TaskResult."""
    return cascade(models, **options).as_node(input_key=input_key, output_key=output_key)
