"""The model seam, without the model client: what completes a request, and the ledger row of a call.

Kept apart from `gateway` so that code which only routes, replays or evaluates (the cascade,
the governor, `polycascade backtest`) never imports LiteLLM, whose import alone takes seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from .catalog import Catalog, ModelSpec
from .ledger import IN_FLIGHT, CallRecord
from .records import replace
from .types import CallContext, Completion, CompletionRequest, Usage

__all__ = ["AnswerJournal", "Completer", "Recall", "call_record", "in_flight_record", "request_key"]


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
    usage = completion.usage if completion else Usage()
    return _row(
        spec, request.context, call_id=call_id, outcome=outcome, input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens, cost=completion.cost if completion else Decimal(0), latency_s=latency_s,
        attempts=attempts, decision=request.context.decision,
    )  # fmt: skip


def in_flight_record(
    spec: ModelSpec, context: CallContext, call_id: str, reserved: Decimal, ts: float, why: Mapping[str, Any]
) -> CallRecord:
    """The ledger row of a reserved call before it goes out, with `why` (what was reserved, where the
    data goes): counted at its reserved cost until the call's own row replaces it (`_accounts`)."""
    return _row(spec, context, call_id=call_id, outcome=IN_FLIGHT, cost=reserved, ts=ts, decision=why)


def _row(spec: ModelSpec, ctx: CallContext, **fields: Any) -> CallRecord:
    return CallRecord(
        model=spec.id, vendor=spec.vendor, jurisdiction=spec.jurisdiction, host_jurisdiction=spec.host_jurisdiction,
        run_id=ctx.run_id, task_id=ctx.task_id, node=ctx.node, task_kind=ctx.task_kind, data_class=ctx.data_class,
        tenant=ctx.tenant, **fields,
    )  # fmt: skip


class AnswerJournal(Protocol):
    """Answers kept by request (`request_key`), durable across processes: what `Recall` reuses."""

    def get(self, key: str) -> Completion | None: ...

    def put(self, key: str, completion: Completion) -> None: ...


class Recall:
    """A completer wrapper that reuses an answer its journal already holds for the same request.

    A run killed after a call was answered and recorded, but before its document's checkpoint,
    asks again on resume: the journal answers instead of the vendor (`Completion.replayed`), so a
    recorded call is not paid twice. The key covers the run, task, node, model and everything
    sent, so only the very same request is answered from the journal."""

    def __init__(self, completer: Completer, journal: AnswerJournal) -> None:
        self.completer, self.journal, self.catalog = completer, journal, completer.catalog

    def missing_credentials(self, spec: ModelSpec) -> list[str]:
        return self.completer.missing_credentials(spec)

    async def complete(self, request: CompletionRequest) -> Completion:
        key = request_key(request)
        if (kept := self.journal.get(key)) is not None:
            return replace(kept, replayed=True)
        completion = await self.completer.complete(request)
        self.journal.put(key, completion)  # just after its ledger row: a kill between them pays once more
        return completion


def request_key(request: CompletionRequest) -> str:
    """The same request in the same task: what was sent, to which model, for which run, task and node."""
    ctx = request.context
    sent = {
        "at": [ctx.run_id, ctx.task_id, ctx.node, request.model],
        "messages": [m.to_openai() for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "tools": list(request.tools),
        "schema": request.json_schema,
    }
    return hashlib.sha256(json.dumps(sent, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
