"""`run_task` and friends: the cascade in one call, for scripts and notebooks.

The runtime is assembled by `service.assemble`, as for every other entry point, so a policy's
defaults (data class, task kind, rungs, judges) hold here exactly as in `ask`, `run` and `serve`.
The graph layer is imported on first use (it lies below, as the layers go), so `import polycascade`
stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import Catalog, ModelSpec, UserModel
from .ledger import Ledger
from .sync import run_sync
from .tasks import Task, TaskResult

if TYPE_CHECKING:
    from .agents.evaluators import Evaluator
    from .graphs.cascade import Cascade, CascadeSettings
    from .policies.config import Policy

__all__ = ["arun_task", "cascade", "cascade_node", "run_task"]


def cascade(
    models: Sequence[str | ModelSpec | UserModel] = (),
    *,
    catalog: Catalog | None = None,
    evaluator: Evaluator | None = None,
    judges: Sequence[str | ModelSpec | UserModel] = (),
    ledger: Ledger | str = "memory://",
    settings: CascadeSettings | None = None,
    policy: Policy | str | Path | None = None,
) -> Cascade:
    """A `Cascade` over `models` (catalog ids, or entries to add) and the policy's pool, governed by
    `policy` (a Policy, a file or a preset name). Answers are checked by `evaluator`, else by an LLM
    judge from `judges`, the policy's judges or the pool's strongest models (of another vendor)."""
    from .service import assemble

    service = assemble(models, policy=policy, catalog=catalog, judges=judges, ledger=ledger)
    return service.cascade(evaluator=evaluator, settings=settings)


async def arun_task(task: Task | str, models: Sequence[str | ModelSpec | UserModel] = (), **options: Any) -> TaskResult:
    """Run one task through the cascade; see `cascade` for the options."""
    return await cascade(models, **options).run(task)


def run_task(task: Task | str, models: Sequence[str | ModelSpec | UserModel] = (), **options: Any) -> TaskResult:
    """The synchronous form of `arun_task`."""
    return run_sync(arun_task(task, models, **options))


def cascade_node(
    models: Sequence[str | ModelSpec | UserModel] = (),
    *,
    input_key: str = "task",
    output_key: str = "result",
    **options: Any,
) -> Any:
    """A node for your own `StateGraph`: reads a Task or prompt at `input_key`, writes a TaskResult."""
    return cascade(models, **options).as_node(input_key=input_key, output_key=output_key)
