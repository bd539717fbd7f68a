"""The HTML report and the dashboard in a real browser: Debian's chromium, driven by playwright.

The sample: the bundled documents run twice through scripted vendors on 127.0.0.1 under a policy
with a share cap, budgets and data classes (one run public, one confidential: residency denials).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import listening, run_cli, serving
from .test_policy_e2e import Fleet, write_policy

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
KEYS = {"POLYCASCADE_KEY_OPS": "ops-key-1", "POLYCASCADE_KEY_ACME": "acme-key-2"}

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),  # in CI, a missing browser fails
    reason="needs Debian's chromium (scripts/setup.sh installs it)",
)


@dataclass
class Sample:
    dir: Path
    ledger: Path
    policy: Path
    models: Path
    fleet: Fleet

    def args(self) -> list[str]:
        return ["--ledger", str(self.ledger), "--policy", str(self.policy), "--models", str(self.models)]

    def report(self, *extra: str) -> dict[str, Any]:
        done = run_cli("report", *self.args(), "--json", *extra)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    d = tmp_path_factory.mktemp("sample")
    fleet = Fleet()
    policy = write_policy(
        d, vendor_share={"max_share": 0.6, "min_volume_usd": "0.001"}, budgets={"per_day_usd": "5", "per_run_usd": "1"}
    )
    s = Sample(d, d / "ledger.db", policy, fleet.models_yaml(d / "models.yaml"), fleet)
    for data_class in ("public", "confidential"):
        done = run_cli("run", "summarise", "--input", "examples/documents", "--out", str(d / f"{data_class}.jsonl"),
                       "--data-class", data_class, "--no-local", "--no-progress", *s.args())  # fmt: skip
        assert done.returncode == 0, done.stderr
    yield s
    fleet.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def same_to_the_cent(shown: str, usd: str) -> bool:
    """Amounts under a cent are shown to six places: what is shown is the amount, to the cent at least."""
    value = Decimal(shown.removeprefix("$").replace(",", ""))
    return abs(value - Decimal(usd)) < Decimal("0.005") and (value != 0 or Decimal(usd) == 0)


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1300, "height": 2000})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(url)
    return page, requested


SECTIONS = ("spend_time", "shares", "jurisdictions", "budgets", "kinds", "denials", "top_tasks", "calls")
CHARTS = ("spend_time", "shares", "jurisdictions", "budgets", "denials")


def test_the_report_opens_from_disk_fetching_nothing_with_every_view_and_the_ledgers_totals(
    sample: Sample, browser: Any
) -> None:
    page_file = sample.dir / "out" / "report.html"
    done = run_cli("report", *sample.args(), "--html", str(page_file))
    assert done.returncode == 0, done.stderr
    data = sample.report()
    page, requested = open_page(browser, page_file.as_uri())
    for section in CHARTS:
        page.wait_for_selector(f"#chart-{section} .main-svg")  # plotly drew it
    assert all(page.locator(f"section#{s}").count() == 1 for s in SECTIONS)
    assert requested == [page_file.as_uri()]  # nothing else: no CDN, font or script fetched

    total = page.locator("#total")
    assert total.get_attribute("data-usd") == data["total_cost_usd"] and Decimal(data["total_cost_usd"]) > 0
    assert same_to_the_cent(total.inner_text(), data["total_cost_usd"])
    assert page.locator("#calls-count").inner_text().replace(",", "") == str(data["calls"])
    shares = page.locator("#shares tbody tr")
    assert shares.count() == len(data["by_vendor"]) >= 2
    first = shares.nth(0).locator("td")
    assert first.nth(0).inner_text() == data["by_vendor"][0]["vendor"]
    assert same_to_the_cent(first.nth(2).inner_text(), data["by_vendor"][0]["cost_usd"])
    assert page.locator("#chart-shares .shapelayer path").count() >= 1  # the cap line
    denials = {r["rule"] for r in data["denials"]}
    assert "residency" in denials  # confidential documents could not go to every vendor
    assert page.locator("#denials tbody tr").count() == len(data["denials"])
    assert page.locator("#budgets tbody tr").count() == len(data["budgets"]) >= 1
    page.screenshot(path=str(sample.dir / "out" / "report.png"), full_page=True)
    _screenshot_for_docs(page)


def test_a_call_opens_its_explanation_and_the_table_searches(sample: Sample, browser: Any) -> None:
    page_file = sample.dir / "out" / "search.html"
    assert run_cli("report", *sample.args(), "--html", str(page_file)).returncode == 0
    page, _ = open_page(browser, page_file.as_uri())
    rows = page.locator("#calls tbody tr")
    assert rows.count() > 1
    page.fill("#search", "confidential")
    assert rows.count() >= 1
    assert all("confidential" in rows.nth(i).inner_text() for i in range(rows.count()))
    rows.nth(0).click()
    dialog = page.locator("dialog#explanation")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "Candidates, ranked" in text and "residency" in text  # ranked candidates, the rule that rejected
    assert "Reservation" in text and "$" in text
    page.screenshot(path=str(sample.dir / "out" / "explanation.png"))


def test_japanese_labels(sample: Sample, browser: Any) -> None:
    page_file = sample.dir / "out" / "ja.html"
    assert run_cli("report", *sample.args(), "--html", str(page_file), "--lang", "ja").returncode == 0
    page, _ = open_page(browser, page_file.as_uri())
    page.wait_for_selector("#chart-spend_time .main-svg")
    assert page.locator("html").get_attribute("lang") == "ja"
    assert page.locator("h1").inner_text() == "polycascade レポート"
    assert page.locator("#spend_time h2").inner_text() == "ベンダー別支出の推移"
    assert page.locator("#shares th").nth(0).inner_text() == "ベンダー"
    page.screenshot(path=str(sample.dir / "out" / "ja.png"), full_page=True)
    bad = run_cli("report", *sample.args(), "--html", str(page_file), "--lang", "fr")
    assert bad.returncode != 0 and "lang 'fr': use one of en, ja" in bad.stderr


@pytest.fixture(scope="module")
def tenants(sample: Sample) -> Path:
    path = sample.dir / "tenants.yaml"
    path.write_text(
        "tenants:\n  default: {key_env: POLYCASCADE_KEY_OPS, admin: true}\n  acme: {key_env: POLYCASCADE_KEY_ACME}\n"
    )
    return path


@pytest.fixture(scope="module", params=["dashboard", "serve"])
def live(request: pytest.FixtureRequest, sample: Sample, tenants: Path) -> Iterator[str]:
    """The dashboard's root URL: `polycascade dashboard`, or the one `serve` mounts."""
    env = {**os.environ, **KEYS}
    args = [*sample.args(), "--tenants", str(tenants)]
    if request.param == "dashboard":
        with listening("dashboard", *args, env=env) as root:
            yield root
    else:
        with serving(*args, "--no-local", env=env) as base:
            yield base.removesuffix("/v1")


