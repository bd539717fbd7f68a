"""OpenTelemetry from the standard environment variables, for `polycascade`'s own processes.

An application embedding polycascade configures its SDK itself; the CLI (`serve`, `run`, `ask`,
Ray workers) does it here when an OTLP endpoint is named and the `otel` extra is installed:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_SERVICE_NAME=batch-nightly polycascade run …

The exporters read the rest of the standard variables themselves (`OTEL_EXPORTER_OTLP_HEADERS`,
per-signal endpoints, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL` …). Spans and
metrics still buffered are flushed when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from opentelemetry import metrics, trace

__all__ = ["configure_from_environment"]

_log = logging.getLogger("polycascade.telemetry")
_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def configure_from_environment(*, prometheus: bool = False) -> bool:
    """Install an SDK when the environment names an OTLP endpoint (traces and metrics over OTLP/HTTP)
    or `prometheus` is asked for (metrics into `prometheus_client`'s registry, for `serve
    --metrics-port`); True if it did. Leaves alone a process whose providers are already set, and
    one with `OTEL_SDK_DISABLED=true`."""
    otlp = any(os.environ.get(v) for v in _ENDPOINTS)
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or not (otlp or prometheus):
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # the application has its own
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        _log.warning("telemetry is asked for but no OpenTelemetry SDK is installed: pip install 'polycascade[otel]'")
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "polycascade")})
    readers: list[MetricReader] = []
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    tracer_provider = TracerProvider(resource=resource)
    if otlp:
        try:
            _add_otlp(tracer_provider, readers)
        except ImportError:
            _log.warning("OTEL_EXPORTER_OTLP_* is set, no OTLP exporter installed: pip install 'polycascade[otel]'")
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    atexit.register(meter_provider.shutdown)
    atexit.register(tracer_provider.shutdown)  # registered last, runs first: spans, then metrics
    return True


def _add_otlp(tracer_provider: Any, readers: list[Any]) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none":
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none":
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
