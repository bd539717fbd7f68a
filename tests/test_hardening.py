"""Regression tests for what an adversarial pass broke (issue #20), each through a public surface:
`serve` via the openai SDK and raw HTTP, `run` as a subprocess, `run_task` in-process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycascade.catalog import ModelsFile
from polycascade.policies.config import DataClassRule, Policy, load_policy
from polycascade.testing import ScriptedServer, capable

from .conftest import run_cli, serving

KEY = "hardening-tenant-key-0123456789"


class Gateway:
    def __init__(self, url: str, vendor: ScriptedServer) -> None:
        self.url, self.vendor = url, vendor
        self.client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)

    def post(self, body: Any = None, *, data: bytes | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        if data is None:
            return requests.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=60)
        return requests.post(f"{self.url}/chat/completions", data=data, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hardening")
    with ScriptedServer(capable) as vendor:
        models = [vendor.model("acme/small", vendor="Acme", jurisdiction="US", input_per_mtok="1", output_per_mtok="2")]
        models_file = ModelsFile(models=models).write(tmp / "models.yaml")
        policy = tmp / "policy.yaml"
        policy.write_text(yaml.safe_dump({"name": "hard", "models": ["acme/small"]}))
        tenants = tmp / "tenants.yaml"
        tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"key_env": "HARD_KEY"}}}))
        args = ["--policy", str(policy), "--models", str(models_file), "--tenants", str(tenants),
                "--ledger", str(tmp / "ledger.db"), "--no-local"]  # fmt: skip
        with serving(*args, env={**os.environ, "HARD_KEY": KEY}) as url:
            yield Gateway(url, vendor)


def _openai_error(reply: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    error = reply.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys() and "Traceback" not in error["message"]
    if field is not None:
        assert error["param"] == field, error
    return dict(error)


ASK = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "acme/small", "messages": "hello"}, "messages"),
        ({"model": "acme/small", "messages": ["hello"]}, "messages.0"),
        ({"model": "acme/small", "messages": ASK, "metadata": "confidential"}, "metadata"),
        ({"model": "acme/small", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "acme/small", "messages": ASK, "max_tokens": -100000}, "max_tokens"),
        ({"model": "acme/small", "messages": ASK, "max_tokens": 1e12}, "max_tokens"),
        ({"model": "acme/small", "messages": []}, "messages"),
        ([1, 2, 3], None),
    ],
)
def test_a_malformed_request_is_a_400_in_openais_shape_and_reaches_no_vendor(
    gateway: Gateway, body: Any, field: str | None
) -> None:
    before = gateway.vendor.count()
    error = _openai_error(gateway.post(body), 400, field)
    assert error["type"] == "invalid_request_error" and gateway.vendor.count() == before


def test_infinity_and_broken_json_are_400s(gateway: Gateway) -> None:
    infinite = b'{"model": "acme/small", "messages": [{"role": "user", "content": "x"}], "max_tokens": Infinity}'
    _openai_error(gateway.post(data=infinite), 400, "max_tokens")
    _openai_error(gateway.post(data=b'{"model": "acme/small", "messages": ['), 400)


def test_a_body_over_32_mb_is_a_json_413(gateway: Gateway) -> None:
    huge = b'{"model": "acme/small", "messages": [{"role": "user", "content": "' + b"x" * (33 * 2**20) + b'"}]}'
    _openai_error(gateway.post(data=huge), 413)


def test_the_openai_sdk_sees_a_bad_request_not_a_server_error(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        gateway.client.chat.completions.create(model="acme/small", messages=ASK, max_tokens=-100000)  # type: ignore[arg-type]
    reply = gateway.client.chat.completions.create(model="acme/small", messages=ASK, max_tokens=50)  # type: ignore[arg-type]
    assert reply.choices[0].message.content


def test_unknown_paths_and_methods_answer_in_openais_shape(gateway: Gateway) -> None:
    base = gateway.url.removesuffix("/v1")
    _openai_error(requests.get(f"{base}/v1/nothing-here", timeout=10), 404)
    wrong = requests.put(f"{gateway.url}/chat/completions", timeout=10)
    _openai_error(wrong, 405)
    assert "POST" in wrong.headers["Allow"]


# --- configuration files: nothing accepted silently ------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "first"),
    [
        ("name: p\nbudgets: {per_run_usd: 5}\nbudgets: {}\n", 3, 2),  # a second `budgets:` removed every budget
        ("name: p\nbudgets:\n  per_run_usd: 5\n  per_run_usd: 5000\n", 4, 3),
    ],
)
def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path, text: str, line: int, first: int) -> None:
    checked = run_cli("policy", "check", str(_write(tmp_path / "p.yaml", text)))
    assert checked.returncode == 2, checked.stdout
    assert f"p.yaml:{line}: key" in checked.stderr and f"first at line {first}" in checked.stderr


def test_a_model_declared_twice_is_an_error_naming_both_places(tmp_path: Path) -> None:
    models = _write(tmp_path / "m.yaml", "models:\n  - {id: a/x, provider: openai, hosting: self_hosted}\n"
                                          "  - {id: a/x, provider: openai, hosting: self_hosted}\n")  # fmt: skip
    listed = run_cli("models", "--models", str(models))
    assert listed.returncode == 2 and "m.yaml:3: field 'models.1.id'" in listed.stderr
    assert "declared twice (first at" in listed.stderr and "m.yaml:2" in listed.stderr


def test_an_unknown_jurisdiction_is_an_error_and_uk_means_gb(tmp_path: Path) -> None:
    xx = "name: p\ndata_classes:\n  internal: {vendor_jurisdictions: [JP, XX]}\ndefault_data_class: internal\n"
    checked = run_cli("policy", "check", str(_write(tmp_path / "xx.yaml", xx)))
    assert checked.returncode == 2 and "xx.yaml:3" in checked.stderr and "unknown jurisdiction 'XX'" in checked.stderr
    uk = "name: p\ndata_classes:\n  internal: {vendor_jurisdictions: [UK]}\ndefault_data_class: internal\n"
    policy = load_policy(_write(tmp_path / "uk.yaml", uk), resolve_models=False).policy
    assert policy.data_classes["internal"].vendor_jurisdictions == ["GB"]


def test_an_unknown_top_level_key_is_reported_where_it_is_written(tmp_path: Path) -> None:
    text = "name: p\nbudget:\n  per_run_usd: 5\n"  # `budget`, not `budgets`: its value starts a line below
    checked = run_cli("policy", "check", str(_write(tmp_path / "typo.yaml", text)))
    assert checked.returncode == 2 and "typo.yaml:2: field 'budget'" in checked.stderr


# --- residency: an endpoint nobody located goes nowhere that restricts hosts ----------------------


def test_a_private_endpoint_without_a_declared_host_is_denied_confidential_data(tmp_path: Path) -> None:
    from polycascade import Catalog, Task, run_task
    from polycascade.catalog import UserModel

    with ScriptedServer(lambda req: "answer") as vendor:
        partner = UserModel(id="partner/llama", provider="openai", model="llama-3.3-70b-instruct",
                            api_base=vendor.url("partner"), price={"input_per_mtok": 1, "output_per_mtok": 1})  # type: ignore[arg-type]  # fmt: skip
        catalog = Catalog.bundled().with_models([partner])
        assert (catalog["partner/llama"].host_jurisdiction, catalog["partner/llama"].host) == ("??", "127.0.0.1")
        policy = Policy(name="p", data_classes={"confidential": DataClassRule(host_jurisdictions=["US", "JP"])},
                        default_data_class="confidential")  # fmt: skip
        result = run_task(Task("secret"), ["partner/llama"], policy=policy, catalog=catalog)
        assert result.status == "failed" and "residency" in result.stop_reason and vendor.count() == 0
        moved = Catalog.bundled().with_models([UserModel(id="gpt-4o-mini", api_base=vendor.url("proxy"))])
        assert moved["gpt-4o-mini"].host_jurisdiction == "??"  # the catalog's host (OpenAI, US) no longer holds


# --- the vendor's faults, named for what they are ----------------------------------------------


async def test_a_malformed_vendor_body_is_recorded_as_malformed_response() -> None:
    from polycascade import MalformedResponse
    from polycascade.catalog import Catalog
    from polycascade.gateway import Gateway, RetryPolicy
    from polycascade.ledger import MemoryLedger
    from polycascade.testing import Fault
    from polycascade.types import CompletionRequest

    with ScriptedServer(lambda req: Fault.malformed()) as vendor:
        ledger = MemoryLedger()
        gateway = Gateway(Catalog.bundled().with_models([vendor.model("a/m", vendor="Acme", jurisdiction="US")]),
                          ledger, RetryPolicy(max_attempts=2, initial_s=0.01))  # fmt: skip
        with pytest.raises(MalformedResponse):
            await gateway.complete(CompletionRequest.of("a/m", "hi"))
        assert [r.outcome for r in await ledger.calls()] == ["MalformedResponse"] and vendor.count() == 2


# --- batches: every record answered once, on its own line --------------------------------------


def _run(tmp: Path, models: Path, inputs: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "summarise", "--input", str(inputs), "--out", str(out), "--models", str(models),
                   "--no-local", "--no-progress", "--ledger", str(tmp / "ledger.db"), cwd=tmp)  # fmt: skip


def _lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _echo(req: Any) -> str:
    return f"summary of {req.prompt.split('<text>')[-1].split('</text>')[0].strip()}"


def test_records_sharing_an_id_are_each_answered_and_reported(tmp_path: Path) -> None:
    with ScriptedServer(_echo) as vendor:
        models = ModelsFile(models=[vendor.model("v/a", vendor="Acme", jurisdiction="US")]).write(tmp_path / "m.yaml")
        inputs = tmp_path / "in"
        inputs.mkdir()
        (inputs / "invoices.jsonl").write_text('{"id": "inv-1", "text": "Acme owes 10 yen."}\n'
                                               '{"id": "inv-1", "text": "Beta owes 20 yen."}\n')  # fmt: skip
        out = tmp_path / "out.jsonl"
        done = _run(tmp_path, models, inputs, out)
        assert done.returncode == 0, done.stderr
        by_key = {line["key"]: line for line in _lines(out)}
        assert set(by_key) == {"invoices.jsonl:1", "invoices.jsonl:2"} and vendor.count() == 2
        assert (
            "Acme owes" in by_key["invoices.jsonl:1"]["summary"]
            and "Beta owes" in by_key["invoices.jsonl:2"]["summary"]
        )
        assert "1 id(s) given to more than one record" in done.stderr and "invoices.jsonl#inv-1" in done.stderr
        again = _run(tmp_path, models, inputs, out)  # a rerun skips both: they are told apart by key
        assert again.returncode == 0 and vendor.count() == 2 and len(_lines(out)) == 2


def test_a_broken_jsonl_line_is_an_error_record_naming_its_line_and_the_rest_run(tmp_path: Path) -> None:
    with ScriptedServer(_echo) as vendor:
        models = ModelsFile(models=[vendor.model("v/a", vendor="Acme", jurisdiction="US")]).write(tmp_path / "m.yaml")
        inputs = tmp_path / "in"
        inputs.mkdir()
        good = [json.dumps({"id": f"t{i}", "text": f"ticket {i} text"}) for i in range(4)]
        (inputs / "tickets.jsonl").write_text("\n".join([good[0], '{"id": "t-bad", "text": "unterminated',
                                                         *good[1:]]) + "\n")  # fmt: skip
        out = tmp_path / "out.jsonl"
        done = _run(tmp_path, models, inputs, out)
        assert done.returncode == 0, done.stderr
        results = _lines(out)
        errors = [r for r in results if r["status"] == "error"]
        assert len(results) == 5 and vendor.count() == 4
        assert len(errors) == 1 and errors[0]["error"].startswith("tickets.jsonl:2: invalid JSON at column")


def test_a_torn_last_line_is_cut_and_its_document_redone(tmp_path: Path) -> None:
    with ScriptedServer(_echo) as vendor:
        models = ModelsFile(models=[vendor.model("v/a", vendor="Acme", jurisdiction="US")]).write(tmp_path / "m.yaml")
        inputs = tmp_path / "in"
        inputs.mkdir()
        for i in range(3):
            (inputs / f"d{i}.txt").write_text(f"document {i}")
        out = tmp_path / "out.jsonl"
        assert _run(tmp_path, models, inputs, out).returncode == 0
        whole = out.read_text().splitlines()
        out.write_text("\n".join(whole[:2]) + "\n" + whole[2][: len(whole[2]) // 2])  # a crash mid-write
        torn_key = json.loads(whole[2])["key"]
        again = _run(tmp_path, models, inputs, out)
        assert again.returncode == 0, again.stderr
        results = _lines(out)  # every line parses: the fragment is gone
        assert sorted(r["key"] for r in results) == ["d0.txt", "d1.txt", "d2.txt"]
        assert [r["key"] for r in results][-1] == torn_key


# --- keys: a vendor that echoes one reaches no tenant, no output ---------------------------------

CANARY = "acme-canary-9f3b1c7e5d2a4b6c8e0f"  # held in ACME_LLM_KEY_PROD: a name no pattern would guess


def _echoes_the_key(req: Any) -> Any:
    from polycascade.testing import Fault

    if req.vendor == "acme":  # the private endpoint rejects the key and quotes it back, as some do
        return Fault(401, message=f"Incorrect API key provided: {req.headers.get('Authorization', '')}")
    return "the answer"


def test_a_key_a_vendor_echoes_reaches_neither_the_tenant_nor_ask_json(tmp_path: Path) -> None:
    with ScriptedServer(_echoes_the_key) as vendor:
        private = vendor.model("acme/private", vendor="Acme", jurisdiction="US", input_per_mtok="0.01",
                               output_per_mtok="0.01", quality=0.9, api_key_env="ACME_LLM_KEY_PROD")  # fmt: skip
        backup = vendor.model("beta/backup", vendor="Beta", jurisdiction="US", input_per_mtok="1", quality=0.8)
        models = ModelsFile(models=[private, backup]).write(tmp_path / "models.yaml")
        env = {**os.environ, "ACME_LLM_KEY_PROD": CANARY, "HARD_KEY": KEY}
        asked = run_cli("ask", "hello", "--models", str(models), "--no-local", "--json", "--ledger",
                        str(tmp_path / "ask.db"), env=env)  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        assert "the answer" in asked.stdout and "RequestRejected" in asked.stdout  # the failover is shown …
        assert CANARY[:8] not in asked.stdout + asked.stderr  # … without the key

        policy = _write(tmp_path / "p.yaml", "name: p\nmodels: [acme/private, beta/backup]\n"
                                             "routes: {both: {models: [acme/private, beta/backup]}}\n")  # fmt: skip
        tenants = _write(tmp_path / "t.yaml", "tenants: {acme: {key_env: HARD_KEY}}\n")
        args = ["--policy", str(policy), "--models", str(models), "--tenants", str(tenants), "--no-local",
                "--ledger", str(tmp_path / "serve.db")]  # fmt: skip
        with serving(*args, env=env) as url:
            ask = {"Authorization": f"Bearer {KEY}"}
            failed_over = requests.post(f"{url}/chat/completions", headers=ask, json={"model": "both", "messages": ASK})
            only = requests.post(
                f"{url}/chat/completions", headers=ask, json={"model": "acme/private", "messages": ASK}
            )
        for response in (failed_over, only):
            assert CANARY[:8] not in response.text and "Incorrect API key" not in response.text
        assert failed_over.status_code == 200, failed_over.text
        attempts = failed_over.json()["polycascade"]["attempts"]
        assert [a["error"] for a in attempts] == ["RequestRejected (HTTP 401)", None]  # summarised, not echoed
        assert only.status_code == 502  # the only model asked rejects the key


# --- budgets: a reservation covers everything a call sends ---------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400)  # emoji, CJK, controls …
_MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": _TEXT}),
    min_size=1, max_size=6,
)  # fmt: skip
_TOOLS = st.lists(
    st.builds(
        lambda name, text: {
            "type": "function",
            "function": {"name": name, "description": text, "parameters": {"type": "object", "properties": {
                "q": {"type": "string", "description": text}}}},
        },
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True), _TEXT,
    ),
    max_size=3,
)  # fmt: skip


def _bills_like_a_real_tokenizer(req: Any) -> Any:
    """Bills the prompt as GPT-4o's tokenizer counts it (tools included) and answers at max_tokens."""
    import litellm

    from polycascade.testing import Reply

    prompt = litellm.token_counter(model="gpt-4o", messages=req.messages, tools=req.body.get("tools") or None)
    completion = int(req.body.get("max_tokens") or 1)
    return Reply("x", usage={"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion})  # fmt: skip


@pytest.fixture(scope="module")
def billed() -> Iterator[Any]:
    from polycascade import Catalog, cascade

    with ScriptedServer(_bills_like_a_real_tokenizer) as vendor:
        spec = vendor.model("acme/m", vendor="Acme", jurisdiction="US", input_per_mtok="3", output_per_mtok="15",
                            capabilities=["tools"])  # fmt: skip
        yield cascade(["acme/m"], catalog=Catalog.bundled().with_models([spec]))


@given(messages=_MESSAGES, tools=_TOOLS, max_tokens=st.integers(1, 4000))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_reservation_covers_the_call_it_pays_for(billed: Any, messages: Any, tools: Any, max_tokens: int) -> None:
    from polycascade import Task
    from polycascade.types import Message

    conversation = tuple(Message(m["role"], m["content"]) for m in messages)
    result = billed.run_sync(Task("", messages=conversation, tools=tuple(tools), max_tokens=max_tokens))
    [attempt] = result.attempts
    assert attempt.decision is not None and attempt.cost > 0
    assert attempt.cost <= attempt.decision.reservation.amount, (attempt.cost, attempt.decision.reservation.amount)


def test_a_burst_of_long_requests_stays_within_the_run_budget(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    import aiohttp

    with ScriptedServer(lambda req: "fine", latency_s=0.2) as vendor:
        spec = vendor.model("acme/m", vendor="Acme", jurisdiction="US", input_per_mtok="0.2", output_per_mtok="1",
                            context_window=128_000)  # fmt: skip
        models = ModelsFile(models=[spec]).write(tmp_path / "models.yaml")
        policy = _write(tmp_path / "p.yaml", "name: p\nmodels: [acme/m]\nbudgets: {per_run_usd: 0.02}\n")
        tenants = _write(tmp_path / "t.yaml", "tenants: {acme: {key_env: HARD_KEY}}\n")
        ledger = tmp_path / "ledger.db"
        args = ["--policy", str(policy), "--models", str(models), "--tenants", str(tenants), "--no-local",
                "--ledger", str(ledger)]  # fmt: skip
        long_system = "Policy text. " * 3300  # ~43k characters, sent whole with every request
        messages = [{"role": "system", "content": long_system}, {"role": "user", "content": "ok?"}]
        body = {"model": "acme/m", "max_tokens": 50, "messages": messages}

        async def burst(url: str) -> list[int]:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:

                async def one() -> int:
                    async with session.post(f"{url}/chat/completions", json=body) as reply:
                        return reply.status

                return await asyncio.gather(*(one() for _ in range(150)))

        with serving(*args, env={**os.environ, "HARD_KEY": KEY}) as url:
            statuses = asyncio.run(burst(url))
        spent = sqlite3.connect(ledger).execute("SELECT COALESCE(SUM(cost_pico), 0) FROM calls").fetchone()[0] / 1e12
        assert statuses.count(200) >= 1 and set(statuses) <= {200, 429}, statuses
        assert spent <= 0.02, f"ledger ${spent:.4f} over the $0.02 budget ({statuses.count(200)} answered)"


@pytest.mark.parametrize(
    ("field", "value"), [("max_tokens", -100000), ("max_tokens", 10**12), ("max_tokens", 1.5), ("timeout_s", 0)]
)
def test_a_task_no_call_could_honour_is_refused_naming_the_parameter(field: str, value: Any) -> None:
    from polycascade import ConfigError, Task

    with pytest.raises(ConfigError, match=f"`{field}`") as caught:
        Task("x", **{field: value})
    assert caught.value.parameter == field
    with pytest.raises(ConfigError, match=f"`{field}`"):  # a copy is checked as well
        from polycascade.records import replace

        replace(Task("x"), **{field: value})


# --- failover: a long Retry-After means go elsewhere now, judges included ----------------------


def test_a_long_retry_after_fails_over_at_once_and_the_judge_avoids_that_vendor() -> None:
    import time

    from polycascade import Catalog, Task, cascade
    from polycascade.agents.evaluators import LLMJudge
    from polycascade.testing import Fault

    def vendors(req: Any) -> Any:
        if req.vendor == "busyco":
            return Fault.rate_limit(retry_after=10)
        return "SCORE: 9" if "judge" in req.model else "Paris"

    with ScriptedServer(vendors) as server:
        models = [
            server.model("busy/cheap", vendor="BusyCo", jurisdiction="US", input_per_mtok="0.1", quality=0.9),
            server.model("busy/judge", vendor="BusyCo", jurisdiction="US", input_per_mtok="0.1", quality=0.9),
            server.model("calm/mid", vendor="CalmCo", jurisdiction="US", input_per_mtok="1", quality=0.9),
            server.model("fair/judge", vendor="FairCo", jurisdiction="US", input_per_mtok="3", quality=0.9),
        ]
        catalog = Catalog.bundled().with_models(models)
        judge = LLMJudge([catalog["busy/judge"], catalog["fair/judge"]])
        pipeline = cascade(["busy/cheap", "calm/mid"], catalog=catalog, evaluator=judge)
        started = time.monotonic()
        result = pipeline.run_sync(Task("Capital of France?"))
        waited = time.monotonic() - started
        assert result.status == "verified" and result.model == "calm/mid", result.stop_reason
        assert waited < 3, f"waited {waited:.1f} s for a vendor that asked for 10"
        assert server.count(vendor="busyco") == 1  # asked once for the answer; never again, not as a judge
        assert result.verdict is not None and "fair/judge" in result.verdict.reason
