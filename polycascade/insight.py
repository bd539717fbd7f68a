"""What happened and why: one call's decision (`explain`), and spend against policy (`report`)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .ledger import CallRecord, Ledger

if TYPE_CHECKING:
    from polycascade.policies.config import Policy

__all__ = ["build_report", "explain_call"]


async def explain_call(ledger: Ledger, call_id: str) -> dict[str, Any]:
    rec = await ledger.get(call_id)
    if rec is None:
        raise ConfigError(f"no call {call_id!r} in the ledger. `polycascade report` lists recent calls.")
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


async def build_report(
    ledger: Ledger, *, policy: Policy | None = None, run_id: str | None = None, since_hours: float | None = None
) -> dict[str, Any]:
    window = (
        (policy.vendor_share.window_hours if policy and policy.vendor_share else 24)
        if since_hours is None
        else since_hours
    )
    since = None if run_id else time.time() - window * 3600
    calls = await ledger.calls(run_id=run_id)
    if since is not None:
        calls = [c for c in calls if c.ts >= since]
    total = sum((c.cost for c in calls), Decimal(0))
    return {
        "scope": {"run_id": run_id} if run_id else {"last_hours": window},
        "policy": policy.name if policy else None,
        "calls": len(calls),
        "total_cost_usd": str(total),
        "by_vendor": _shares(calls, "vendor", total, policy),
        "by_jurisdiction": _shares(calls, "jurisdiction", total, None),
        "by_host_jurisdiction": _shares(calls, "host_jurisdiction", total, None),
        "outcomes": dict(Counter(c.outcome for c in calls)),
        "escalations": _escalations(calls),
        "budgets": _budgets(calls, policy, run_id),
        "vendor_spread": _spread(calls, policy),
    }


def _shares(calls: list[CallRecord], key: str, total: Decimal, policy: Policy | None) -> list[dict[str, Any]]:
    spend: dict[str, Decimal] = defaultdict(Decimal)
    count: Counter[str] = Counter()
    for c in calls:
        spend[getattr(c, key)] += c.cost
        count[getattr(c, key)] += 1
    cap = policy.vendor_share.max_share if policy and policy.vendor_share else None
    rows = []
    for group in sorted(spend, key=lambda g: (-spend[g], g)):
        share = float(spend[group] / total) if total else 0.0
        row: dict[str, Any] = {
            key: group,
            "calls": count[group],
            "cost_usd": str(spend[group]),
            "share": round(share, 4),
        }
        if cap is not None:
            row["cap"] = cap
            row["within_cap"] = share <= cap + 1e-9
        rows.append(row)
    return rows


def _escalations(calls: list[CallRecord]) -> dict[str, Any]:
    answers: Counter[tuple[str, str]] = Counter(
        (c.run_id, c.task_id) for c in calls if c.node == "attempt" and c.outcome == "ok"
    )
    tasks = len(answers)
    escalated = sum(1 for n in answers.values() if n > 1)
    return {"tasks": tasks, "escalated": escalated, "rate": round(escalated / tasks, 4) if tasks else 0.0}


def _budgets(calls: list[CallRecord], policy: Policy | None, run_id: str | None) -> list[dict[str, Any]]:
    if policy is None:
        return []
    b, spent = policy.budgets, sum((c.cost for c in calls), Decimal(0))
    rows = []
    if run_id and b.per_run_usd is not None:
        rows.append({"budget": "run", "limit_usd": str(b.per_run_usd), "spent_usd": str(spent)})
    if b.per_day_usd is not None and not run_id:
        rows.append({"budget": "day (window)", "limit_usd": str(b.per_day_usd), "spent_usd": str(spent)})
    if b.per_task_usd is not None:
        per_task: dict[str, Decimal] = defaultdict(Decimal)
        for c in calls:
            per_task[c.task_id] += c.cost
        worst = max(per_task.values(), default=Decimal(0))
        rows.append({"budget": "task (max)", "limit_usd": str(b.per_task_usd), "spent_usd": str(worst)})
    return [{**row, "used": _fraction(row["spent_usd"], row["limit_usd"])} for row in rows]


def _fraction(part: str, whole: str) -> float | None:
    return round(float(Decimal(part) / Decimal(whole)), 4) if Decimal(whole) else None


def _spread(calls: list[CallRecord], policy: Policy | None) -> dict[str, Any]:
    used = sorted({c.vendor for c in calls if c.host_jurisdiction != "self" and c.outcome == "ok"})
    minimum = policy.vendor_spread.min_vendors if policy and policy.vendor_spread else None
    return {"vendors_in_use": used, "count": len(used), "min_vendors": minimum}
