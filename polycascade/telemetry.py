"""OpenTelemetry traces and metrics, named by the GenAI semantic conventions.

Only `opentelemetry-api` is a dependency. Until an application (or `polycascade` itself, from the
standard `OTEL_*` variables: `_otel_setup`) installs an SDK, the API's tracers and meters are
no-ops: spans do not record, so no attribute is even computed. With an SDK:

- each task through the cascade is an INTERNAL span `invoke_workflow polycascade.cascade`
  (`gen_ai.operation.name = invoke_workflow`, `gen_ai.agent.name`), carrying the task's facts and
  each evaluator verdict as a `gen_ai.evaluation.result` event;
- each model call is a CLIENT span `chat {model}` with the conventions' request, response and
  usage attributes, and ours under `polycascade.*`: the call id `polycascade explain` takes, the
  decision (chosen, rejected with rules, policy, reservation), cost in USD as a decimal string,
  data class, vendor and host jurisdictions, tenant;
- metrics `gen_ai.client.token.usage`, `gen_ai.client.operation.duration`, and ours:
  `polycascade.cost` (USD by vendor and jurisdictions), `polycascade.escalations`,
  `polycascade.denials` (by rule), gauges `polycascade.budget.remaining` and
  `polycascade.circuit_breaker.open`.

Prompt and answer text is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
is `true` (as `gen_ai.input.messages` / `gen_ai.output.messages`). Keys never are: nothing here
reads a credential, and error text is reduced to its class (`error.type`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .catalog import ModelSpec
from .types import Completion, CompletionRequest

__all__ = [
    "call_span",
    "count_denials",
    "count_escalation",
    "evaluation_event",
    "finish_workflow",
    "observe_breakers",
    "observe_budgets",
    "provider_name",
    "record_call",
    "workflow_span",
]

_SCOPE = "polycascade"
WORKFLOW = "polycascade.cascade"
# LiteLLM's provider prefix → the conventions' well-known `gen_ai.provider.name` values
_PROVIDERS = {
    "openai": "openai", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "anthropic": "anthropic",
    "bedrock": "aws.bedrock", "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "deepseek": "deepseek",
    "mistral": "mistral_ai", "groq": "groq", "cohere": "cohere", "watsonx": "ibm.watsonx.ai",
    "perplexity": "perplexity", "xai": "x_ai",
}  # fmt: skip


def _capture_content() -> bool:
    return os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() == "true"


# the last value seen of each gauge, read by the SDK when it collects: (name, attributes) → value
_gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {"budget": {}, "breaker": {}}


try:
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _NoSdk
except ImportError:  # a future API without it: the gauges are always kept

    class _NoSdk:  # type: ignore[no-redef]
        pass


def _metering() -> bool:
    """False while no SDK meter provider is set: gauges are then not even updated."""
    return not isinstance(metrics.get_meter_provider(), _NoSdk)


def observe_budgets(budgets: Iterable[tuple[str, str, Decimal]]) -> None:
    """What is left of each budget a decision just saw: (kind: run/task/day/tenant, tenant, remaining USD)."""
    if _metering():
        _instruments()
        for kind, tenant, remaining in budgets:
            _gauges["budget"][(("polycascade.budget", kind), ("polycascade.tenant", tenant))] = float(remaining)


def observe_breakers(vendors: Iterable[str], open_vendors: Iterable[str]) -> None:
    if _metering():
        _instruments()
        opened = set(open_vendors)
        for vendor in vendors:
            _gauges["breaker"][(("polycascade.vendor", vendor),)] = float(vendor in opened)


def _observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(labels)) for labels, value in list(_gauges[name].items())]

    return callback


@cache
def _instruments() -> dict[str, Any]:
    """Created once against the global meter provider (the API's proxy binds them to an SDK set later)."""
    meter = metrics.get_meter(_SCOPE)
    meter.create_observable_gauge(
        "polycascade.budget.remaining", [_observe("budget")], unit="USD",
        description="What is left of each budget, as the latest decision saw it (reservations in flight count).",
    )  # fmt: skip
    meter.create_observable_gauge(
        "polycascade.circuit_breaker.open", [_observe("breaker")], unit="1",
        description="1 while a vendor's circuit is open (its calls refused for a cool-down), else 0.",
    )  # fmt: skip
    return {
        "tokens": meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576],
        ),
        "duration": meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24],
        ),
        "cost": meter.create_counter("polycascade.cost", unit="USD", description="Settled cost of model calls."),
        "escalations": meter.create_counter(
            "polycascade.escalations", unit="{escalation}", description="Answers that failed a check and climbed."
        ),
        "denials": meter.create_counter(
            "polycascade.denials", unit="{denial}", description="Candidates a policy rule refused, by rule."
        ),
    }  # fmt: skip


