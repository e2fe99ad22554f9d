"""Tracing with OpenTelemetry: spans for saga steps and NATS calls, exported over OTLP/HTTP
to ``JAEGER_ENDPOINT`` (Jaeger accepts OTLP). Without an endpoint the spans are no-ops.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["setup_tracing", "tracer"]

#: Resolves to the real provider once `setup_tracing` ran (a proxy until then).
tracer = trace.get_tracer("payment-orchestrator")

_provider: TracerProvider | None = None


def setup_tracing(endpoint: str, service: str = "payment-orchestrator") -> TracerProvider:
    """Install the OTLP exporter; `endpoint` is the collector's base URL (…:4318)."""
    global _provider
    if _provider is None:
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        _provider = TracerProvider(resource=Resource.create({"service.name": service}))
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        trace.set_tracer_provider(_provider)
    return _provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()
