"""Budgets and reports in yen: the rate from the policy or its file, the ledger in exact USD."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from polycascade import BudgetExceeded, Task
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.catalog import Catalog
from polycascade.errors import PolicyError
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.policies.config import load_policy

from .conftest import run_cli
from .test_pages import CHROMIUM, browser, open_page  # noqa: F401 - `browser` is a fixture
from .test_policy_e2e import FLEET, Fleet, cascade

TODAY = date.today()
RATES = f"date,jpy_per_usd\n{TODAY - timedelta(days=30)},149.80\n{TODAY - timedelta(days=1)},151.25\n"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet()
    yield f
    f.server.stop()


def yen_policy(tmp_path: Path, **budgets: object) -> Path:
    (tmp_path / "rates.csv").write_text(RATES)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "yen", "timezone": "Asia/Tokyo", "currency": "JPY", "exchange_rates_file": "rates.csv",
        "models": [m[0] for m in FLEET], "routing": {"threshold": 0.5, "max_rungs": 1},
        "data_classes": {"public": {}}, "default_data_class": "public", "budgets": budgets,
    }))  # fmt: skip
    return path


def test_a_run_under_a_yen_policy_reports_and_exports_yen_at_the_rate_and_keeps_usd_exact(
    fleet: Fleet, tmp_path: Path
) -> None:
    import asyncio

    policy, db = yen_policy(tmp_path, per_day_jpy=10_000), tmp_path / "ledger.db"

    async def work() -> list[Any]:
        ledger = SQLiteLedger(db)
        c = cascade(fleet, policy, ledger)
        results = [await c.run(Task(f"Question {i}", data_class="public", run_id="r")) for i in range(4)]
        calls = await ledger.calls()
        await ledger.close()
        assert all(r.answer for r in results)
        return calls

    calls = asyncio.run(work())
    rate = Decimal("151.25")  # yesterday's: the latest on or before today
    spec = {m[0]: (Decimal(m[4]), Decimal(m[5])) for m in FLEET}
    for c in calls:  # USD as the vendor bills it, not yen
        price_in, price_out = spec[c.model]
        assert c.cost == (c.input_tokens * price_in + c.output_tokens * price_out) / 1_000_000
        assert c.decision is not None
        assert c.decision["fx"] == {"currency": "JPY", "jpy_per_usd": "151.25", "as_of": str(TODAY - timedelta(1))}
    total = sum((c.cost for c in calls), Decimal(0))

    args = ["--ledger", str(db), "--policy", str(policy), "--models", str(fleet.models_yaml(tmp_path / "m.yaml"))]
    report = json.loads(run_cli("report", *args, "--json").stdout)
    assert report["currency"] == "JPY" and report["fx"]["jpy_per_usd"] == "151.25"
    assert Decimal(report["total_cost_usd"]) == total
    assert Decimal(report["total_cost_jpy"]) == total * rate  # exact: rounding is for display only
    day = next(b for b in report["budgets"] if b["budget"] == "day")
    assert Decimal(day["limit_jpy"]) == Decimal(10_000) * Decimal(day["limit_usd"]) * rate / Decimal(10_000)
    assert Decimal(day["spent_jpy"]) == total * rate
    text = run_cli("report", *args).stdout
    assert "in yen: ¥" in text and "151.25 JPY/USD" in text

    exported = list(csv.DictReader(io.StringIO(run_cli("export", "--ledger", str(db)).stdout)))
    assert len(exported) == len(calls)
    for row in exported:
        assert Decimal(row["cost_jpy"]) == Decimal(row["cost_usd"]) * rate and row["jpy_per_usd"] == "151.25"
    explained = run_cli("explain", calls[0].call_id, "--ledger", str(db)).stdout
    assert "in yen: ¥" in explained and "151.25 JPY/USD" in explained


async def test_a_yen_budget_holds_at_the_days_rate(fleet: Fleet, tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    c = cascade(fleet, yen_policy(tmp_path, per_run_jpy="0.005"), ledger)  # half a sen: $0.000033 at 151.25
    outcomes = [await _run(c, i) for i in range(40)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert refused and refused[0].limit == Decimal("0.000033057851")  # ¥0.005 / 151.25, rounded down
    spent = sum((r.cost for r in await ledger.calls()), Decimal(0))
    assert spent * Decimal("151.25") <= Decimal("0.005")
    await ledger.close()


async def _run(c: Cascade, i: int) -> object:
    try:
        return await c.run(Task(f"Question {i}", data_class="public", run_id="wallet", max_tokens=50))
    except BudgetExceeded as exc:
        return exc


def test_rates_are_never_guessed(tmp_path: Path) -> None:
    path = yen_policy(tmp_path)
    (tmp_path / "rates.csv").write_text("date,jpy_per_usd\n2026-12-01,151.2\n2026-12-02,abc\n")
    with pytest.raises(PolicyError, match=r"rates.csv:3: field 'jpy_per_usd'"):
        load_policy(path, resolve_models=False)
    (tmp_path / "rates.csv").write_text(f"date,jpy_per_usd\n{TODAY + timedelta(days=3)},151.2\n")
    policy = load_policy(path, resolve_models=False).policy
    with pytest.raises(PolicyError, match=r"no JPY rate on or before"):
        policy.rate_on(TODAY)
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: p\ncurrency: JPY\nmodels: [gpt-4o-mini]\n")
    with pytest.raises(PolicyError, match=r"needs a rate: exchange_rates"):
        load_policy(bare)
    both = tmp_path / "both.yaml"
    both.write_text("name: p\nmodels: [gpt-4o-mini]\nexchange_rates: [{jpy_per_usd: 150, as_of: 2026-12-01}]\n"
                    "budgets: {per_run_usd: 1, per_run_jpy: 150}\n")  # fmt: skip
    with pytest.raises(PolicyError, match=r"give per_run_usd or per_run_jpy, not both"):
        load_policy(both)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_the_page_of_a_yen_policy_shows_yen(fleet: Fleet, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    from polycascade.sync import run_sync  # playwright's own loop runs in this thread

    policy, db = yen_policy(tmp_path, per_day_jpy=10_000), tmp_path / "ledger.db"

    async def work() -> None:
        ledger = SQLiteLedger(db)
        await cascade(fleet, policy, ledger).run(Task("Question", data_class="public"))
        await ledger.close()

    run_sync(work())
    page_file = tmp_path / "yen.html"
    args = ["--ledger", str(db), "--policy", str(policy), "--models", str(fleet.models_yaml(tmp_path / "m.yaml"))]
    assert run_cli("report", *args, "--html", str(page_file), "--lang", "ja").returncode == 0
    page, _ = open_page(browser, page_file.as_uri())
    page.wait_for_selector("#chart-spend_time .main-svg")
    assert page.locator("#total").inner_text().startswith("￥")
    assert "151.25 JPY/USD" in page.locator(".scope").inner_text()
    assert page.locator("#budgets th").nth(1).inner_text() == "上限（円）"


def test_the_worked_example_of_the_japanese_readme_runs_offline(tmp_path: Path) -> None:
    """README.ja.md's example: Japanese contracts stay in Japan (here: on the local model, no keys),
    the press release goes anywhere, the report is in yen, nothing left the country."""
    root = Path(__file__).parents[1]
    policy = str(root / "examples/jp/policy.yaml")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    contracts = run_cli("run", "summarise", "--input", str(root / "examples/documents/ja"), "--policy", policy,
                        "--out", "out/contracts.jsonl", "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    assert contracts.returncode == 0, contracts.stderr
    lines = [json.loads(line) for line in (tmp_path / "out/contracts.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(line["models"] == ["local/smollm2-135m-instruct"] for line in lines)
    report = json.loads(run_cli("report", "--policy", policy, "--json", cwd=tmp_path, env=env).stdout)
    assert report["currency"] == "JPY" and report["fx"] == {"currency": "JPY", "jpy_per_usd": "150.85",
                                                            "as_of": "2026-12-01"}  # fmt: skip
    assert report["by_host_jurisdiction"][0]["host_jurisdiction"] == "self"
    transfers = run_cli("export", "--cross-border", "--ledger", "polycascade.db", cwd=tmp_path, env=env)
    assert transfers.returncode == 0 and transfers.stdout.splitlines()[1:] == []  # nothing left Japan
    pruned = run_cli("ledger", "prune", "--policy", policy, "--dry-run", cwd=tmp_path, env=env)
    assert "0 calls before" in pruned.stdout and "retention 1095 days" in pruned.stdout


def test_jp_enterprise_extended_to_yen_reports_and_exports_yen_and_keeps_usd(tmp_path: Path) -> None:
    """`extends: jp-enterprise` with `currency: JPY`: its pool served on loopback, its rules unchanged."""
    from polycascade.catalog import ModelsFile
    from polycascade.sync import run_sync
    from polycascade.testing import ScriptedServer

    (tmp_path / "rates.csv").write_text(RATES)
    policy = tmp_path / "yen.yaml"
    policy.write_text(
        "extends: jp-enterprise\nname: jp-enterprise-yen\ncurrency: JPY\nexchange_rates_file: rates.csv\n"
    )
    base = Catalog.load()  # the bundled catalog and the local rung
    preset = load_policy("jp-enterprise", base).policy
    server = ScriptedServer(lambda req: f"answer from {req.model}").start()
    try:
        served = []  # each API model of the preset, on loopback, as the catalog describes it
        for model_id in preset.models:
            spec = base[model_id]
            if spec.hosting == "api":
                price_in, price_out = spec.price_per_mtok()
                served.append(server.model(
                    model_id, vendor=spec.vendor, jurisdiction=spec.jurisdiction, input_per_mtok=str(price_in),
                    output_per_mtok=str(price_out), host=spec.host, host_jurisdiction=spec.host_jurisdiction,
                    trains_on_inputs=spec.trains_on_inputs))  # fmt: skip
        models = ModelsFile(models=served).write(tmp_path / "models.yaml")
        catalog = base.with_models(served)
        loaded = load_policy(policy, catalog)
        assert loaded.policy.name == "jp-enterprise-yen" and loaded.policy.vendor_share == preset.vendor_share
        db = tmp_path / "ledger.db"

        async def work() -> list[Any]:
            ledger = SQLiteLedger(db)
            pool = [m for m in loaded.pool if m.hosting == "api"]
            gateway = Gateway(catalog, ledger, RetryPolicy(max_attempts=1))
            c = Cascade(gateway, pool, governor=Governor(loaded.policy, ledger))
            for data_class in ("public", "confidential", "customer"):
                await c.run(Task("株式会社さくら商事の件", data_class=data_class, run_id="yen", max_tokens=100))
            calls = await ledger.calls()
            await ledger.close()
            return calls

        calls = run_sync(work())
    finally:
        server.stop()
    hosts = {c.data_class: c.host_jurisdiction for c in calls if c.node == "attempt"}
    assert hosts["confidential"] == "JP" and hosts["customer"] != "CN"  # the preset's rules still hold
    rate = Decimal("151.25")
    args = ["--ledger", str(db), "--policy", str(policy), "--models", str(models)]
    report = json.loads(run_cli("report", *args, "--run", "yen", "--json").stdout)
    total = sum((c.cost for c in calls), Decimal(0))
    assert report["currency"] == "JPY" and Decimal(report["total_cost_usd"]) == total > 0
    assert Decimal(report["total_cost_jpy"]) == total * rate
    run_budget = next(b for b in report["budgets"] if b["budget"] == "run")
    assert Decimal(run_budget["limit_jpy"]) == Decimal(20) * rate  # the preset's $20, shown in yen
    exported = list(csv.DictReader(io.StringIO(run_cli("export", "--ledger", str(db), "--run", "yen").stdout)))
    assert [Decimal(r["cost_jpy"]) for r in exported] == [Decimal(r["cost_usd"]) * rate for r in exported]
    transfers = list(csv.DictReader(io.StringIO(run_cli("export", "--ledger", str(db), "--cross-border").stdout)))
    assert {r["data_class"] for r in transfers} <= {"customer"}