_tracers: dict[int, trace.Tracer] = {}


def _tracer() -> trace.Tracer | None:
    """Our tracer from the global provider; None while no SDK is set, so that no span is even started."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    tracer = _tracers.get(id(provider))
    if tracer is None:
        tracer = _tracers[id(provider)] = provider.get_tracer(_SCOPE)
    return tracer


@contextlib.contextmanager
def _span(name: str, kind: SpanKind) -> Iterator[Span]:
    tracer = _tracer()
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, kind=kind, record_exception=False, set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:  # its class only: an error's text may quote what was sent
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextlib.contextmanager
def workflow_span(task_id: str, kind: str, data_class: str, run_id: str) -> Iterator[Span]:
    """The span of one task through the cascade; model calls and verdicts nest in it."""
    with _span(f"invoke_workflow {WORKFLOW}", SpanKind.INTERNAL) as span:
        if span.is_recording():
            span.set_attributes({
                "gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": WORKFLOW,
                "polycascade.task.id": task_id, "polycascade.task.kind": kind,
                "polycascade.data_class": data_class, "polycascade.run_id": run_id,
            })  # fmt: skip
        yield span


def finish_workflow(span: Span, status: str, cost: Decimal, rungs: int, stop_reason: str | None) -> None:
    if span.is_recording():
        span.set_attributes({
            "polycascade.status": status, "polycascade.cost_usd": str(cost), "polycascade.rungs": rungs,
            "polycascade.stop_reason": stop_reason or "",
        })  # fmt: skip


def evaluation_event(evaluator: str, passed: bool, score: float | None, reason: str, model: str) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        attributes: dict[str, Any] = {
            "gen_ai.evaluation.name": evaluator, "gen_ai.evaluation.score.label": "pass" if passed else "fail",
            "gen_ai.evaluation.explanation": reason, "polycascade.model": model,
        }  # fmt: skip
        if score is not None:
            attributes["gen_ai.evaluation.score.value"] = score
        span.add_event("gen_ai.evaluation.result", attributes)


def count_escalation(kind: str, from_model: str) -> None:
    _instruments()["escalations"].add(1, {"polycascade.task.kind": kind, "gen_ai.request.model": from_model})


def count_denials(rejected: Mapping[str, Any]) -> None:
    """Candidates a rule refused: counted by rule, and each an event on the task's span (the guardrail)."""
    counter, span = _instruments()["denials"], trace.get_current_span()
    for model, denial in rejected.items():
        counter.add(1, {"polycascade.rule": denial.rule, "gen_ai.request.model": model})
        if span.is_recording():
            span.add_event("polycascade.policy.denial", {
                "polycascade.rule": denial.rule, "polycascade.model": model, "polycascade.reason": denial.reason,
            })  # fmt: skip


@contextlib.contextmanager
def call_span(spec: ModelSpec, request: CompletionRequest) -> Iterator[Span]:
    """The CLIENT span of one model call (retries included); `record_call` fills in how it ended."""
    with _span(f"chat {_model_name(spec)}", SpanKind.CLIENT) as span:
        if span.is_recording():
            span.set_attributes(_request_attributes(spec, request))
        yield span


