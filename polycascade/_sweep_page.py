"""`backtest --sweep --html`: every setting tried, the Pareto front and the baselines, as one page.

Hovering a point shows its settings; clicking it shows how it did per task kind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ._page import fact, figure, section, shell, table

__all__ = ["sweep_page"]

SYMBOLS = {"best_single": "square", "cheapest": "triangle-down", "oracle": "star", "threshold": "diamond",
           "cascade": "cross"}  # fmt: skip


def sweep_page(result: dict[str, Any], lang: str = "en") -> dict[str, Any]:
    page = shell(lang)
    t = page["labels"]
    points, baselines = result["points"], result["baselines"]
    best = baselines.get("best_single")
    return {
        **page,
        "title": t["sweep_title"],
        "subtitle": f"{t['settings_tried']}: {len(points)} · {t['front_points']}: {len(result['pareto'])}",
        "facts": [
            fact(t["best_single"], f"{best['accuracy']:.1%} · ${Decimal(best['total_cost_usd']):.2f}" if best else "—"),
            fact(t["cheapest_at_best"], _cheapest_at(result, best, t), id="cheapest-at-best"),
            fact(t["settings_tried"], len(points), "count"),
        ],
        "sections": [
            section("pareto", t, figure=_frontier(result, t), details=_details(result, t)),
            section("front", t, table=table([_row(p) for p in result["pareto"]], t)),
            section("baselines", t, table=table([_baseline_row(n, b) for n, b in baselines.items()], t)),
        ],
    }


def _cheapest_at(result: dict[str, Any], best: dict[str, Any] | None, t: dict[str, str]) -> str:
    if best is None:
        return "—"
    reaching = [p for p in result["pareto"] if p["accuracy"] >= best["accuracy"]]
    if not reaching:
        return t["none_reaches"]
    p = reaching[0]  # the front is cheapest first
    return f"{_knobs(p)}: {p['accuracy']:.1%} · {p['cost_vs_best_single']:.0%}"


def _frontier(result: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    points, front = result["points"], result["pareto"]
    index = {id(p): i for i, p in enumerate(points)}
    traces = [
        _scatter(t["polycascade_settings"], points, [f"p{i}" for i in range(len(points))], mode="markers",
                 marker={"color": "#9aa7b8", "size": 7}),
        _scatter(t["pareto_front"], front, [f"p{index[id(p)]}" for p in front], mode="lines+markers",
                 marker={"color": "#1f6feb", "size": 9}),
    ]  # fmt: skip
    for name, b in result["baselines"].items():
        traces.append(_scatter(name, [b], [f"b:{name}"], mode="markers", hover=[f"{name}: {b['models']}"],
                               marker={"symbol": SYMBOLS.get(name, "x"), "size": 14}))  # fmt: skip
    costs = [Decimal(p["total_cost_usd"]) for p in points]
    layout: dict[str, Any] = {
        "height": 520, "hovermode": "closest",
        "xaxis": {"title": {"text": t["total_cost_usd"]}, "type": "log" if all(costs) else "linear"},
        "yaxis": {"title": {"text": t["accuracy"]}, "tickformat": ".0%"},
    }  # fmt: skip
    if best := result["baselines"].get("best_single"):  # the accuracy to reach
        level = best["accuracy"]
        line = {"color": "#888", "dash": "dash", "width": 1}
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": level, "y1": level, "line": line}]
    return figure(traces, **layout)


def _scatter(
    name: str, points: list[dict[str, Any]], keys: list[str], *, mode: str, marker: dict[str, Any],
    hover: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    texts = hover or [f"{_knobs(p)}<br>{p['accuracy']:.1%} · ${p['total_cost_usd']}" for p in points]
    return {
        "type": "scatter", "mode": mode, "name": name, "marker": marker, "customdata": keys, "hovertext": texts,
        "hoverinfo": "text", "x": [float(p["total_cost_usd"]) for p in points], "y": [p["accuracy"] for p in points],
    }  # fmt: skip


def _details(result: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    """Per-kind tables, one per point and baseline, shown when it is clicked."""
    tables = {
        f"p{i}": {"title": f"{t['kind_breakdown']}: {_knobs(p)}", "table": _kinds(p, t)}
        for i, p in enumerate(result["points"])
    }
    for name, b in result["baselines"].items():
        tables[f"b:{name}"] = {"title": f"{t['kind_breakdown']}: {name}", "table": _kinds(b, t)}
    return {"hint": t["click_hint"], "tables": tables}


def _kinds(point: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    rows = [{"task_kind": kind, **numbers} for kind, numbers in (point.get("by_kind") or {}).items()]
    return table(rows, t)


def _knobs(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point["knobs"].items())


def _row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": _knobs(p), "accuracy": p["accuracy"], "total_cost_usd": p["total_cost_usd"],
        "cost_vs_best_single": p["cost_vs_best_single"], "escalation_rate": p["escalation_rate"],
        "violations": sum(p["violations"].values()),
    }  # fmt: skip


def _baseline_row(name: str, b: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": name, "models": ", ".join(b["models"]) if isinstance(b["models"], list) else b["models"],
        "accuracy": b["accuracy"], "total_cost_usd": b["total_cost_usd"],
        "cost_vs_best_single": b["cost_vs_best_single"], "cost_per_correct_usd": b["cost_per_correct_usd"],
    }  # fmt: skip
