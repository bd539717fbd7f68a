"""Pages drawn in the browser: `report --html`, the dashboard, `backtest --sweep --html`.

Python describes every chart as Plotly figure data (traces and layout) and every table as rows;
`data/report.js` places them, drawn by plotly.js inlined from the `plotly` wheel: a page fetches
nothing, so it opens from disk on an air-gapped machine or from a mail.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["LANGS", "fact", "figure", "render", "section", "shell", "table"]

LANGS = ("en", "ja")
_FIG_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 30, "b": 60}, "height": 340, "legend": {"orientation": "h"}}


def shell(lang: str = "en", currency: str = "USD") -> dict[str, Any]:
    """What a page needs before its data: the language and its labels (amounts in `currency`)."""
    if lang not in LANGS:
        raise ConfigError(f"lang {lang!r}: use one of {', '.join(LANGS)}", parameter="lang")
    labels = _labels(lang)
    if currency == "JPY":  # the same columns, shown in yen
        labels = {k: v.replace("(USD)", "(JPY)").replace("（米ドル）", "（円）") for k, v in labels.items()}
    return {"lang": lang, "labels": labels}


def render(data: dict[str, Any], *, live: str | None = None, refresh_s: float = 15) -> str:
    """The whole page: plotly.js, our script and style inlined; `data` embedded (a `shell` when
    `live` names the dashboard's data URL, fetched with the key the user types every `refresh_s`)."""
    embedded = json.dumps(data, ensure_ascii=False, default=str)
    embedded = embedded.replace("</", "<\\/")  # the data cannot close its <script> element
    attrs = f' data-live="{live}" data-refresh="{refresh_s:g}"' if live else ""
    return (
        f'<!doctype html>\n<html lang="{data["lang"]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>polycascade</title><style>{_asset('report.css')}</style>"
        f"<script>{_plotly_js()}</script></head>"
        f'<body{attrs}><main id="app"></main>'
        f'<script id="polycascade-data" type="application/json">{embedded}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def fact(label: str, value: Any, form: str = "text", id: str | None = None) -> dict[str, Any]:
    """A headline figure; `form` usd, count or text says how the page formats it."""
    return {"label": label, "value": value, "form": form, **({"id": id} if id else {})}


def figure(traces: list[dict[str, Any]], **layout: Any) -> dict[str, Any]:
    return {"data": traces, "layout": {**_FIG_LAYOUT, **layout}}


def section(key: str, t: dict[str, str], **parts: Any) -> dict[str, Any]:
    return {"id": key, "title": t[f"section_{key}"], **{k: v for k, v in parts.items() if v is not None}}


def table(rows: list[dict[str, Any]], t: dict[str, str]) -> dict[str, Any]:
    """Rows of dicts as a table: columns from the first row, headed by their labels."""
    columns = list(rows[0]) if rows else []
    cells = [[r.get(c) for c in columns] for r in rows]
    labels = [t.get(c) or t.get(c.removesuffix("_jpy") + "_usd", c) for c in columns]  # limit_jpy: as limit_usd
    return {"columns": columns, "labels": labels, "rows": cells}


def _asset(name: str) -> str:
    return resources.files("polycascade").joinpath("data", name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    try:
        import plotly
    except ImportError:
        raise ConfigError("HTML pages draw with plotly.js: pip install 'polycascade[report]'") from None
    script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return script.read_text(encoding="utf-8").replace("</script", "<\\/script")


def _labels(lang: str) -> dict[str, str]:
    import yaml

    labels = yaml.safe_load(_asset("labels.yaml"))
    return {key: names.get(lang) or names["en"] for key, names in labels.items()}
