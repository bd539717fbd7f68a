"""Delegation: planner → Send fan-out → a cascade per subtask → synthesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from polycascade.catalog import Catalog, ModelsFile, UserModel
from polycascade.gateway import Gateway
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade
from polycascade.graphs.delegation import delegate
from polycascade.ledger import MemoryLedger
from polycascade.testing import ScriptedRequest, ScriptedServer

from .conftest import run_cli
from .test_governor import CLASSES

PLAN = {
    "subtasks": [
        {"prompt": "What is 6 * 7?", "kind": "calculate", "data_class": "public"},  # a plan may not lower the class
        {"prompt": "Name the capital of Japan.", "kind": "research"},
    ]
}


class Planner:
    def __init__(self, plan: object = PLAN) -> None:
        self.plan = plan
        self.server = ScriptedServer(self.respond).start()

    def respond(self, req: ScriptedRequest) -> str:
        prompt = req.prompt
        if prompt.startswith("Split the task"):
            return json.dumps(self.plan)
        if "6 * 7" in prompt and "<part" not in prompt:
            return "42"
        if "capital of Japan" in prompt and "<part" not in prompt:
            return "Tokyo"
        if prompt.startswith("Using the answers"):
            return "The product is 42 and the capital is Tokyo."
        return f"direct answer to: {prompt[:40]}"

    def models(self) -> list[UserModel]:
        caps = {"quality": 0.8, "capabilities": ["json_schema"]}
        return [
            self.server.model("v/cn", vendor="DeepSeek", jurisdiction="CN", input_per_mtok="0.1", **caps),  # type: ignore[arg-type]
            self.server.model("v/fr", vendor="Mistral", jurisdiction="FR", input_per_mtok="0.3", **caps),  # type: ignore[arg-type]
        ]

    def cascade(self, ledger: MemoryLedger) -> Cascade:
        catalog = Catalog.bundled().with_models(self.models())
        from polycascade.policies.config import Policy

        governor = Governor(Policy(name="t", data_classes=CLASSES), ledger)
        return Cascade(Gateway(catalog, ledger), [catalog["v/cn"], catalog["v/fr"]], governor=governor)


@pytest.fixture
def planner() -> Iterator[Planner]:
    p = Planner()
    yield p
    p.server.stop()


def test_subtasks_fan_out_with_their_own_kinds_and_are_synthesised(planner: Planner) -> None:
    ledger = MemoryLedger()
    out = delegate("What is 6 * 7, and what is the capital of Japan?", planner.cascade(ledger), data_class="public")
    assert out["answer"] == "The product is 42 and the capital is Tokyo."
    assert [(s["kind"], s["answer"]) for s in out["subtasks"]] == [("calculate", "42"), ("research", "Tokyo")]
    kinds = {r.task_kind for r in ledger._rows.values()}
    assert {"plan", "calculate", "research", "synthesis"} <= kinds


def test_a_plan_cannot_lower_the_data_class(planner: Planner) -> None:
    out = delegate("Confidential: compute 6 * 7 and the capital of Japan.", planner.cascade(MemoryLedger()),
                   data_class="confidential-fr")  # fmt: skip
    assert out["status"] in {"verified", "unverified", "failed"}
    assert planner.server.count(vendor="deepseek") == 0  # the CN vendor never saw any part of it


def test_an_invalid_plan_falls_back_to_the_whole_task() -> None:
    broken = Planner(plan={"steps": "do it"})
    try:
        out = delegate("Summarise our Q3 results.", broken.cascade(MemoryLedger()), data_class="public")
        assert len(out["subtasks"]) == 1 and out["subtasks"][0]["prompt"] == "Summarise our Q3 results."
        assert out["answer"].startswith("direct answer to: Summarise")
    finally:
        broken.server.stop()


def test_delegate_is_a_built_in_workflow(planner: Planner, tmp_path: Path) -> None:
    models_file = ModelsFile(models=planner.models()).write(tmp_path / "m.yaml")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "q.txt").write_text("What is 6 * 7, and what is the capital of Japan?")
    out = tmp_path / "d.jsonl"
    args = ["--input", str(tmp_path / "in"), "--out", str(out), "--models", str(models_file), "--no-local"]
    result = run_cli("run", "delegate", *args, "--no-progress", "--ledger", str(tmp_path / "l.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = json.loads(out.read_text())
    assert line["answer"] == "The product is 42 and the capital is Tokyo." and len(line["subtasks"]) == 2