def _request_attributes(spec: ModelSpec, request: CompletionRequest) -> dict[str, Any]:
    ctx = request.context
    attributes: dict[str, Any] = {
        **_chat(spec), "gen_ai.request.max_tokens": request.max_tokens,
        "polycascade.model": spec.id, "polycascade.vendor": spec.vendor,
        "polycascade.vendor.jurisdiction": spec.jurisdiction, "polycascade.host.jurisdiction": spec.host_jurisdiction,
        "polycascade.data_class": ctx.data_class, "polycascade.tenant": ctx.tenant, "polycascade.run_id": ctx.run_id,
        "polycascade.task.id": ctx.task_id, "polycascade.task.kind": ctx.task_kind, "polycascade.node": ctx.node,
    }  # fmt: skip
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if spec.api_base and (where := urlsplit(spec.api_base)).hostname:
        attributes["server.address"] = where.hostname
        if where.port:
            attributes["server.port"] = where.port
    if ctx.decision is not None:
        attributes.update(_decision_attributes(ctx.decision))
    if _capture_content():
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in request.messages],
            ensure_ascii=False,
        )
    return attributes


def _decision_attributes(why: Mapping[str, Any]) -> dict[str, Any]:
    rejected = why.get("rejected") or {}
    return {
        "polycascade.decision.chosen": str(why.get("chosen") or ""),
        "polycascade.decision.reason": str(why.get("reason") or ""),
        "polycascade.decision.rejected": [f"{m}: {d.get('rule')}" for m, d in sorted(rejected.items())],
        "polycascade.policy": str(why.get("policy") or ""),
        "polycascade.reserved_usd": str(why.get("reserved_usd") or ""),
    }


def record_call(
    span: Span, spec: ModelSpec, request: CompletionRequest, duration_s: float, call_id: str,
    completion: Completion | None = None, error: BaseException | None = None,
) -> None:  # fmt: skip
    """How a call ended, on its span and in the metrics (both no-ops without an SDK)."""
    base = _chat(spec)
    if error is not None:
        base["error.type"] = type(error).__name__
    instruments = _instruments()
    instruments["duration"].record(duration_s, base)
    if completion is not None:
        measured = {**base, "gen_ai.response.model": base["gen_ai.request.model"]}
        instruments["tokens"].record(completion.usage.input_tokens, {**measured, "gen_ai.token.type": "input"})
        instruments["tokens"].record(completion.usage.output_tokens, {**measured, "gen_ai.token.type": "output"})
        instruments["cost"].add(float(completion.cost), {
            "polycascade.vendor": spec.vendor, "polycascade.vendor.jurisdiction": spec.jurisdiction,
            "polycascade.host.jurisdiction": spec.host_jurisdiction,
        })  # fmt: skip
    if not span.is_recording():
        return
    span.set_attribute("polycascade.call_id", call_id)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        return
    assert completion is not None
    span.set_attributes({
        "gen_ai.response.model": base["gen_ai.request.model"],
        "gen_ai.usage.input_tokens": completion.usage.input_tokens,
        "gen_ai.usage.output_tokens": completion.usage.output_tokens,
        "gen_ai.response.finish_reasons": [completion.finish_reason or "stop"],
        "polycascade.cost_usd": str(completion.cost), "polycascade.attempts": completion.attempts,
    })  # fmt: skip
    if _capture_content():
        output = [{"role": "assistant", "parts": [{"type": "text", "content": completion.text}],
                   "finish_reason": completion.finish_reason or "stop"}]  # fmt: skip
        span.set_attribute("gen_ai.output.messages", json.dumps(output, ensure_ascii=False))


def provider_name(spec: ModelSpec) -> str:
    return _PROVIDERS.get(spec.provider, spec.provider)


def _model_name(spec: ModelSpec) -> str:
    """The model as the vendor names it (LiteLLM's provider prefix removed)."""
    return spec.litellm_model.split("/", 1)[-1]


def _chat(spec: ModelSpec) -> dict[str, Any]:
    """What identifies a chat call, on its span and on every metric point alike."""
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider_name(spec),
        "gen_ai.request.model": _model_name(spec),
    }  # fmt: skip
