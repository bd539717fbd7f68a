"""OpenTelemetry: GenAI spans and metrics for an application with its own SDK, and OTLP export from
`polycascade run` configured by environment variables only, received by a loopback collector."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from polycascade import Task, run_task
from polycascade.catalog import Catalog, ModelsFile
from polycascade.policies.config import DataClassRule, Policy
from polycascade.testing import ScriptedRequest, ScriptedServer

from .conftest import run_cli, serving
from .test_workflows import Vendors, documents, lines

CANARY = "sk-CANARY-otel-7731"


class Telemetry:
    """The application's SDK: set once per process (OpenTelemetry allows one global provider)."""

    def __init__(self) -> None:
        self.spans, self.reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            p
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for p in m.data.data_points
        ]


@pytest.fixture(scope="module")
def sdk() -> Telemetry:
    return Telemetry()


@pytest.fixture
def otel(sdk: Telemetry) -> Telemetry:
    sdk.spans.clear()
    return sdk


@pytest.fixture
def canary_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ACME_LLM_KEY", CANARY)
    return CANARY


def _leaks(spans: list[ReadableSpan], secret: str) -> list[str]:
    seen = [
        f"{s.name}: {v}"
        for s in spans
        for v in [*(s.attributes or {}).values(), *(a for e in s.events for a in (e.attributes or {}).values())]
        if secret in str(v)
    ]
    return seen


def answers(req: ScriptedRequest) -> str:
    return "SCORE: 9" if "SCORE: n" in req.prompt else "Paris is the capital."


def test_one_run_task_is_a_workflow_span_with_chat_spans_verdicts_and_metrics(otel: Telemetry, canary_key: str) -> None:
    with ScriptedServer(answers) as s:
        small = s.model("mistral/small", vendor="Mistral", jurisdiction="FR", quality=0.9, api_key_env="ACME_LLM_KEY")
        judge = s.model("openai/judge", vendor="OpenAI", jurisdiction="US", quality=0.9)
        catalog = Catalog.bundled().with_models([small, judge])
        result = run_task(Task("Capital of France?", data_class="public"), [small], judges=[judge], catalog=catalog)
    spans = otel.spans.get_finished_spans()
    [workflow] = [s for s in spans if s.name == "invoke_workflow polycascade.cascade"]
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert {s.name for s in chats} == {"chat small", "chat judge"}
    answer = next(s for s in chats if s.name == "chat small")
    a = dict(answer.attributes or {})
    assert answer.kind is SpanKind.CLIENT and answer.parent is not None
    assert answer.parent.span_id == workflow.context.span_id
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "small"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"] and a["server.address"] == "127.0.0.1"
    attempt = result.attempts[0]
    assert a["polycascade.call_id"] == attempt.call_id  # what `polycascade explain` takes
    assert Decimal(a["polycascade.cost_usd"]) == attempt.cost > 0
    assert a["polycascade.decision.chosen"] == "mistral/small" and a["polycascade.reserved_usd"]
    assert (a["polycascade.vendor.jurisdiction"], a["polycascade.host.jurisdiction"]) == ("FR", "FR")
    assert a["polycascade.data_class"] == "public" and a["polycascade.tenant"] == "default"
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # content is opt-in
    w = dict(workflow.attributes or {})
    assert w["gen_ai.operation.name"] == "invoke_workflow" and w["polycascade.status"] == result.status
    [verdict] = [e for e in workflow.events if e.name == "gen_ai.evaluation.result"]
    assert (verdict.attributes or {})["gen_ai.evaluation.score.label"] == "pass"
    usage = otel.points("gen_ai.client.token.usage")
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    assert all(p.attributes["gen_ai.provider.name"] == "openai" for p in usage)
    assert otel.points("gen_ai.client.operation.duration")
    assert _leaks(list(spans), canary_key) == []
    assert canary_key not in json.dumps([p.attributes for p in usage], default=str)


class City(BaseModel):
    city: str


def test_denials_and_escalations_are_counted_and_failures_typed(otel: Telemetry) -> None:
    def respond(req: ScriptedRequest) -> str:
        if req.model == "weak":
            return "not json"
        return '{"city": "Paris"}'

    with ScriptedServer(respond) as s:
        weak = s.model("cn/weak", vendor="DeepSeek", jurisdiction="CN", input_per_mtok="0.1", quality=0.9,
                       capabilities=["json_schema"])  # fmt: skip
        strong = s.model("fr/strong", vendor="Mistral", jurisdiction="FR", input_per_mtok="5", quality=0.95,
                         capabilities=["json_schema"])  # fmt: skip
        us = s.model("us/any", vendor="OpenAI", jurisdiction="US", quality=0.99)
        rule = DataClassRule(vendor_jurisdictions=["EU", "CN"])
        policy = Policy(name="eu", data_classes={"eu": rule}, default_data_class="eu")
        catalog = Catalog.bundled().with_models([weak, strong, us])
        task = Task("Capital of France? JSON.", data_class="eu", schema=City)
        result = run_task(task, [weak, strong, us], catalog=catalog, policy=policy)
    assert [a.model for a in result.attempts] == ["cn/weak", "fr/strong"]
    denials = otel.points("polycascade.denials")
    assert any(p.attributes["polycascade.rule"] == "residency" and p.value >= 1 for p in denials)
    escalations = otel.points("polycascade.escalations")
    assert any(p.attributes["gen_ai.request.model"] == "cn/weak" for p in escalations)


