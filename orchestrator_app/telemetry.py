"""Tracing with OpenTelemetry: one trace per payment, exported over OTLP/HTTP to
``JAEGER_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (Jaeger accepts OTLP).

A payment's trace: the ``traceparent`` of its ``payment.created`` record when the producer
sent one, else a trace id derived from the payment id (so every worker that ever owns the
payment — and a payment stored before tracing existed — lands in the same trace). The
CREATE stores it in the payment row (`Payment.traceparent`); every later command's
``saga.apply`` span is a child of it. The context travels in W3C ``traceparent`` headers on
``payment.state.changed`` records and on NATS requests (the simulator continues it).

Off (no endpoint): `enabled()` is False and callers skip every span and header — one
boolean test per command, no span object, no header dict.
"""

from __future__ import annotations

import atexit
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "enabled", "header_list", "headers", "links_of", "payment_parent", "payment_traceparent",
    "setup_tracing", "shutdown_tracing", "traceparent_of", "tracer",
]

#: Resolves to the real provider once `setup_tracing` ran (a proxy until then).
tracer = trace.get_tracer("payment-orchestrator")

_provider: Any = None
_propagator = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def enabled() -> bool:
    return _provider is not None


def setup_tracing(endpoint: str, service: str = "payment-orchestrator") -> Any:
    """Install the OTLP exporter; `endpoint` is the collector's base URL (…:4318)."""
    global _provider
    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        trace.set_tracer_provider(provider)
        _provider = provider
        # Spans still buffered are exported when the process exits (a worker stopping on
        # SIGTERM exits through sys.exit, so atexit runs).
        atexit.register(shutdown_tracing)
    return _provider


def shutdown_tracing() -> None:
    """Flush the spans still buffered and stop the exporter (at shutdown)."""
    global _provider
    if _provider is not None:
        _provider.force_flush(5000)
        _provider.shutdown()
        _provider = None


def _valid(traceparent: str | None) -> bool:
    if not traceparent:
        return False
    ctx = _propagator.extract({TRACEPARENT: traceparent})
    return trace.get_current_span(ctx).get_span_context().is_valid


def payment_traceparent(payment_id: str, given: str | None = None) -> str:
    """The payment's root traceparent: `given` (the producer's) when valid, else derived
    from the payment id (deterministic: the same on every worker, for every command)."""
    if given and _valid(given):
        return given
    digest = hashlib.sha256(b"payment-trace:" + payment_id.encode()).hexdigest()
    return f"00-{digest[:32]}-{digest[32:48]}-01"


def _context_of(traceparent: str) -> Context:
    return _propagator.extract({TRACEPARENT: traceparent})


def payment_parent(payment_id: str, *traceparents: str | None) -> Context:
    """The parent context of a span about this payment: the first valid traceparent of
    `traceparents` (the stored one first), else the derived one."""
    for candidate in traceparents:
        if candidate and _valid(candidate):
            return _context_of(candidate)
    return _context_of(payment_traceparent(payment_id))


def headers() -> dict[str, str]:
    """W3C headers of the current span (NATS); empty without one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def header_list() -> list[tuple[str, bytes]]:
    """Kafka record headers of the current span."""
    return [(k, v.encode()) for k, v in headers().items()]


def traceparent_of(raw_headers: Any) -> str | None:
    """The ``traceparent`` among Kafka record headers (list of pairs or a mapping) or NATS
    message headers (a dict of str)."""
    if not raw_headers:
        return None
    items: Iterable[tuple[Any, Any]] = (
        raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers)
    for key, value in items:
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.lower() == TRACEPARENT:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return text if _valid(text) else None
    return None


def context_of_headers(raw_headers: Any) -> Context | None:
    traceparent = traceparent_of(raw_headers)
    return _context_of(traceparent) if traceparent else None


def links_of(traceparents: Iterable[str | None]) -> list[Link]:
    """Span links to the traces of a batch's records (a sink batch spans many payments)."""
    links: list[Link] = []
    seen: set[str] = set()
    for traceparent in traceparents:
        if not traceparent or traceparent in seen:
            continue
        seen.add(traceparent)
        span_context = trace.get_current_span(_context_of(traceparent)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links

