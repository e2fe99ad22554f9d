"""Trace context helpers: deterministic per-payment traces, header parsing, old rows."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

from orchestrator_app import telemetry
from orchestrator_app.config import load_settings
from orchestrator_app.domain.records import Payment

GIVEN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_payment_without_a_producer_trace_gets_one_derived_from_its_id() -> None:
    first = telemetry.payment_traceparent("pay-1")
    assert first == telemetry.payment_traceparent("pay-1", "not-a-traceparent")
    assert first != telemetry.payment_traceparent("pay-2")
    digest = hashlib.sha256(b"payment-trace:pay-1").hexdigest()
    assert first == f"00-{digest[:32]}-{digest[32:48]}-01"


def test_the_producer_traceparent_is_continued() -> None:
    assert telemetry.payment_traceparent("pay-1", GIVEN) == GIVEN
    assert telemetry.traceparent_of([("traceparent", GIVEN.encode())]) == GIVEN
    assert telemetry.traceparent_of({"Traceparent": GIVEN}) == GIVEN
    assert telemetry.traceparent_of([("traceparent", b"00-zz-zz-01")]) is None
    assert telemetry.traceparent_of(None) is None


def test_the_stored_traceparent_wins_over_the_derived_one() -> None:
    from opentelemetry import trace

    stored = trace.get_current_span(telemetry.payment_parent("pay-1", GIVEN)).get_span_context()
    assert f"{stored.trace_id:032x}" == GIVEN.split("-")[1]
    derived = trace.get_current_span(telemetry.payment_parent("pay-1", None)).get_span_context()
    assert f"{derived.trace_id:032x}" == telemetry.payment_traceparent("pay-1").split("-")[1]


def test_tracing_is_off_without_an_endpoint_and_makes_no_headers() -> None:
    assert not telemetry.enabled()
    assert telemetry.headers() == {}


def test_a_row_stored_before_tracing_still_loads() -> None:
    row = Payment(
        payment_id="p", amount=Decimal("1.00"), currency="USD", customer_id="c",
        merchant_id="m", created_at="2026-01-01T00:00:00Z", state="NEW", previous_state=None,
        version=1, updated_at="2026-01-01T00:00:00Z", metadata={}, history=[], applied={},
    )
    data = json.loads(row.dumps())
    data.pop("traceparent")
    old = Payment.loads(json.dumps(data).encode())
    assert isinstance(old, Payment) and old.traceparent is None


def test_otel_exporter_otlp_endpoint_is_the_fallback() -> None:
    base = {"KAFKA_BROKERS": "k:9092", "DATABASE_URL": "postgresql://u:p@h/d",
            "REDIS_URL": "redis://h:6379/0", "NATS_URL": "nats://h:4222"}
    otel = {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}
    assert load_settings(otel).trace_endpoint == "http://otel:4318"
    both = {**otel, "JAEGER_ENDPOINT": "http://jaeger:4318"}
    assert load_settings(both).trace_endpoint == "http://jaeger:4318"
    assert load_settings(base).trace_endpoint is None
