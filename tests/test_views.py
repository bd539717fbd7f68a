"""What the report aggregates, over every ledger backend: the same figures as counting the calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade._ledger_postgres import PostgresLedger
from polycascade.ledger import IN_FLIGHT, CallRecord, Ledger, new_call_id
from polycascade.policies.config import Policy
from polycascade.views import Scope, build_report, recent_calls

from .test_ledger_conformance import BACKENDS

HOUR = 3600.0
NOW = 1_800_003_600.0  # on the hour: 2027-01-15 09:00 UTC, 18:00 in Tokyo
POLICY = Policy(
    name="p", timezone="Asia/Tokyo", vendor_share={"max_share": 0.6, "window_hours": 24},
    budgets={"per_day_usd": "1", "per_run_usd": "0.5", "per_tenant_day_usd": {"acme": "0.2"}},
)  # fmt: skip


def call(**kw: object) -> CallRecord:
    base: dict[str, object] = dict(call_id=new_call_id(), model="cheap", vendor="DeepSeek", jurisdiction="CN",
                                   host_jurisdiction="CN", outcome="ok", run_id="r1", node="attempt", tenant="acme",
                                   task_kind="qa", data_class="public", ts=NOW - 2 * HOUR + 60)  # fmt: skip
    base.update(kw)
    return CallRecord(**base)  # type: ignore[arg-type]


@pytest.fixture(params=sorted(BACKENDS))
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    backend = BACKENDS[request.param](tmp_path)
    rejected = {"a": {"rule": "residency"}, "b": {"rule": "vendor_share"}, "cheap": {"rule": "tried"}}
    rows = [
        # t1 escalates: cheap fails, strong passes
        call(task_id="t1", cost=Decimal("0.01"), verdict=False, decision={"rejected": rejected}),
        call(task_id="t1", model="strong", vendor="OpenAI", jurisdiction="US", host_jurisdiction="US",
             cost=Decimal("0.10"), verdict=True, ts=NOW - HOUR + 60, decision={"rejected": rejected}),
        call(task_id="t1", node="evaluate.judge", model="judge", vendor="Anthropic", jurisdiction="US",
             host_jurisdiction="JP", cost=Decimal("0.02"), ts=NOW - HOUR + 120),
        call(task_id="t2", cost=Decimal("0.03"), verdict=True),  # passes at once
        call(task_id="t3", cost=Decimal("0.05"), outcome=IN_FLIGHT),  # reserved, no outcome yet
        call(task_id="t4", cost=Decimal("0.07"), tenant="globex", run_id="r2", data_class="confidential"),
        call(task_id="t5", cost=Decimal("9"), ts=NOW - 30 * HOUR),  # before the window
    ]  # fmt: skip
    for rec in rows:
        await backend.write(rec)
    yield backend
    if isinstance(backend, PostgresLedger):
        await backend.drop()
    await backend.close()


async def test_the_report_over_the_window(ledger: Ledger) -> None:
    r = await build_report(ledger, Scope.of(POLICY, now=NOW - 1), POLICY)
    assert r["scope"] == {"last_hours": 24, "from": "2027-01-14 18:00", "until": "2027-01-15 18:00"}  # Tokyo time
    assert r["calls"] == 5 and r["total_cost_usd"] == "0.23"  # t5 before the window, t3 in flight
    assert r["in_flight"] == {"calls": 1, "cost_usd": "0.05"}
    vendors = {row["vendor"]: row for row in r["by_vendor"]}
    assert vendors["OpenAI"]["cost_usd"] == "0.1" and vendors["OpenAI"]["share"] == round(0.1 / 0.23, 4)
    assert vendors["OpenAI"]["cap"] == 0.6 and vendors["OpenAI"]["within_cap"]
    assert {(f["data_class"], f["host_jurisdiction"]) for f in r["data_classes"]} == {
        ("public", "CN"), ("public", "US"), ("public", "JP"), ("confidential", "CN")}  # fmt: skip
    assert [row["hour"] for row in r["timeline"] if row["vendor"] == "OpenAI"] == ["2027-01-15 17:00"]
    assert r["escalations"] == {"tasks": 4, "escalations": 1, "rate": 0.25}  # t1 went on after cheap
    kinds = {(k["task_kind"], k["model"]): k for k in r["kinds"]}
    assert kinds[("qa", "cheap")]["verdicts"] == 2 and kinds[("qa", "cheap")]["pass_rate"] == 0.5
    assert kinds[("qa", "cheap")]["escalation_rate"] == 0.25  # 1 of its 4 attempts (in flight included)
    assert kinds[("qa", "strong")]["cost_per_verified_usd"] == "0.1"
    assert r["denials"] == [  # "tried" is the cascade's bookkeeping, not a denial
        {"rule": "residency", "data_class": "public", "denials": 2},
        {"rule": "vendor_share", "data_class": "public", "denials": 2},
    ]
    assert [t["task_id"] for t in r["top_tasks"]][:2] == ["t1", "t4"]
    assert r["top_tasks"][0]["cost_usd"] == "0.13"
    budgets = {b["budget"]: b for b in r["budgets"]}
    assert budgets["tenant acme (day)"] == {
        "budget": "tenant acme (day)", "limit_usd": "0.2", "spent_usd": "0.16", "reserved_usd": "0.05",
        "left_usd": "0", "used": 1.05,
    }  # fmt: skip
    assert r["burn_down"][0]["spent_usd"] == "0" and r["burn_down"][-1]["spent_usd"] == "0.23"
    assert r["vendor_spread"]["vendors_in_use"] == ["Anthropic", "DeepSeek", "OpenAI"]


async def test_a_run_or_a_tenant_alone(ledger: Ledger) -> None:
    run = await build_report(ledger, Scope(run_id="r2"), POLICY)
    assert run["calls"] == 1 and run["total_cost_usd"] == "0.07"
    assert {b["budget"]: b["spent_usd"] for b in run["budgets"]}["run"] == "0.07"
    acme = await build_report(ledger, Scope.of(POLICY, tenant="acme", now=NOW - 1), POLICY)
    assert acme["calls"] == 4 and acme["total_cost_usd"] == "0.16"
    assert "tenant globex (day)" not in {b["budget"] for b in acme["budgets"]}


async def test_recent_calls_carry_their_explanation_in_the_policys_time(ledger: Ledger) -> None:
    calls = await recent_calls(ledger, Scope.of(POLICY, now=NOW - 1), timezone="Asia/Tokyo", limit=3)
    assert len(calls) == 3 and calls[0]["node"] == "evaluate.judge"  # latest first
    assert calls[0]["when"] == "2027-01-15 17:02:00"
    assert calls[1]["decision"]["rejected"]["a"]["rule"] == "residency"
