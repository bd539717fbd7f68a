"""Drop-in integrations with real clients: the openai SDK and ChatOpenAI against `polycascade serve`
(a subprocess calling scripted vendors and the real local model), and PolycascadeChat in LangGraph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from polycascade.agents.chat_model import PolycascadeChat
from polycascade.catalog import Catalog, UserModel
from polycascade.testing import Reply, ScriptedRequest, ScriptedServer
from polycascade.tools.builtin import ALL_TOOLS, calculator

from .conftest import run_cli, serving

KEY = "pc-test-gateway-key-3f9a1c"
CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


class Vendors:
    """Scripted vendors that use tools when offered: calculator for sums, model_info for models."""

    def __init__(self) -> None:
        self.server = ScriptedServer(self.respond).start()

    def respond(self, req: ScriptedRequest) -> str | Reply:
        if "SCORE: n" in req.prompt:  # a judge's rubric prompt: these answers are fine
            return "Correct and complete.\nSCORE: 9"
        messages = req.messages
        if messages and messages[-1].get("role") == "tool":
            done = [m["content"] for m in messages if m.get("role") == "tool"]
            tools = {t["function"]["name"] for t in req.body.get("tools", [])}
            if "model_info" in tools and len(done) == 1:
                return Reply(tool_calls=[{"name": "model_info", "arguments": {"model": "gpt-4o-mini"}}])
            return "Results: " + " | ".join(done)
        if req.body.get("tools") and "17 * 23" in req.prompt:
            return Reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "17 * 23"}}])
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if '"city"' in system:
            return '{"city": "Paris", "country": "France"}'
        return f"Paris (from {req.model})"

    def models(self) -> list[dict[str, object]]:
        s = self.server
        entries = [
            s.model("v/cheap", vendor="DeepSeek", jurisdiction="CN", input_per_mtok="0.1", output_per_mtok="0.2",
                    quality=0.7, capabilities=["tools"]),
            s.model("v/mid", vendor="Mistral", jurisdiction="FR", input_per_mtok="1", output_per_mtok="2",
                    quality=0.8, capabilities=["tools", "json_schema"]),
            s.model("v/strong", vendor="OpenAI", jurisdiction="US", input_per_mtok="5", output_per_mtok="15",
                    quality=0.95, capabilities=["tools", "json_schema"]),
        ]  # fmt: skip
        return [m.model_dump(mode="json", exclude_none=True) for m in entries]


@pytest.fixture(scope="module")
def vendors() -> Iterator[Vendors]:
    v = Vendors()
    yield v
    v.server.stop()


def _files(tmp: Path, vendors: Vendors) -> dict[str, Path]:
    models = tmp / "models.yaml"
    models.write_text(yaml.safe_dump({"models": vendors.models()}))
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "name": "gateway-test",
        "models": ["local/smollm2-135m-instruct", "v/cheap", "v/mid", "v/strong"],
        "priors": {"local/smollm2-135m-instruct": 0.2},
        "data_classes": {"public": {}, "internal": {}, "confidential": {"vendor_jurisdictions": ["FR", "US"]},
                         "personal": {"api": False}},
        "routes": {
            "cheap-adequate": {"task_kind": "general", "models": ["v/cheap", "v/mid", "v/strong"]},
            "confidential-extract": {"task_kind": "extract", "data_class": "confidential"},
            "on-premises": {"data_class": "personal"},
        },
        "budgets": {"per_tenant_day_usd": {"acme": 5}},
    }))  # fmt: skip
    tenants = tmp / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"key_env": "TEST_GATEWAY_KEY"}}}))
    return {"models": models, "policy": policy, "tenants": tenants, "ledger": tmp / "ledger.db"}


@pytest.fixture(scope="module")
def gateway(vendors: Vendors, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    files = _files(tmp_path_factory.mktemp("gateway"), vendors)
    args = ["--policy", str(files["policy"]), "--models", str(files["models"]), "--tenants", str(files["tenants"]),
            "--ledger", str(files["ledger"])]  # fmt: skip
    with serving(*args, env={**os.environ, "TEST_GATEWAY_KEY": KEY}) as url:
        yield {"url": url, **files}


def test_an_unchanged_openai_script_runs_and_lands_in_the_report(gateway: dict[str, object], vendors: Vendors) -> None:
    script = f"""
from openai import OpenAI
client = OpenAI(base_url={gateway["url"]!r}, api_key={KEY!r})
question = [{{"role": "user", "content": "Capital of France?"}}]
reply = client.chat.completions.create(model="cheap-adequate", messages=question)
print(reply.choices[0].message.content)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Paris (from cheap)")
    report = run_cli("report", "--ledger", str(gateway["ledger"]), "--run", "serve:acme", "--json")
    data = json.loads(report.stdout)
    answered = next(row for row in data["by_vendor"] if row["vendor"] == "DeepSeek")
    assert answered["calls"] >= 1 and float(answered["cost_usd"]) > 0
    assert any(row["vendor"] == "OpenAI" for row in data["by_vendor"])  # the judge, from another vendor


