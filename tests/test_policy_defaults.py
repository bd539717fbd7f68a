"""A policy's defaults hold in every entry point, and fail closed.

The case: a policy whose `default_data_class` is confidential (US only) over a cheap CN model and a
dear US one. A task that names no data class must never reach the CN vendor, whichever way it
comes in: `run_task`, `Cascade.run`, `cascade_node`, `delegate`, `PolycascadeChat`, `serve`, `run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import openai
import pytest
import yaml
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from openai import OpenAI

from polycascade import PolicyError, Task, cascade, cascade_node, run_task
from polycascade.agents.chat_model import PolycascadeChat
from polycascade.catalog import Catalog, ModelsFile
from polycascade.graphs.delegation import delegate
from polycascade.policies.config import Policy, load_policy
from polycascade.testing import ScriptedRequest, ScriptedServer

from .conftest import run_cli, serving

SECRET = "Summarise our secret merger plan with Acme."
POLICY = {
    "name": "confidential-by-default",
    "models": ["cn/cheap", "us/dear"],
    "data_classes": {
        "public": {},
        "internal": {},
        "confidential": {"vendor_jurisdictions": ["US"], "host_jurisdictions": ["US"]},
    },
    "default_data_class": "confidential",
    "default_task_kind": "summarise",
}
KEY = "test-tenant-key-defaults"


def _reply(req: ScriptedRequest) -> str:
    if "subtasks" in req.prompt:  # the delegation planner asks for a plan
        return json.dumps({"subtasks": [{"prompt": "Summarise the plan.", "kind": "summarise"}]})
    return f"answer from {req.model}"


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.server = ScriptedServer(_reply).start()
        common = {"output_per_mtok": "0.2", "quality": 0.9}
        self.models = [
            self.server.model("cn/cheap", vendor="DeepSeek", jurisdiction="CN", input_per_mtok="0.1", **common),
            self.server.model("us/dear", vendor="OpenAI", jurisdiction="US", input_per_mtok="5", **common),
        ]
        self.catalog = Catalog.bundled().with_models(self.models)
        self.models_file = ModelsFile(models=self.models).write(tmp / "models.yaml")
        self.policy_file = tmp / "policy.yaml"
        self.policy_file.write_text(yaml.safe_dump(POLICY))
        self.policy = load_policy(self.policy_file, self.catalog).policy

    def cn_calls(self) -> int:
        return self.server.count(vendor="deepseek")

    def us_calls(self) -> int:
        return self.server.count(vendor="openai")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.server.stop()


def _answered_in_the_us(result: Any, setup: Setup) -> None:
    assert setup.cn_calls() == 0, "the confidential default was ignored: the prompt reached the CN vendor"
    assert setup.us_calls() >= 1 and result.model == "us/dear"
    assert all(a.vendor == "OpenAI" for a in result.attempts)


def test_run_task_takes_the_policys_default_data_class(setup: Setup) -> None:
    result = run_task(Task(SECRET), ["cn/cheap", "us/dear"], policy=setup.policy, catalog=setup.catalog)
    _answered_in_the_us(result, setup)
    decision = result.chosen.decision if result.chosen else {}
    assert decision and "cn/cheap" in decision["rejected"]  # rejected by residency, with the reason recorded


def test_a_policy_file_and_a_plain_prompt_work_the_same(setup: Setup) -> None:
    result = run_task(SECRET, policy=setup.policy_file, catalog=setup.catalog)
    _answered_in_the_us(result, setup)


async def test_cascade_run_and_its_direct_stepping(setup: Setup) -> None:
    pipeline = cascade(policy=setup.policy, catalog=setup.catalog)
    _answered_in_the_us(await pipeline.run(Task(SECRET)), setup)
    _answered_in_the_us(await pipeline.run_direct(Task(SECRET)), setup)


def test_cascade_node_in_a_users_graph(setup: Setup) -> None:
    class State(TypedDict, total=False):
        task: str
        result: Any

    graph = StateGraph(State)
    graph.add_node("answer", cascade_node(policy=setup.policy, catalog=setup.catalog))
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    _answered_in_the_us(graph.compile().invoke({"task": SECRET})["result"], setup)


def test_delegate_passes_the_default_to_every_subtask(setup: Setup) -> None:
    out = delegate(SECRET, cascade(policy=setup.policy, catalog=setup.catalog))
    assert out["status"] != "failed" and setup.cn_calls() == 0 and setup.us_calls() >= 2  # plan + subtask


def test_polycascade_chat(setup: Setup) -> None:
    llm = PolycascadeChat(policy=setup.policy, catalog=setup.catalog)
    try:
        reply = llm.invoke([HumanMessage(SECRET)])
    finally:
        llm.close()
    assert reply.response_metadata["model_name"] == "us/dear" and setup.cn_calls() == 0


def test_the_task_kind_default_comes_from_the_policy_too(setup: Setup) -> None:
    result = run_task(Task(SECRET, data_class="public"), policy=setup.policy, catalog=setup.catalog)
    assert result.chosen and result.chosen.decision
    assert setup.cn_calls() == 1  # public may go to CN: the default applies only when nothing is said
    pipeline = cascade(policy=setup.policy, catalog=setup.catalog)
    assert pipeline.resolve(Task(SECRET)).kind == "summarise"
    assert pipeline.resolve(Task(SECRET, kind="extract")).kind == "extract"


def test_an_undefined_data_class_is_refused_before_any_call(setup: Setup) -> None:
    with pytest.raises(PolicyError, match="'secret' is not defined by policy 'confidential-by-default'") as caught:
        run_task(Task(SECRET, data_class="secret"), policy=setup.policy, catalog=setup.catalog)
    assert caught.value.parameter == "data_class"
    assert setup.cn_calls() == setup.us_calls() == 0


def test_the_cli_maps_a_parameter_to_its_flag(setup: Setup, tmp_path: Path) -> None:
    ask = run_cli("ask", SECRET, "--policy", str(setup.policy_file), "--models", str(setup.models_file),
                  "--no-local", "--data-class", "secret", "--ledger", "memory://", cwd=tmp_path)  # fmt: skip
    assert ask.returncode == 2 and "--data-class 'secret' is not defined" in ask.stderr
    assert setup.cn_calls() == setup.us_calls() == 0


def test_run_over_documents(setup: Setup, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "plan.txt").write_text(SECRET)
    out = tmp_path / "out.jsonl"
    done = run_cli("run", "summarise", "--input", str(docs), "--out", str(out), "--policy", str(setup.policy_file),
                   "--models", str(setup.models_file), "--no-local", "--no-progress",
                   "--ledger", str(tmp_path / "ledger.db"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = json.loads(out.read_text().splitlines()[0])
    assert line["status"] != "failed" and line["models"] == ["us/dear"]
    assert setup.cn_calls() == 0


def test_serve(setup: Setup, tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"key_env": "TEST_DEFAULTS_KEY"}}}))
    args = ["--policy", str(setup.policy_file), "--models", str(setup.models_file), "--tenants", str(tenants),
            "--ledger", str(tmp_path / "ledger.db"), "--no-local"]  # fmt: skip
    messages: Any = [{"role": "user", "content": SECRET}]
    with serving(*args, env={**os.environ, "TEST_DEFAULTS_KEY": KEY}) as url:
        client = OpenAI(base_url=url, api_key=KEY)
        with pytest.raises(openai.PermissionDeniedError, match=r"policy_denied|residency"):
            client.chat.completions.create(model="cn/cheap", messages=messages)  # no model may take it
        assert client.chat.completions.create(model="us/dear", messages=messages).model == "us/dear"
        with pytest.raises(openai.BadRequestError, match="'secret' is not defined"):
            client.chat.completions.create(
                model="us/dear", messages=messages, extra_headers={"X-Polycascade-Data-Class": "secret"}
            )
    assert setup.cn_calls() == 0


def test_a_policy_object_resolves_tasks_in_one_place() -> None:
    policy = Policy(name="p", data_classes={"internal": {}, "confidential": {}}, default_data_class="confidential")  # type: ignore[dict-item]
    task = policy.resolve(Task("x"))
    assert (task.data_class, task.kind) == ("confidential", "general")
    assert policy.resolve(task) is task  # already resolved: unchanged


def test_a_failed_assembly_closes_the_ledger_it_opened(tmp_path: Path) -> None:
    from polycascade import ConfigError
    from polycascade.service import assemble

    ledger = tmp_path / "ledger.db"

    def open_handles() -> int:
        return sum(1 for fd in Path("/proc/self/fd").iterdir() if str(ledger) in os.path.realpath(fd))

    with pytest.raises(ConfigError, match="no models to use") as caught:
        assemble(ledger=str(ledger))  # no policy, no models: nothing to run
    assert caught.value.parameter == "models" and open_handles() == 0


def test_polycascade_chat_honours_its_timeout(setup: Setup) -> None:
    from polycascade import PolycascadeError
    from polycascade.testing import ScriptedServer

    with ScriptedServer(lambda req: "late", latency_s=2.0) as slow:
        model = slow.model("slow/m", vendor="Slowco", jurisdiction="US", input_per_mtok="1")
        llm = PolycascadeChat(models=["slow/m"], catalog=Catalog.bundled().with_models([model]), timeout=0.3)
        with pytest.raises(PolycascadeError, match="ProviderTimeout"):
            llm.invoke("hello")
        llm.close()
