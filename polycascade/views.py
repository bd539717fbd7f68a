"""What `report`, `report --html` and the dashboard show: spend, shares, budgets, quality and denials
for a run, a tenant or a window, aggregated by the ledger's SQL over its running totals per hour
(`_ledger_rollup`), so a million calls cost a few thousand rows, not a million.

Windows start and end on the hour (the totals' bucket). Money stays exact: picodollars summed in
SQL, `Decimal` strings in the result.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ._ledger_rollup import HOUR
from ._ledger_sql import COLUMNS, to_record
from .insight import explained
from .ledger import IN_FLIGHT, SELF_HOSTED, Ledger, from_pico
from .records import frozen

if TYPE_CHECKING:
    from polycascade.policies.config import ExchangeRate, Policy

__all__ = ["Scope", "build_report", "recent_calls"]

TOP_TASKS = 20
CUBE = (
    "hour", "tenant", "vendor", "jurisdiction", "host_jurisdiction", "data_class", "task_kind", "model", "node",
    "outcome",
)  # fmt: skip


@frozen
class Scope:
    """Which calls: one run, one tenant, hours [since, until) (epoch seconds on the hour)."""

    run_id: str | None = None
    tenant: str | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def of(
        cls,
        policy: Policy | None = None,
        *,
        run_id: str | None = None,
        tenant: str | None = None,
        since_hours: float | None = None,
        now: float | None = None,
    ) -> Scope:
        """A run's calls; else the last `since_hours` (default: the policy's share window, or 24),
        counting the hour now running as the last."""
        if run_id is not None and since_hours is None:
            return cls(run_id=run_id, tenant=tenant)
        default = policy.vendor_share.window_hours if policy and policy.vendor_share else 24
        hours = max(1, math.ceil(default if since_hours is None else since_hours))
        end = (math.floor((time.time() if now is None else now) / HOUR) + 1) * HOUR
        return cls(run_id=run_id, tenant=tenant, since=end - hours * HOUR, until=end)

    def where(self, *, hourly: bool) -> tuple[str, tuple[Any, ...]]:
        """Its WHERE clause over the running totals (`hourly`) or the calls themselves."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("run_id", self.run_id), ("tenant", self.tenant)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.since is not None and self.until is not None:
            clauses.append("hour >= ? AND hour < ?" if hourly else "ts >= ? AND ts < ?")
            args += [int(self.since // HOUR), int(self.until // HOUR)] if hourly else [self.since, self.until]
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), tuple(args)


async def build_report(ledger: Ledger, scope: Scope, policy: Policy | None = None) -> dict[str, Any]:
    zone = ZoneInfo(policy.timezone if policy else "UTC")
    fx = policy.rate_on(datetime.now(zone).date()) if policy is not None and policy.in_yen else None
    cube = await _cube(ledger, scope)
    done = [r for r in cube if r["outcome"] != IN_FLIGHT]
    total = _pico(done)
    report: dict[str, Any] = {
        "scope": _scope_json(scope, zone),
        "policy": policy.name if policy else None,
        "timezone": zone.key,
        "currency": policy.currency if policy else "USD",
        **({"fx": fx.to_dict(), "total_cost_jpy": str(_yen(from_pico(total), fx))} if fx else {}),
        "calls": _calls(done),
        "total_cost_usd": str(from_pico(total)),
        "in_flight": _in_flight(cube),
        "by_vendor": _shares(done, "vendor", total, policy),
        "by_jurisdiction": _shares(done, "jurisdiction", total, None),
        "by_host_jurisdiction": _shares(done, "host_jurisdiction", total, None),
        "data_classes": _flows(done),
        "timeline": _timeline(done, zone),
        "outcomes": {o: _calls(rows) for o, rows in _group(cube, "outcome").items()},
        "escalations": _escalations(cube),
        "kinds": _kinds(cube),
        "denials": await _denials(ledger, scope),
        "budgets": _budgets(cube, policy, scope, zone, fx),
        "burn_down": _burn_down(done, zone),
        "top_tasks": await _top_tasks(ledger, scope),
        "vendor_spread": _spread(done, policy),
    }
    return report


async def recent_calls(
    ledger: Ledger, scope: Scope, *, timezone: str = "UTC", limit: int = 500
) -> list[dict[str, Any]]:
    """The latest calls in scope, each with its explanation (as `explain` gives it)."""
    zone = ZoneInfo(timezone)
    where, args = scope.where(hourly=False)
    statement = f"SELECT {', '.join(COLUMNS)} FROM {{calls}} {where} ORDER BY ts DESC LIMIT {int(limit)}"
    records = [to_record(row) for row in await ledger.totals(statement, *args)]  # one query, not one per call
    return [{**explained(rec), "when": _local(rec.ts, zone, seconds=True)} for rec in records]


# SQL ----------------------------------------------------------------------------------------------
async def _cube(ledger: Ledger, scope: Scope) -> list[dict[str, Any]]:
    where, args = scope.where(hourly=True)
    statement = (
        f"SELECT {', '.join(CUBE)}, SUM(calls), SUM(cost_pico), SUM(passes), SUM(fails), SUM(escalated) "
        f"FROM {{hourly}} {where} GROUP BY {', '.join(CUBE)} HAVING SUM(calls) <> 0"
    )
    names = (*CUBE, "calls", "pico", "passes", "fails", "escalated")
    return [
        {n: (int(v) if n in names[len(CUBE) :] or n == "hour" else v) for n, v in zip(names, row, strict=True)}
        for row in await ledger.totals(statement, *args)
    ]


async def _denials(ledger: Ledger, scope: Scope) -> list[dict[str, Any]]:
    """Rejections by rule and data class ("tried": the cascade's own bookkeeping, not a denial)."""
    where, args = scope.where(hourly=True)
    where = f"{where} {'AND' if where else 'WHERE'} rule <> 'tried'"
    rows = await ledger.totals(
        f"SELECT rule, data_class, SUM(denials) FROM {{denials}} {where} GROUP BY rule, data_class "
        "HAVING SUM(denials) <> 0",
        *args,
    )
    found = [{"rule": rule, "data_class": dc, "denials": int(n)} for rule, dc, n in rows]
    return sorted(found, key=lambda r: (-r["denials"], r["rule"], r["data_class"]))


async def _top_tasks(ledger: Ledger, scope: Scope) -> list[dict[str, Any]]:
    """The costliest tasks whose latest call falls in scope (their whole spend, calls in flight left out)."""
    where, args = scope.where(hourly=True)
    where = f"{where} {'AND' if where else 'WHERE'} calls <> 0"
    rows = await ledger.totals(
        f"SELECT run_id, task_id, task_kind, calls, cost_pico FROM {{tasks}} {where} "
        f"ORDER BY cost_pico DESC, run_id, task_id LIMIT {TOP_TASKS}",
        *args,
    )
    return [
        {"run_id": run, "task_id": task, "task_kind": kind, "calls": int(n), "cost_usd": str(from_pico(int(pico)))}
        for run, task, kind, n, pico in rows
    ]


# folding the cube ---------------------------------------------------------------------------------
def _calls(rows: Iterable[dict[str, Any]]) -> int:
    return sum(r["calls"] for r in rows)


def _pico(rows: Iterable[dict[str, Any]]) -> int:
    return sum(r["pico"] for r in rows)


def _group(rows: Iterable[dict[str, Any]], *keys: str) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r[keys[0]] if len(keys) == 1 else tuple(r[k] for k in keys)].append(r)
    return groups