def test_the_dashboard_answers_the_right_key_in_the_browser_and_refuses_a_wrong_one(
    sample: Sample, browser: Any, live: str
) -> None:
    page, requested = open_page(browser, f"{live}/dashboard")
    page.fill("#key", "not-a-key")
    page.click("#login button")
    page.wait_for_selector("#login .refused")
    page.fill("#key", KEYS["POLYCASCADE_KEY_OPS"])
    page.click("#login button")
    for section in CHARTS:
        page.wait_for_selector(f"#chart-{section} .main-svg")
    data = sample.report()
    assert page.locator("#total").get_attribute("data-usd") == data["total_cost_usd"]
    assert page.locator("#calls-count").inner_text().replace(",", "") == str(data["calls"])
    assert {re.sub(r"/dashboard.*", "", url) for url in requested} == {live}  # only the server itself
    page.screenshot(path=str(sample.dir / f"{live.rsplit(':', 1)[1]}-dashboard.png"), full_page=True)


def test_the_dashboard_shows_new_calls_as_they_land(sample: Sample, browser: Any, tenants: Path) -> None:
    import shutil

    from polycascade.ledger import CallRecord, new_call_id
    from polycascade.sync import run_sync

    db = sample.dir / "live.db"
    shutil.copy(sample.ledger, db)
    args = ["--ledger", str(db), "--policy", str(sample.policy), "--models", str(sample.models)]
    with listening("dashboard", *args, "--tenants", str(tenants), "--refresh", "1", env={**os.environ, **KEYS}) as root:
        page, _ = open_page(browser, f"{root}/dashboard")
        page.fill("#key", KEYS["POLYCASCADE_KEY_OPS"])
        page.click("#login button")
        count = page.locator("#calls-count")
        count.wait_for()
        before = int(count.inner_text().replace(",", ""))

        async def land() -> None:
            from polycascade._ledger_sqlite import SQLiteLedger

            ledger = SQLiteLedger(db)
            await ledger.write(CallRecord(new_call_id(), "us/small", "OpenAI", "US", "ok", node="attempt",
                                          cost=Decimal("0.001"), data_class="public"))  # fmt: skip
            await ledger.close()

        run_sync(land())
        page.wait_for_function(  # no reload: the page asks again by itself
            "n => document.getElementById('calls-count')?.textContent.replace(/,/g, '') == n", arg=str(before + 1)
        )


