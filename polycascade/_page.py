"""The report as a page: `report --html` writes it to one file, the dashboard serves it live.

Python describes every chart as Plotly figure data (traces and layout) and every table as rows;
`data/report.js` draws them with plotly.js, inlined from the `plotly` wheel: the file fetches
nothing, so it opens from disk on an air-gapped machine or from a mail.
"""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["LANGS", "page_data", "render", "shell"]

LANGS = ("en", "ja")
_FIG_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 30, "b": 60}, "height": 340, "legend": {"orientation": "h"}}


def shell(lang: str = "en") -> dict[str, Any]:
    """What a page needs before its data: the language and its labels."""
    if lang not in LANGS:
        raise ConfigError(f"lang {lang!r}: use one of {', '.join(LANGS)}", parameter="lang")
    return {"lang": lang, "labels": _labels(lang)}


def page_data(report: dict[str, Any], calls: list[dict[str, Any]], lang: str = "en") -> dict[str, Any]:
    """What the page shows: headline figures, charts and tables, with labels in `lang`."""
    page = shell(lang)
    t = page["labels"]
    headline = {"total_usd": report["total_cost_usd"]} | {
        key: report[key]
        for key in ("calls", "policy", "scope", "timezone", "in_flight", "escalations", "vendor_spread")
    }
    return {
        **page,
        "headline": headline,
        "sections": [
            _section("spend_time", t, figure=_spend_over_time(report, t)),
            _section("shares", t, figure=_shares(report, t), table=_table(report["by_vendor"], t)),
            _section("jurisdictions", t, figure=_jurisdictions(report, t), table=_table(report["data_classes"], t)),
            _section("budgets", t, figure=_burn_down(report, t), table=_table(report["budgets"], t)),
            _section("kinds", t, table=_table(report["kinds"], t)),
            _section("denials", t, figure=_denials(report, t), table=_table(report["denials"], t)),
            _section("top_tasks", t, table=_table(report["top_tasks"], t)),
        ],
        "calls": [_call_row(c) for c in calls],
    }


def render(data: dict[str, Any], *, live: str | None = None) -> str:
    """The whole page: plotly.js, our script and style inlined; `data` embedded (a `shell` when
    `live` names the dashboard's data URL, fetched with the key the user types)."""
    embedded = json.dumps(data, ensure_ascii=False, default=str)
    embedded = embedded.replace("</", "<\\/")  # the data cannot close its <script> element
    lang = data["lang"]
    attrs = f' data-live="{live}"' if live else ""
    return (
        f'<!doctype html>\n<html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>polycascade report</title><style>{_asset('report.css')}</style>"
        f"<script>{_plotly_js()}</script></head>"
        f'<body{attrs}><main id="app"></main>'
        f'<script id="polycascade-data" type="application/json">{embedded}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


# charts -------------------------------------------------------------------------------------------
def _figure(traces: list[dict[str, Any]], **layout: Any) -> dict[str, Any]:
    return {"data": traces, "layout": {**_FIG_LAYOUT, **layout}}


def _spend_over_time(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    by_vendor: dict[str, dict[str, float]] = defaultdict(dict)
    for row in report["timeline"]:
        by_vendor[row["vendor"]][row["hour"]] = float(row["cost_usd"])
    traces = [
        {"type": "bar", "name": vendor, "x": list(points), "y": list(points.values())}
        for vendor, points in sorted(by_vendor.items())
    ]
    return _figure(traces, barmode="stack", yaxis={"title": {"text": t["cost_usd"]}})


def _shares(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    rows = report["by_vendor"]
    trace = {"type": "bar", "name": t["share"], "x": [r["vendor"] for r in rows], "y": [r["share"] for r in rows]}
    cap = next((r["cap"] for r in rows if "cap" in r), None)
    shapes = [] if cap is None else [{
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": cap, "y1": cap,
        "line": {"color": "#c0392b", "dash": "dash"},
    }]  # fmt: skip
    notes = [] if cap is None else [{
        "xref": "paper", "x": 1, "y": cap, "text": f"{t['cap']} {cap:.0%}", "showarrow": False, "yshift": 10,
    }]  # fmt: skip
    return _figure([trace], yaxis={"tickformat": ".0%", "rangemode": "tozero"}, shapes=shapes, annotations=notes)


def _jurisdictions(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    traces = []
    for key, column in (("by_jurisdiction", "jurisdiction"), ("by_host_jurisdiction", "host_jurisdiction")):
        rows = report[key]
        traces.append({"type": "bar", "name": t[key], "x": [r[column] for r in rows],
                       "y": [float(r["cost_usd"]) for r in rows]})  # fmt: skip
    return _figure(traces, barmode="group", yaxis={"title": {"text": t["cost_usd"]}})


def _burn_down(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    points = report["burn_down"]
    x = [p["hour"] for p in points]
    spent = {"type": "scatter", "mode": "lines+markers", "name": t["spent_usd"], "x": x,
             "y": [float(p["spent_usd"]) for p in points]}  # fmt: skip
    traces: list[dict[str, Any]] = [spent]
    for budget in report["budgets"]:
        limit = float(budget["limit_usd"])
        traces.append({"type": "scatter", "mode": "lines", "name": f"{t['limit_usd']}: {budget['budget']}",
                       "x": [x[0], x[-1]] if x else [], "y": [limit, limit], "line": {"dash": "dash"}})  # fmt: skip
    return _figure(traces, yaxis={"title": {"text": t["cost_usd"]}, "rangemode": "tozero"})


def _denials(report: dict[str, Any], t: dict[str, str]) -> dict[str, Any]:
    by_class: dict[str, dict[str, int]] = defaultdict(dict)
    for row in report["denials"]:
        by_class[row["data_class"]][row["rule"]] = row["denials"]
    traces = [{"type": "bar", "name": dc, "x": list(by_rule), "y": list(by_rule.values())}
              for dc, by_rule in by_class.items()]  # fmt: skip
    return _figure(traces, barmode="stack", yaxis={"title": {"text": t["denials"]}})


# tables -------------------------------------------------------------------------------------------
def _section(key: str, t: dict[str, str], **parts: Any) -> dict[str, Any]:
    return {"id": key, "title": t[f"section_{key}"], **{k: v for k, v in parts.items() if v is not None}}


def _table(rows: list[dict[str, Any]], t: dict[str, str]) -> dict[str, Any] | None:
    if not rows:
        return {"columns": [], "labels": [], "rows": []}
    columns = list(rows[0])
    cells = [[r.get(c) for c in columns] for r in rows]
    return {"columns": columns, "labels": [t.get(c, c) for c in columns], "rows": cells}


SEARCHED = ("call_id", "run_id", "task_id", "node", "model", "vendor", "jurisdiction", "data_class", "outcome")


def _call_row(call: dict[str, Any]) -> dict[str, Any]:
    return {**call, "search": " ".join(str(call.get(k) or "") for k in SEARCHED)}


# assets -------------------------------------------------------------------------------------------
def _asset(name: str) -> str:
    return resources.files("polycascade").joinpath("data", name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    try:
        import plotly
    except ImportError:
        raise ConfigError("the HTML report draws with plotly.js: pip install 'polycascade[report]'") from None
    script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return script.read_text(encoding="utf-8").replace("</script", "<\\/script")


def _labels(lang: str) -> dict[str, str]:
    import yaml

    table = yaml.safe_load(_asset("labels.yaml"))
    return {key: names.get(lang) or names["en"] for key, names in table.items()}
