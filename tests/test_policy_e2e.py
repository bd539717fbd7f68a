"""The policy layer end to end: cascades calling scripted vendors on 127.0.0.1 under a policy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from polycascade import BudgetExceeded, PolicyError, Task
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.catalog import Catalog, ModelsFile, UserModel
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.ledger import Ledger, MemoryLedger
from polycascade.policies.config import load_policy
from polycascade.testing import Fault, ScriptedRequest, ScriptedServer

from .conftest import run_cli

# (id, vendor, jurisdiction, host jurisdiction, $/M in, $/M out, context window)
FLEET = [
    ("cn/cheapest", "DeepSeek", "CN", "CN", "0.05", "0.1", 8192),
    ("cn/cheap", "DeepSeek", "CN", "CN", "0.1", "0.2", 8192),
    ("fr/small", "Mistral", "FR", "FR", "0.15", "0.3", 8192),
    ("us/small", "OpenAI", "US", "US", "0.2", "0.4", 8192),
    ("us/google", "Google", "US", "US", "0.25", "0.5", 8192),
    ("jp/claude", "Anthropic", "US", "JP", "1", "5", 200_000),
]


class Fleet:
    def __init__(self) -> None:
        self.faults: dict[str, Fault] = {}
        self.server = ScriptedServer(self._respond).start()

    def _respond(self, req: ScriptedRequest) -> str | Fault:
        return self.faults.get(req.model) or f"answer from {req.model}"

    def models(self) -> list[UserModel]:
        return [
            self.server.model(model_id, vendor=vendor, jurisdiction=country, input_per_mtok=price_in,
                              output_per_mtok=price_out, quality=0.7, context_window=window,
                              host=f"{vendor} cloud", host_jurisdiction=host)
            for model_id, vendor, country, host, price_in, price_out, window in FLEET
        ]  # fmt: skip

    def catalog(self) -> Catalog:
        return Catalog.bundled().with_models(self.models())

    def models_yaml(self, path: Path) -> Path:
        return ModelsFile(models=self.models()).write(path)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet()
    yield f
    f.server.stop()


def write_policy(tmp_path: Path, **overrides: object) -> Path:
    policy: dict[str, object] = {
        "name": "test",
        "models": [m[0] for m in FLEET],
        "routing": {"threshold": 0.5, "max_rungs": 1, "max_failovers": 3},
        "data_classes": {
            "public": {},
            "internal": {"vendor_jurisdictions": ["US", "EU", "JP"], "host_jurisdictions": ["US", "EU", "JP"]},
            "confidential": {"host_jurisdictions": ["JP"]},
            "personal": {"api": False},
        },
        "circuit_breaker": {"failure_rate": 0.5, "min_calls": 3, "window_s": 60, "cooldown_s": 600},
    }
    policy.update(overrides)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def cascade(fleet: Fleet, policy_file: Path, ledger: Ledger, evaluator: Any = None) -> Cascade:
    catalog = fleet.catalog()
    loaded = load_policy(policy_file, catalog)
    gateway = Gateway(catalog, ledger, RetryPolicy(max_attempts=2, initial_s=0.01))
    return Cascade(gateway, loaded.pool, governor=Governor(loaded.policy, ledger), evaluator=evaluator)


async def test_100_concurrent_requests_keep_the_share_cap(fleet: Fleet, tmp_path: Path) -> None:
    share = {"max_share": 0.4, "window_hours": 24, "min_volume_usd": "0.0005"}
    ledger = MemoryLedger()
    c = cascade(fleet, write_policy(tmp_path, vendor_share=share), ledger)
    tasks = [Task(f"Question {i}: name a prime number.", data_class="public", max_tokens=100) for i in range(100)]
    results = await asyncio.gather(*(c.run(t) for t in tasks))
    assert all(r.answer for r in results)
    spend = await ledger.spend_by("vendor", api_only=True)
    total = sum((r.cost for r in spend.values()), Decimal(0))
    worst_call = max(Decimal(str(m[5])) for m in FLEET) / 1_000_000 * 200  # generous: one call's maximum
    for vendor, row in spend.items():
        assert row.cost <= Decimal("0.4") * total + worst_call, (vendor, row.cost, total)
    assert len(spend) >= 3  # the cap spread the work over vendors
    assert spend["DeepSeek"].cost / total > Decimal("0.3")  # and the cheapest still took its share


async def test_100_concurrent_requests_keep_the_budget(fleet: Fleet, tmp_path: Path) -> None:
    ledger = MemoryLedger()
    c = cascade(fleet, write_policy(tmp_path, budgets={"per_run_usd": "0.0004"}), ledger)
    tasks = [Task(f"Question {i}", run_id="wallet", data_class="public", max_tokens=200) for i in range(100)]
    outcomes = await asyncio.gather(*(c.run(t) for t in tasks), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert refused and done
    assert all(r.budget == "run" and r.limit == Decimal("0.0004") for r in refused)
    spent = sum((r.cost for r in (await ledger.spend_by("vendor", run_id="wallet")).values()), Decimal(0))
    assert spent <= Decimal("0.0004")
    assert fleet.server.count() == len(done)  # refused tasks never reached a vendor


async def test_confidential_data_never_reaches_a_forbidden_vendor_on_the_wire(fleet: Fleet, tmp_path: Path) -> None:
    c = cascade(fleet, write_policy(tmp_path), MemoryLedger())
    result = await c.run(Task("Summarise this contract: …", data_class="confidential"))
    assert result.attempts[0].model == "jp/claude"
    assert [r.vendor for r in fleet.server.requests] == ["anthropic"]
    assert fleet.server.count(vendor="deepseek") == 0


async def test_no_allowed_vendor_fails_closed_with_a_clear_reason(fleet: Fleet, tmp_path: Path) -> None:
    c = cascade(fleet, write_policy(tmp_path), MemoryLedger())
    result = await c.run(Task("My Number is 1234 5678 9012", data_class="personal"))
    assert result.status == "failed" and result.answer is None
    assert "residency" in result.stop_reason and "jp/claude" in result.stop_reason
    assert fleet.server.count() == 0
    with pytest.raises(PolicyError, match="'top-secret' is not defined"):  # refused before any call
        await c.run(Task("x", data_class="top-secret"))
    assert fleet.server.count() == 0


async def test_failover_goes_to_another_vendor(fleet: Fleet, tmp_path: Path) -> None:
    fleet.faults["cheapest"] = Fault.server_error(503)
    c = cascade(fleet, write_policy(tmp_path), MemoryLedger())
    result = await c.run(Task("x", data_class="public"))
    assert [a.vendor for a in result.attempts] == ["DeepSeek", "Mistral"]  # not cn/cheap: same vendor
    assert result.answer == "answer from small"
    decision = result.attempts[1].decision or {}
    assert decision["rejected"]["cn/cheap"]["rule"] == "failover"


async def test_the_breaker_opens_for_a_failing_vendor(fleet: Fleet, tmp_path: Path) -> None:
    fleet.faults["cheapest"] = fleet.faults["cheap"] = Fault.server_error(503)
    c = cascade(fleet, write_policy(tmp_path), MemoryLedger())
    for _ in range(3):
        await c.run(Task("x", data_class="public"))
    before = fleet.server.count(vendor="deepseek")
    result = await c.run(Task("x", data_class="public"))
    assert fleet.server.count(vendor="deepseek") == before  # the open circuit kept calls away
    assert result.attempts[0].vendor == "Mistral"
    assert (result.attempts[0].decision or {})["rejected"]["cn/cheapest"]["rule"] == "circuit_breaker"


async def test_a_context_window_error_goes_to_a_larger_window(fleet: Fleet, tmp_path: Path) -> None:
    for model_id, *_ in FLEET[:-1]:
        fleet.faults[model_id.split("/")[1]] = Fault.context_window()
    c = cascade(fleet, write_policy(tmp_path), MemoryLedger())
    result = await c.run(Task("a long document …", data_class="public"))
    assert [a.model for a in result.attempts] == ["cn/cheapest", "jp/claude"]
    assert (result.attempts[1].decision or {})["rejected"]["fr/small"]["rule"] == "context_window"


async def test_explain_and_report_show_why(fleet: Fleet, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = SQLiteLedger(db)
    policy = write_policy(tmp_path, vendor_share={"max_share": 0.5, "min_volume_usd": "0"})
    result = await cascade(fleet, policy, ledger).run(Task("Summarise: …", data_class="confidential", run_id="r1"))
    await ledger.close()
    call_id = result.attempts[0].call_id
    assert call_id
    explained = run_cli("explain", call_id, "--ledger", str(db), "--json")
    assert explained.returncode == 0, explained.stderr
    decision = json.loads(explained.stdout)["decision"]
    assert decision["chosen"] == "jp/claude" and decision["policy"] == "test"
    cheapest = decision["rejected"]["cn/cheapest"]
    assert cheapest["rule"] == "residency" and cheapest["values"]["host"] == "CN"
    table = run_cli("explain", call_id, "--ledger", str(db))
    assert "residency" in table.stdout and "cn/cheapest" in table.stdout
    models = fleet.models_yaml(tmp_path / "models.yaml")
    report = run_cli(
        "report", "--run", "r1", "--ledger", str(db), "--policy", str(policy), "--models", str(models), "--json"
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["by_vendor"][0]["vendor"] == "Anthropic" and data["by_vendor"][0]["cap"] == 0.5
    assert data["by_host_jurisdiction"][0]["host_jurisdiction"] == "JP"