def test_prompt_and_answer_text_only_when_the_user_opts_in(otel: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with ScriptedServer(answers) as s:
        small = s.model("mistral/small", vendor="Mistral", jurisdiction="FR", quality=0.9)
        run_task(
            Task("Capital of France?", data_class="public"), [small], catalog=Catalog.bundled().with_models([small])
        )
    [chat] = [s for s in otel.spans.get_finished_spans() if s.name == "chat small"]
    sent = json.loads(str((chat.attributes or {})["gen_ai.input.messages"]))
    got = json.loads(str((chat.attributes or {})["gen_ai.output.messages"]))
    assert sent[-1]["parts"][0]["content"].startswith("Capital of France?")
    assert got[0]["parts"][0]["content"] == "Paris is the capital."


class Collector:
    """An OTLP/HTTP receiver on loopback, decoding what it is sent with opentelemetry-proto."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    collector.traces.append(ExportTraceServiceRequest.FromString(body))
                elif self.path == "/v1/metrics":
                    collector.metrics.append(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (span.name, {kv.key: _value(kv.value) for kv in span.attributes}, resource)
            for request in self.traces
            for rs in request.resource_spans
            for resource in [{kv.key: _value(kv.value) for kv in rs.resource.attributes}]
            for ss in rs.scope_spans
            for span in ss.spans
        ]  # type: ignore[misc]

    def metric_names(self) -> set[str]:
        return {
            m.name for r in self.metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


def test_polycascade_run_exports_over_otlp_configured_by_environment_variables_only(
    collector: Collector, tmp_path: Path
) -> None:
    vendors = Vendors()
    try:
        folder = documents(tmp_path / "in", 3)
        out = tmp_path / "out.jsonl"
        env = {
            **os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "nightly-batch",
            "ACME_LLM_KEY": CANARY,
        }  # fmt: skip
        env.pop("PYTEST_CURRENT_TEST", None)
        env["POLYCASCADE_LOOPBACK_ONLY"] = "1"
        keyed = {"api_key_env": "ACME_LLM_KEY", "input_per_mtok": "0.2", "output_per_mtok": "0.4"}
        models = ModelsFile(models=[
            vendors.server.model("v/cheap", vendor="DeepSeek", jurisdiction="CN", quality=0.7, **keyed),
            vendors.server.model("v/judge", vendor="OpenAI", jurisdiction="US", quality=0.9),
        ]).write(tmp_path / "m.yaml")  # fmt: skip
        done = run_cli("run", "summarise", "--input", str(folder), "--out", str(out), "--models", str(models),
                       "--no-local", "--no-progress", "--ledger", str(tmp_path / "l.db"), env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(lines(out)) == 3
    finally:
        vendors.server.stop()
    spans = collector.spans()
    chats = [(name, attrs, res) for name, attrs, res in spans if attrs.get("gen_ai.operation.name") == "chat"]
    workflows = [name for name, attrs, _ in spans if attrs.get("gen_ai.operation.name") == "invoke_workflow"]
    assert len(workflows) == 3 and len(chats) >= 3
    _, attrs, resource = chats[0]
    assert resource["service.name"] == "nightly-batch"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.usage.input_tokens"] > 0
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= collector.metric_names()
    assert CANARY not in str(spans)


def test_serve_exposes_prometheus_metrics_on_a_loopback_port_of_its_own(tmp_path: Path) -> None:
    import openai
    import requests
    import yaml
    from prometheus_client.parser import text_string_to_metric_families

    gateway_key, metrics_port = "gw-key-PROM-1", free_port()
    with ScriptedServer(answers) as vendor:
        model = vendor.model("acme/small", vendor="Acme", jurisdiction="US", api_key_env="ACME_LLM_KEY")
        models = ModelsFile(models=[model]).write(tmp_path / "models.yaml")
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({
            "name": "prom", "models": ["acme/small"], "budgets": {"default_tenant_day_usd": "5"},
        }))  # fmt: skip
        tenants = tmp_path / "tenants.yaml"
        tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"key_env": "GW_KEY"}}}))
        args = ["--policy", str(policy), "--models", str(models), "--tenants", str(tenants),
                "--ledger", str(tmp_path / "l.db"), "--no-local", "--metrics-port", str(metrics_port)]  # fmt: skip
        env = {**os.environ, "GW_KEY": gateway_key, "ACME_LLM_KEY": CANARY}
        with serving(*args, env=env) as url:
            client = openai.OpenAI(base_url=url, api_key=gateway_key, max_retries=0)
            for _ in range(3):
                client.chat.completions.create(model="acme/small", messages=[{"role": "user", "content": "hi"}])
            text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            on_the_gateway = requests.get(url.removesuffix("/v1") + "/metrics", timeout=10)
    assert on_the_gateway.status_code == 404  # tenants' port: no spend of other tenants there
    families = {f.name: f for f in text_string_to_metric_families(text)}
    usage = families["gen_ai_client_token_usage"]
    counts = [s for s in usage.samples if s.name.endswith("_count")]
    assert {s.labels["gen_ai_token_type"] for s in counts} == {"input", "output"}
    assert all(s.value == 3 for s in counts) and counts[0].labels["gen_ai_provider_name"] == "openai"
    assert "gen_ai_client_operation_duration_seconds" in families
    [budget] = [
        s for s in families["polycascade_budget_remaining_USD"].samples if s.labels["polycascade_tenant"] == "acme"
    ]
    assert budget.labels["polycascade_budget"] == "tenant" and 4.99 < budget.value < 5
    cost = [s for f in families.values() if f.name.startswith("polycascade_cost") for s in f.samples]
    assert cost and cost[0].labels["polycascade_vendor"] == "Acme" and cost[0].value > 0
    assert CANARY not in text and gateway_key not in text


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