def _shares(rows: list[dict[str, Any]], key: str, total: int, policy: Policy | None) -> list[dict[str, Any]]:
    cap = policy.vendor_share.max_share if policy and policy.vendor_share else None
    out = []
    for group, members in sorted(_group(rows, key).items(), key=lambda g: (-_pico(g[1]), g[0])):
        share = _pico(members) / total if total else 0.0
        row: dict[str, Any] = {key: group, "calls": _calls(members), "cost_usd": str(from_pico(_pico(members)))}
        row["share"] = round(share, 4)
        if cap is not None:
            row.update(cap=cap, within_cap=share <= cap + 1e-9)
        out.append(row)
    return out


def _flows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which data classes went where: vendor and host jurisdiction."""
    groups = _group(rows, "data_class", "jurisdiction", "host_jurisdiction")
    flows = []
    for (data_class, country, host), members in sorted(groups.items()):
        flows.append({"data_class": data_class, "jurisdiction": country, "host_jurisdiction": host,
                      "calls": _calls(members), "cost_usd": str(from_pico(_pico(members)))})  # fmt: skip
    return flows


def _timeline(rows: list[dict[str, Any]], zone: ZoneInfo) -> list[dict[str, Any]]:
    return [
        {"hour": _local(hour * HOUR, zone), "vendor": vendor, "calls": _calls(m), "cost_usd": str(from_pico(_pico(m)))}
        for (hour, vendor), m in sorted(_group(rows, "hour", "vendor").items())
    ]


def _escalations(cube: list[dict[str, Any]]) -> dict[str, Any]:
    """Each task's attempts form a chain: all but its last were followed by another (an escalation,
    a failover or a second opinion), so tasks = attempts − followed."""
    attempts = [r for r in cube if r["node"] == "attempt"]
    followed = sum(r["escalated"] for r in attempts)
    tasks = _calls(attempts) - followed
    return {"tasks": tasks, "escalations": followed, "rate": round(followed / tasks, 4) if tasks else 0.0}


def _kinds(cube: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task kind, model), over its attempts: pass rate, how often another attempt followed,
    and what a verified answer cost (its spend over its passes)."""
    out = []
    for (kind, model), m in sorted(_group((r for r in cube if r["node"] == "attempt"), "task_kind", "model").items()):
        calls, passes, fails = _calls(m), sum(r["passes"] for r in m), sum(r["fails"] for r in m)
        cost = from_pico(_pico(m))
        out.append({
            "task_kind": kind, "model": model, "calls": calls, "verdicts": passes + fails,
            "pass_rate": round(passes / (passes + fails), 4) if passes + fails else None,
            "escalation_rate": round(sum(r["escalated"] for r in m) / calls, 4) if calls else 0.0,
            "cost_usd": str(cost), "cost_per_verified_usd": str(cost / passes) if passes else None,
        })  # fmt: skip
    return out