def test_a_tenants_key_sees_its_own_calls_only(sample: Sample, live: str) -> None:
    url = f"{live}/dashboard/data.json"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    acme = {"Authorization": f"Bearer {KEYS['POLYCASCADE_KEY_ACME']}"}
    own = requests.get(url, headers=acme, timeout=30)
    assert own.status_code == 200 and own.json()["report"]["calls"] == 0  # the sample ran as tenant default
    assert own.json()["report"]["scope"]["tenant"] == "acme"
    theirs = requests.get(url, params={"tenant": "default"}, headers=acme, timeout=30)
    assert theirs.status_code == 400 and theirs.json()["error"]["param"] == "tenant"
    ops = {"Authorization": f"Bearer {KEYS['POLYCASCADE_KEY_OPS']}"}
    run_scoped = requests.get(url, params={"tenant": "default", "hours": "2"}, headers=ops, timeout=30).json()
    assert run_scoped["report"]["calls"] == sample.report("--tenant", "default", "--hours", "2")["calls"] > 0
    for key in KEYS.values():  # a key never comes back in what the server sends
        assert key not in requests.get(url, headers=ops, timeout=30).text


def test_the_sweeps_frontier_hovers_its_settings_and_clicks_to_a_per_kind_breakdown(
    tmp_path: Path, browser: Any
) -> None:
    from .test_backtest import synthetic

    traces, page_file = synthetic(tmp_path / "t.csv", 60), tmp_path / "sweep.html"
    done = run_cli("backtest", "--traces", str(traces), "--sweep", "--plot", str(tmp_path / "s.png"),
                   "--html", str(page_file), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    page, requested = open_page(browser, page_file.as_uri())
    page.wait_for_selector("#chart-pareto .main-svg")
    assert requested == [page_file.as_uri()]
    traces_drawn = page.locator("#chart-pareto .scatterlayer .trace")
    assert traces_drawn.count() == 2 + len(result["baselines"])  # settings, the front, one per baseline
    assert page.locator("#front tbody tr").count() == len(result["pareto"])
    box = traces_drawn.nth(1).locator("path.point").first.bounding_box()  # the front's cheapest point
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    hover = page.locator("#chart-pareto .hoverlayer .hovertext").first
    hover.wait_for()
    cheapest = result["pareto"][0]
    alike = [  # settings that landed on the very same point: the hover names one of them
        ", ".join(f"{k}={v}" for k, v in p["knobs"].items())
        for p in result["points"]
        if (p["accuracy"], p["total_cost_usd"]) == (cheapest["accuracy"], cheapest["total_cost_usd"])
    ]
    assert any(knobs in (hover.text_content() or "") for knobs in alike)
    page.mouse.click(x, y)
    details = page.locator("#details-pareto")
    details.locator("table").wait_for()
    kinds = set(cheapest["by_kind"])
    assert {r.split("\t")[0] for r in details.locator("tbody tr").all_inner_texts()} == kinds
    assert any(knobs in details.inner_text() for knobs in alike)
    no_sweep = run_cli("backtest", "--traces", str(traces), "--html", str(page_file))
    assert no_sweep.returncode != 0 and "--html draws the sweep's frontier: add --sweep" in no_sweep.stderr


def _screenshot_for_docs(page: Any) -> None:
    """`POLYCASCADE_SCREENSHOTS=docs pytest tests/test_pages.py` refreshes the README's picture."""
    if folder := os.environ.get("POLYCASCADE_SCREENSHOTS"):
        page.set_viewport_size({"width": 1300, "height": 1400})
        page.screenshot(path=str(Path(folder) / "report.png"))
