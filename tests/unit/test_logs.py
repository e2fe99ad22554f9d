"""The JSON log format: one object per line, the payment's context, nothing sensitive."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest

from orchestrator_app.domain.records import PaymentCreated
from orchestrator_app.logs import JsonFormatter, logging_config, payment_context, redact

FIELDS = {"ts", "level", "logger", "message", "payment_id", "state", "trace_id", "pid"}


def _line(message: str, *args: object, **kw: object) -> dict[str, object]:
    record = logging.getLogger("t").makeRecord("t", logging.INFO, "f.py", 1, message, args,
                                               None, extra=kw.get("extra"))  # type: ignore[arg-type]
    text = JsonFormatter().format(record)
    assert "\n" not in text
    parsed: dict[str, object] = json.loads(text)
    return parsed


def test_every_line_has_the_fields_null_when_unknown() -> None:
    line = _line("multi\nline %s", "x")
    assert set(line) == FIELDS
    assert line["message"] == "multi\nline x"
    assert (line["payment_id"], line["state"], line["trace_id"]) == (None, None, None)
    assert line["level"] == "INFO" and str(line["ts"]).endswith("Z")


def test_payment_context_and_extra() -> None:
    with payment_context("pay-7", "FRAUD_CHECK"):
        assert (_line("x")["payment_id"], _line("x")["state"]) == ("pay-7", "FRAUD_CHECK")
        assert _line("x", extra={"state": "APPROVED"})["state"] == "APPROVED"
    assert _line("x")["payment_id"] is None
    assert _line("x", extra={"payment_id": "p", "state": "NEW"})["payment_id"] == "p"


def test_trace_id_of_the_current_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        assert _line("x")["trace_id"] == trace_id


@pytest.mark.parametrize("text", [
    "amount=Decimal('1234.56') customer_id='cust-9' merchant_id='m-9'",
    '{"amount": 1234.56, "customer_id": "cust-9", "merchant_id": "m-9"}',
    "{'amount': Decimal('1234.56'), 'customer_id': 'cust-9', 'merchant_id': 'm-9'}",
])
def test_sensitive_values_are_masked(text: str) -> None:
    masked = redact(text)
    for secret in ("1234.56", "cust-9", "m-9"):
        assert secret not in masked
    assert "customer_id" in masked


def test_a_record_repr_in_a_traceback_is_masked() -> None:
    created = PaymentCreated(payment_id="p-1", amount=Decimal("987.65"), currency="USD",
                             customer_id="cust-secret", merchant_id="merch-secret",
                             status="NEW", created_at="2026-02-13T10:00:00Z")
    try:
        raise ValueError(f"bad {created!r}")
    except ValueError:
        import sys
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, "f.py", 1, "failed %r",
                                                   (created,), sys.exc_info())
    text = JsonFormatter().format(record)
    for secret in ("987.65", "cust-secret", "merch-secret"):
        assert secret not in text
    assert "p-1" in text


def test_logging_config_is_a_dict_for_json_only() -> None:
    config = logging_config("json", "INFO")
    assert config is not None and config["root"]["level"] == "INFO"
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert logging_config("text", "INFO") is None
