"""What OpenTelemetry costs per model call: with no SDK (the default) and with one installed.

    python bench/bench_telemetry.py     # rewrites the "telemetry" section of bench/RESULTS.md

The baseline is the same governed call with the instrumentation taken out (the path before it
existed), measured in neighbouring blocks of the same run against a loopback vendor answering at
once: the worst case, where nothing hides the overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _results import publish

from polycascade import telemetry
from polycascade.catalog import Catalog
from polycascade.gateway import Gateway, RetryPolicy
from polycascade.governor import GovernedGateway, Governor
from polycascade.ledgers import open_ledger
from polycascade.policies.config import Budgets, DataClassRule, Policy
from polycascade.testing import ScriptedServer
from polycascade.types import CallContext, CompletionRequest

Call = Callable[[], Awaitable[Any]]


@contextlib.contextmanager
def _span_off(spec: Any, request: Any) -> Iterator[Any]:
    yield None


@contextlib.contextmanager
def uninstrumented() -> Iterator[None]:
    """The gateway as it was before telemetry: both hooks replaced by nothing."""
    span, record = telemetry.call_span, telemetry.record_call
    telemetry.call_span, telemetry.record_call = _span_off, lambda *a, **k: None  # type: ignore[assignment]
    try:
        yield
    finally:
        telemetry.call_span, telemetry.record_call = span, record  # type: ignore[assignment]


async def paired(call: Call, blocks: int, per_block: int) -> tuple[list[float], float, float]:
    """Ratios instrumented/uninstrumented over neighbouring blocks (order alternating), and the totals."""
    ratios, totals = [], {"on": 0.0, "off": 0.0}
    for block in range(blocks):
        seconds = {}
        for name in ("on", "off") if block % 2 == 0 else ("off", "on"):
            with uninstrumented() if name == "off" else contextlib.nullcontext():
                started = time.perf_counter()
                for _ in range(per_block):
                    await call()
                seconds[name] = time.perf_counter() - started
            totals[name] += seconds[name]
        ratios.append(seconds["on"] / seconds["off"])
    return ratios, totals["on"], totals["off"]


def install_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))  # what an OTLP setup does, minus the network
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def measure(calls: int = 1000, blocks: int = 20) -> list[str]:
    server = ScriptedServer(lambda req: "ok").start()
    rows = []
    try:
        model = server.model("bench/m", vendor="Mistral", jurisdiction="FR", input_per_mtok="0.2")
        catalog = Catalog.bundled().with_models([model])
        with tempfile.TemporaryDirectory() as tmp:
            ledger = open_ledger(Path(tmp) / "ledger.db")
            policy = Policy(
                name="bench", data_classes={"internal": DataClassRule()}, budgets=Budgets(per_run_usd=Decimal(1000))
            )
            governed = GovernedGateway(Gateway(catalog, ledger, RetryPolicy()), Governor(policy, ledger))
            request = CompletionRequest.of("bench/m", "Say ok.", max_tokens=5, context=CallContext(run_id="bench"))

            async def call() -> Any:
                return await governed.complete(request)

            for _ in range(30):
                await call()
            hooks = hook_cost(catalog["bench/m"], request, await call())
            for label, setup in (("no SDK (the default)", None), ("SDK installed (batch span processor)", install_sdk)):
                if setup is not None:
                    setup()
                ratios, on, off = await paired(call, blocks, calls // blocks)
                ratio = statistics.median(ratios)
                rows.append(
                    f"| {label} | {off / calls * 1e3:.3f} | {on / calls * 1e3:.3f} | "
                    f"{(on - off) / calls * 1e6:+.0f} | {ratio:.3f}× |"
                )
            await ledger.close()
    finally:
        server.stop()
    per_call = float(rows[0].split("|")[2])
    share = hooks / (per_call * 1e3)
    return [
        f"{calls:,} governed calls per row (gateway + SQLite ledger + policy) to a loopback vendor answering at once, "
        f"in {blocks} neighbouring blocks alternating instrumented and uninstrumented.",
        "",
        "| OpenTelemetry | per call ms, uninstrumented | per call ms, instrumented | µs per call | ratio (median) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"The hooks alone with no SDK, timed over 20,000 calls (finer than the paired blocks, whose spread on this "
        f"shared machine is about ±2%): {hooks:.1f} µs per call, {share:.2%} of the uninstrumented call, so "
        f"{1 + share:.4f}×. Target with no SDK ≤ 1.02×: **{'met' if share <= 0.02 else 'not met'}**. With an SDK "
        "the figure is reported, not targeted: what the SDK costs for two spans' attributes and four instruments.",
    ]


def hook_cost(spec: Any, request: CompletionRequest, completion: Any, n: int = 20_000) -> float:
    """Microseconds per call of the gateway's span and metric hooks, no SDK installed."""
    started = time.perf_counter()
    for _ in range(n):
        with telemetry.call_span(spec, request) as span:
            telemetry.record_call(span, spec, request, 0.005, "id", completion)
    return (time.perf_counter() - started) / n * 1e6


def main() -> int:
    return publish("telemetry", "Telemetry", {"Per-call cost of OpenTelemetry": lambda: asyncio.run(measure())})


if __name__ == "__main__":
    raise SystemExit(main())
