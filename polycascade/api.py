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
    from policies.config import Policy

__all__ = ["arun_task", "cascade", "cascade_node", "run_task"]


def cascade(
    models: Sequence[str | ModelSpec],
    *,
    catalog: Catalog | None = None,
    evaluator: Evaluator | None = None,
    ledger: Ledger | None = None,
    settings: CascadeSettings | None = None,
    policy: Policy | str | None = None,
) -> Cascade:
    """A `Cascade` over `models` (catalog ids or specs), governed by `policy` (a Policy, file or preset name)."""
    from graphs.cascade import Cascade
    from policies.config import Policy, load_policy

    from .gateway import Gateway
    from .governor import DEFAULT_POLICY, Governor
    from .ledger import open_ledger

    specs = [m for m in models if isinstance(m, ModelSpec)]
    catalog = (catalog or Catalog.bundled()).with_models(specs)
    pool = [catalog[m if isinstance(m, str) else m.id] for m in models]
    ledger = ledger if ledger is not None else open_ledger("memory://")
    if isinstance(policy, str):
        policy = load_policy(policy, catalog).policy
    governor = Governor(policy if isinstance(policy, Policy) else DEFAULT_POLICY, ledger)
    return Cascade(Gateway(catalog, ledger), pool, evaluator=evaluator, governor=governor, settings=settings)


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
