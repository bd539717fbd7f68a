"""What happened and why: one call's decision (`explain`)."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .ledger import CallRecord, Ledger

__all__ = ["explain_call", "explained"]


async def explain_call(ledger: Ledger, call_id: str) -> dict[str, Any]:
    rec = await ledger.get(call_id)
    if rec is None:
        raise ConfigError(f"no call {call_id!r} in the ledger. `polycascade report` lists recent calls.")
    return explained(rec)


def explained(rec: CallRecord) -> dict[str, Any]:
    """A call as `explain` shows it: where it went, what it cost, the verdict and the decision."""
    return {
        "call_id": rec.call_id,
        "run_id": rec.run_id,
        "task_id": rec.task_id,
        "node": rec.node,
        "model": rec.model,
        "vendor": rec.vendor,
        "jurisdiction": rec.jurisdiction,
        "host_jurisdiction": rec.host_jurisdiction,
        "data_class": rec.data_class,
        "outcome": rec.outcome,
        "cost_usd": str(rec.cost),
        "tokens": {"input": rec.input_tokens, "output": rec.output_tokens},
        "attempts": rec.attempts,
        "verdict": None if rec.verdict is None else {"passed": rec.verdict, "score": rec.score, "by": rec.evaluator},
        "decision": dict(rec.decision) if rec.decision is not None else None,
    }