def _in_flight(cube: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for r in cube if r["outcome"] == IN_FLIGHT]
    return {"calls": _calls(rows), "cost_usd": str(from_pico(_pico(rows)))}


def _budgets(
    cube: list[dict[str, Any]], policy: Policy | None, scope: Scope, zone: ZoneInfo, fx: ExchangeRate | None
) -> list[dict[str, Any]]:
    """Each budget the scope can show: spent, reserved (calls in flight), left; in yen too under a yen policy."""
    if policy is None:
        return []
    b = policy.budgets.in_usd(fx.jpy_per_usd) if fx is not None and policy.budgets.in_yen else policy.budgets
    today = _day_start(time.time(), zone)
    todays = [r for r in cube if r["hour"] * HOUR >= today]
    rows: list[tuple[str, Decimal, list[dict[str, Any]]]] = []
    if scope.run_id and b.per_run_usd is not None:
        rows.append(("run", b.per_run_usd, cube))
    if b.per_day_usd is not None:
        rows.append(("day", b.per_day_usd, todays))
    for tenant, limit in sorted(b.per_tenant_day_usd.items()):
        if scope.tenant in (None, tenant):
            rows.append((f"tenant {tenant} (day)", limit, [r for r in todays if r["tenant"] == tenant]))
    return [_budget_row(name, limit, members, fx) for name, limit, members in rows]


def _budget_row(name: str, limit: Decimal, rows: list[dict[str, Any]], fx: ExchangeRate | None) -> dict[str, Any]:
    spent = from_pico(_pico(r for r in rows if r["outcome"] != IN_FLIGHT))
    reserved = from_pico(_pico(r for r in rows if r["outcome"] == IN_FLIGHT))
    amounts = {"limit": limit, "spent": spent, "reserved": reserved, "left": max(limit - spent - reserved, Decimal(0))}
    row: dict[str, Any] = {"budget": name, **{f"{k}_usd": str(v) for k, v in amounts.items()}}
    row["used"] = round(float((spent + reserved) / limit), 4) if limit else None
    if fx is not None:
        row.update({f"{k}_jpy": str(_yen(v, fx)) for k, v in amounts.items()})
    return row


def _yen(usd: Decimal, fx: ExchangeRate) -> Decimal:
    """Exact: rounded to whole yen only where it is shown."""
    return (usd * fx.jpy_per_usd).normalize()


def _burn_down(rows: list[dict[str, Any]], zone: ZoneInfo) -> list[dict[str, Any]]:
    """Spend so far at the end of each hour with calls, from zero at the start of the first."""
    hours = sorted(_group(rows, "hour").items())
    running, out = 0, [{"hour": _local(hours[0][0] * HOUR, zone), "spent_usd": "0"}] if hours else []
    for hour, members in hours:
        running += _pico(members)
        out.append({"hour": _local((hour + 1) * HOUR, zone), "spent_usd": str(from_pico(running))})
    return out


def _spread(rows: list[dict[str, Any]], policy: Policy | None) -> dict[str, Any]:
    used = sorted({r["vendor"] for r in rows if r["host_jurisdiction"] != SELF_HOSTED and r["outcome"] == "ok"})
    minimum = policy.vendor_spread.min_vendors if policy and policy.vendor_spread else None
    return {"vendors_in_use": used, "count": len(used), "min_vendors": minimum}


# time -----------------------------------------------------------------------------------------------
def _local(ts: float, zone: ZoneInfo, *, seconds: bool = False) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _day_start(ts: float, zone: ZoneInfo) -> float:
    moment = datetime.fromtimestamp(ts, zone)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _scope_json(scope: Scope, zone: ZoneInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if scope.run_id:
        found["run_id"] = scope.run_id
    if scope.tenant:
        found["tenant"] = scope.tenant
    if scope.since is not None and scope.until is not None:
        found.update(last_hours=int((scope.until - scope.since) // HOUR), **{
            "from": _local(scope.since, zone), "until": _local(scope.until, zone)})  # fmt: skip
    return found