def test_openai_sdk_completion_usage_and_explanation(gateway: dict[str, object]) -> None:
    client = openai.OpenAI(base_url=str(gateway["url"]), api_key=KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="cheap-adequate", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    reply = raw.parse()
    assert reply.model == "v/cheap" and reply.usage is not None and reply.usage.prompt_tokens > 0
    call_id = raw.headers["X-Polycascade-Call-Id"]
    explained = json.loads(run_cli("explain", call_id, "--ledger", str(gateway["ledger"]), "--json").stdout)
    assert explained["decision"]["policy"] == "gateway-test" and explained["vendor"] == "DeepSeek"
    assert (reply.model_extra or {})["polycascade"]["call_id"] == call_id


def test_openai_sdk_streaming(gateway: dict[str, object]) -> None:
    client = openai.OpenAI(base_url=str(gateway["url"]), api_key=KEY)
    stream = client.chat.completions.create(
        model="cheap-adequate", messages=[{"role": "user", "content": "Capital of France?"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris (from cheap)"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_openai_sdk_tool_calls_streaming_and_not(gateway: dict[str, object]) -> None:
    client = openai.OpenAI(base_url=str(gateway["url"]), api_key=KEY)
    question = [{"role": "user", "content": "What is 17 * 23?"}]
    reply = client.chat.completions.create(model="cheap-adequate", messages=question, tools=[CALC])
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "17 * 23"}
    follow_up = [*question, reply.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "391"}]  # fmt: skip
    final = client.chat.completions.create(model="cheap-adequate", messages=follow_up, tools=[CALC])
    assert final.choices[0].message.content == "Results: 391"
    streamed = list(
        client.chat.completions.create(model="cheap-adequate", messages=question, tools=[CALC], stream=True)
    )
    calls = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "calculator"


def test_routes_apply_the_policy(gateway: dict[str, object], vendors: Vendors) -> None:
    client = openai.OpenAI(base_url=str(gateway["url"]), api_key=KEY)
    before = vendors.server.count(vendor="deepseek")
    reply = client.chat.completions.create(
        model="confidential-extract", messages=[{"role": "user", "content": "Extract: contract …"}]
    )
    assert reply.model in {"v/mid", "v/strong"} and vendors.server.count(vendor="deepseek") == before
    local = client.chat.completions.create(model="on-premises", messages=[{"role": "user", "content": "Say hi."}])
    assert local.model == "local/smollm2-135m-instruct" and local.choices[0].message.content  # the real local model
    assert "not verified" in (local.model_extra or {})["polycascade"]["attempts"][0]["verdict"]["reason"]
    ids = {m.id for m in client.models.list()}
    assert {"cheap-adequate", "confidential-extract", "v/cheap"} <= ids


def test_keys_and_unknown_models_are_refused(gateway: dict[str, object]) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=str(gateway["url"]), api_key="pc-wrong").chat.completions.create(
            model="cheap-adequate", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError, match="unknown model or route"):
        openai.OpenAI(base_url=str(gateway["url"]), api_key=KEY).chat.completions.create(
            model="gpt-5-ultra", messages=[{"role": "user", "content": "hi"}]
        )


def test_chat_openai_against_the_gateway(gateway: dict[str, object]) -> None:
    llm = ChatOpenAI(base_url=str(gateway["url"]), api_key=KEY, model="cheap-adequate")  # type: ignore[arg-type]
    assert llm.invoke("Capital of France?").content == "Paris (from cheap)"
    assert "".join(str(c.content) for c in llm.stream("Capital of France?")) == "Paris (from cheap)"
    with_tools = llm.bind_tools([calculator]).invoke("What is 17 * 23?")
    assert with_tools.tool_calls[0]["name"] == "calculator"  # type: ignore[attr-defined]


# -- PolycascadeChat in-process --------------------------------------------------------------------


class Capital(BaseModel):
    city: str
    country: str


def chat(vendors: Vendors, **kw: object) -> PolycascadeChat:
    catalog = Catalog.load().with_models([UserModel(**m) for m in vendors.models()])  # type: ignore[arg-type]
    return PolycascadeChat(models=["v/cheap", "v/mid", "v/strong"], catalog=catalog, **kw)


def test_polycascade_chat_reports_usage_cost_and_decision(vendors: Vendors) -> None:
    message = chat(vendors).invoke("Capital of France?")
    assert message.content == "Paris (from cheap)"
    meta = message.response_metadata
    assert meta["model_name"] == "v/cheap" and meta["vendor"] == "DeepSeek" and float(meta["cost_usd"]) > 0
    assert meta["call_id"] and message.usage_metadata and message.usage_metadata["input_tokens"] > 0  # type: ignore[attr-defined]


async def test_polycascade_chat_async_stream_tools_and_structured_output(vendors: Vendors) -> None:
    llm = chat(vendors)
    chunks = [c async for c in llm.astream("Capital of France?")]
    assert "".join(str(c.content) for c in chunks) == "Paris (from cheap)"
    called = await llm.bind_tools([calculator]).ainvoke("What is 17 * 23?")
    assert called.tool_calls[0]["args"] == {"expression": "17 * 23"}  # type: ignore[attr-defined]
    parsed = await llm.with_structured_output(Capital).ainvoke("Capital of France, as JSON")
    assert parsed == Capital(city="Paris", country="France")


def test_a_prebuilt_react_agent_runs_two_tools_on_polycascade_chat(vendors: Vendors) -> None:
    with warnings.catch_warnings():  # LangGraph 1.x points to langchain.agents; the prebuilt agent still ships
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        agent = create_react_agent(chat(vendors), ALL_TOOLS)
    state = agent.invoke({"messages": [("user", "What is 17 * 23? Then tell me about gpt-4o-mini.")]})
    final = state["messages"][-1].content
    assert "391" in final and "OpenAI (US)" in final
    tools_used = [m.name for m in state["messages"] if m.type == "tool"]
    assert tools_used == ["calculator", "model_info"]
