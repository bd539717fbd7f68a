"""The ledger report as a page (`report --html`, the dashboard): charts and tables from `views`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._page import fact, figure, section, shell, table

__all__ = ["report_page"]

SEARCHED = ("call_id", "run_id", "task_id", "node", "model", "vendor", "jurisdiction", "data_class", "outcome")


def report_page(report: dict[str, Any], calls: list[dict[str, Any]], lang: str = "en") -> dict[str, Any]:
    """What the page shows: headline figures, charts and tables, with labels in `lang`."""
    fx = report.get("fx")
    page = shell(lang, "JPY" if fx else "USD")
    t, m = page["labels"], _Money(Decimal(fx["jpy_per_usd"]) if fx else None)
    scope = " · ".join(f"{k} {v}" for k, v in report["scope"].items())
    rate = f" · {fx['jpy_per_usd']} JPY/USD ({fx['as_of']})" if fx else ""
    spread, escalations, flight = report["vendor_spread"], report["escalations"], report["in_flight"]
    minimum = f" ({t['min_vendors']} {spread['min_vendors']})" if spread["min_vendors"] else ""
    return {
        **page,
        "title": t["title"],
        "subtitle": f"{t['scope']}: {scope} · {t['policy']}: {report['policy'] or '—'} · "
        f"{t['timezone']}: {report['timezone']}{rate}",
        "fx": fx,
        "facts": [
            fact(t["total"], report["total_cost_usd"], "usd", id="total"),
            fact(t["calls"], report["calls"], "count", id="calls-count"),
            fact(f"{t['in_flight']} · {flight['calls']}", flight["cost_usd"], "usd"),
            fact(t["escalations"], f"{escalations['escalations']} / {escalations['tasks']}"),
            fact(t["vendors_in_use"], f"{spread['count']}{minimum}"),
        ],
        "sections": [
            section("spend_time", t, figure=_spend_over_time(report, t, m)),
            section("shares", t, figure=_shares(report, t), table=table(report["by_vendor"], t)),
            section("jurisdictions", t, figure=_jurisdictions(report, t, m), table=table(report["data_classes"], t)),
            section("budgets", t, figure=_burn_down(report, t, m), table=table(_budget_rows(report, fx), t)),
            section("kinds", t, table=table(report["kinds"], t)),
            section("denials", t, figure=_denials(report, t), table=table(report["denials"], t)),
            section("top_tasks", t, table=table(report["top_tasks"], t)),
        ],
        "report": report,  # what `report --json` prints, for scripts reading the dashboard
        "calls": [{**c, "search": " ".join(str(c.get(k) or "") for k in SEARCHED)} for c in calls],
    }


@dataclass(frozen=True)
class _Money:
    """Chart amounts in the report's currency: USD as recorded, or yen at its rate."""

    jpy_per_usd: Decimal | None

    def amount(self, usd: str) -> float:
        return float(Decimal(usd) * self.jpy_per_usd) if self.jpy_per_usd else float(usd)

    def axis(self, t: dict[str, str]) -> dict[str, Any]:
        prefix = "¥" if self.jpy_per_usd else "$"
        return {"title": {"text": t["cost_usd"]}, "tickprefix": prefix, "exponentformat": "none", "rangemode": "tozero"}


def _budget_rows(report: dict[str, Any], fx: dict[str, str] | None) -> list[dict[str, Any]]:
    """Under a yen policy, the budgets in yen only."""
    if not fx:
        return list(report["budgets"])
    return [
        {"budget": row["budget"], **{k: v for k, v in row.items() if k.endswith("_jpy")}, "used": row["used"]}
        for row in report["budgets"]
    ]


def _spend_over_time(report: dict[str, Any], t: dict[str, str], m: _Money) -> dict[str, Any]:
    by_vendor: dict[str, dict[str, float]] = defaultdict(dict)
    for row in report["timeline"]:
        by_vendor[row["vendor"]][row["hour"]] = m.amount(row["cost_usd"])
    traces = [
        {"type": "bar", "name": vendor, "x": list(points), "y": list(points.values())}
        for vendor, points in sorted(by_vendor.items())
    ]
    return figure(traces, barmode="stack", yaxis=m.axis(t))


def _shares(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    rows = report["by_vendor"]
    trace = {"type": "bar", "name": t["share"], "x": [r["vendor"] for r in rows], "y": [r["share"] for r in rows]}
    cap = next((r["cap"] for r in rows if "cap" in r), None)
    if cap is None:
        return figure([trace], yaxis={"tickformat": ".0%", "rangemode": "tozero"})
    line = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": cap, "y1": cap,
            "line": {"color": "#c0392b", "dash": "dash"}}  # fmt: skip
    note = {"xref": "paper", "x": 1, "y": cap, "text": f"{t['cap']} {cap:.0%}", "showarrow": False, "yshift": 10}
    return figure([trace], yaxis={"tickformat": ".0%", "rangemode": "tozero"}, shapes=[line], annotations=[note])


def _jurisdictions(report: dict[str, Any], t: dict[str, str], m: _Money) -> dict[str, Any]:
    traces = []
    for key, column in (("by_jurisdiction", "jurisdiction"), ("by_host_jurisdiction", "host_jurisdiction")):
        rows = report[key]
        traces.append({"type": "bar", "name": t[key], "x": [r[column] for r in rows],
                       "y": [m.amount(r["cost_usd"]) for r in rows]})  # fmt: skip
    return figure(traces, barmode="group", yaxis=m.axis(t))


def _burn_down(report: dict[str, Any], t: dict[str, str], m: _Money) -> dict[str, Any]:
    points = report["burn_down"]
    x = [p["hour"] for p in points]
    spent = {"type": "scatter", "mode": "lines+markers", "name": t["spent_usd"], "x": x,
             "y": [m.amount(p["spent_usd"]) for p in points]}  # fmt: skip
    traces: list[dict[str, Any]] = [spent]
    for budget in report["budgets"]:
        limit = m.amount(budget["limit_usd"])
        traces.append({"type": "scatter", "mode": "lines", "name": f"{t['limit_usd']}: {budget['budget']}",
                       "x": [x[0], x[-1]] if x else [], "y": [limit, limit], "line": {"dash": "dash"}})  # fmt: skip
    return figure(traces, yaxis=m.axis(t))


def _denials(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    by_class: dict[str, dict[str, int]] = defaultdict(dict)
    for row in report["denials"]:
        by_class[row["data_class"]][row["rule"]] = row["denials"]
    traces = [{"type": "bar", "name": dc, "x": list(by_rule), "y": list(by_rule.values())}
              for dc, by_rule in by_class.items()]  # fmt: skip
    return figure(traces, barmode="stack", yaxis={"title": {"text": t["denials"]}})
