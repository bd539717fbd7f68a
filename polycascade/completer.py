"""The model seam, without the model client: what completes a request, and the ledger row of a call.

Kept apart from `gateway` so that code which only routes, replays or evaluates (the cascade,
the governor, `polycascade backtest`) never imports LiteLLM, whose import alone takes seconds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from .catalog import Catalog, ModelSpec
from .ledger import CallRecord
from .types import Completion, CompletionRequest, Usage

__all__ = ["Completer", "call_record"]


class Completer(Protocol):
    """The model seam: anything that completes a request (the gateway, or a wrapper around it)."""

    catalog: Catalog

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def missing_credentials(self, spec: ModelSpec) -> list[str]:
        """Environment variables a call to `spec` still needs; empty when it can be made."""
        ...


def call_record(
    spec: ModelSpec,
    request: CompletionRequest,
    call_id: str,
    latency_s: float,
    attempts: int,
    outcome: str,
    completion: Completion | None = None,
) -> CallRecord:
    """The ledger row for one call (successful or not), with its context and decision."""
    ctx = request.context
    usage = completion.usage if completion else Usage()
    return CallRecord(
        call_id=call_id, model=spec.id, vendor=spec.vendor, jurisdiction=spec.jurisdiction,
        host_jurisdiction=spec.host_jurisdiction, outcome=outcome, run_id=ctx.run_id, task_id=ctx.task_id,
        node=ctx.node, task_kind=ctx.task_kind, data_class=ctx.data_class, tenant=ctx.tenant,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cost=completion.cost if completion else Decimal(0), latency_s=latency_s, attempts=attempts,
        decision=ctx.decision,
    )  # fmt: skip
