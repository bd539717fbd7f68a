"""Personal data abroad (APPI Art. 28): sent only where the policy declares a basis, and recorded."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from polycascade import Task
from polycascade._ledger_sqlite import SQLiteLedger
from polycascade.agents.evaluators import LLMJudge
from polycascade.errors import PolicyError
from polycascade.graphs.cascade import Cascade
from polycascade.policies.config import load_policy
from polycascade.testing import ScriptedRequest

from .conftest import run_cli
from .test_policy_e2e import FLEET, Fleet
from .test_policy_e2e import cascade as governed

PERSONAL = {  # residency lets it go to US vendors; the transfer rule asks for a basis per country
    "vendor_jurisdictions": ["JP", "US"], "host_jurisdictions": ["JP", "US"],
}  # fmt: skip


class JudgingFleet(Fleet):
    def _respond(self, req: ScriptedRequest) -> str:
        return "SCORE: 9" if "<answer>" in req.prompt else f"answer from {req.model}"


@pytest.fixture
def fleet() -> Iterator[JudgingFleet]:
    f = JudgingFleet()
    yield f
    f.server.stop()


def policy_file(tmp_path: Path, **classes: dict[str, object]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({
        "name": "appi", "models": [m[0] for m in FLEET], "routing": {"threshold": 0.5, "max_rungs": 1},
        "data_classes": {"public": {}, **classes}, "default_data_class": "public",
    }))  # fmt: skip
    return path


def cascade(fleet: Fleet, policy: Path, ledger: SQLiteLedger) -> Cascade:
    judge = LLMJudge([fleet.catalog()["jp/claude"]])  # Anthropic: a US vendor, hosted in Japan
    return governed(fleet, policy, ledger, evaluator=judge)


async def test_personal_data_goes_abroad_with_a_basis_and_each_call_records_where_and_why(
    fleet: JudgingFleet, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, personal={**PERSONAL, "cross_border_basis": {"US": "consent"}})
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    result = await cascade(fleet, policy, ledger).run(Task("山田太郎さんの契約を要約して", data_class="personal"))
    assert result.status == "verified" and result.attempts[0].model == "us/small"  # the cheapest US model
    rows = {r.node: r for r in await ledger.calls()}
    version = load_policy(policy, fleet.catalog()).policy.version
    assert rows["attempt"].decision is not None
    assert rows["attempt"].decision["cross_border"] == {
        "from": "JP", "vendor_jurisdiction": "US", "host_jurisdiction": "US", "basis": {"US": "consent"},
        "policy": "appi", "policy_version": version,
    }  # fmt: skip
    judge = next(r for node, r in rows.items() if node.startswith("evaluate"))
    assert judge.decision is not None and judge.decision["cross_border"]["host_jurisdiction"] == "JP"
    assert judge.decision["cross_border"]["basis"] == {"US": "consent"}  # the vendor is abroad, its host is not
    rejected = rows["attempt"].decision["rejected"]
    assert rejected["cn/cheapest"]["rule"] == "residency"  # residency first; the transfer rule never saw CN
    public = await cascade(fleet, policy, ledger).run(Task("A press release", data_class="public"))
    assert public.attempts[0].model == "cn/cheapest"
    public_row = next(r for r in await ledger.calls() if r.call_id == public.attempts[0].call_id)
    assert public_row.decision is not None and "cross_border" not in public_row.decision  # not tracked
    await ledger.close()


async def test_personal_data_with_no_basis_for_a_country_is_denied_with_the_reason(
    fleet: JudgingFleet, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, personal={**PERSONAL, "cross_border_basis": {"GB": "adequacy_eu_uk"}})
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    result = await cascade(fleet, policy, ledger).run(Task("山田太郎さんの契約を要約して", data_class="personal"))
    assert result.status == "failed" and not result.attempts
    reason = result.stop_reason
    assert "personal data may not leave JP for US: no basis declared (APPI Art. 28)" in reason, reason
    assert fleet.server.count() == 0  # nothing left the machine
    await ledger.close()


def test_export_cross_border_lists_exactly_the_calls_that_sent_personal_data_abroad(
    fleet: JudgingFleet, tmp_path: Path
) -> None:
    import asyncio

    policy = policy_file(tmp_path, personal={**PERSONAL, "cross_border_basis": {"US": "consent"}},
                         forbidden={**PERSONAL, "cross_border_basis": {"US": "none"}})  # fmt: skip
    db = tmp_path / "ledger.db"

    async def work() -> set[str]:
        ledger = SQLiteLedger(db)
        c = cascade(fleet, policy, ledger)
        sent = await c.run(Task("個人データ", data_class="personal"))
        await c.run(Task("公開情報", data_class="public"))
        denied = await c.run(Task("個人データ（海外不可）", data_class="forbidden"))
        assert denied.status == "failed" and "may not be sent to US (basis: none)" in denied.stop_reason
        ids = {r.call_id for r in await ledger.calls() if r.task_id == sent.task_id}
        await ledger.close()
        return ids

    abroad = asyncio.run(work())
    assert len(abroad) == 2  # the answer and its judge
    done = run_cli("export", "--ledger", str(db), "--cross-border")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["call_id"] for r in rows} == abroad
    recorded = {(r["destinations"], r["basis"], r["from"], r["policy"]) for r in rows}
    assert recorded == {("US", "US:consent", "JP", "appi")}
    assert all(len(r["policy_version"]) == 12 for r in rows)
    explained = run_cli("explain", rows[0]["call_id"], "--ledger", str(db))
    assert "cross-border: from JP to vendor US" in explained.stdout and "basis US: consent" in explained.stdout
    everything = run_cli("export", "--ledger", str(db), "--format", "jsonl")
    assert len(everything.stdout.splitlines()) > len(rows)
    assert all(json.loads(line)["data_class"] for line in everything.stdout.splitlines())


def test_a_basis_the_law_does_not_give_is_refused_where_it_is_written(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, personal={"cross_border_basis": {"US": "adequacy_eu_uk"}})
    with pytest.raises(PolicyError, match=r"adequacy_eu_uk is a basis only for the EU \(and its members\) and GB"):
        load_policy(policy)
