"""Structured logs: one JSON object per line (``LOG_FORMAT=json``), Faust's own lines included.

Faust's worker configures logging itself when it starts (``mode.utils.logging.setup_logging``
runs ``logging.config.dictConfig`` on the app's ``logging_config`` setting, then clears and
replaces the root handlers), so the hook is that setting: `logging_config` returns the
dictConfig for the chosen format, and the worker applies it to every logger, Faust's, mode's,
aiokafka's and ours alike. Its banner (a table printed on stdout, not a log line) is left
out in JSON mode (``--quiet``, see `orchestrator_app.cli`).

Every line has ``ts, level, logger, message, payment_id, state, trace_id`` (null when a line
is about no payment, or no span is active). A line gets its payment from ``extra=`` or from
the `payment_context` it runs in; its trace id from the current OpenTelemetry span.

No amount, customer id or merchant id in a log line: our own lines never name them, and as
a second guard the formatter masks ``amount=…``, ``customer_id=…``, ``merchant_id=…`` (as a
record's repr or as JSON) in any message or traceback it writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "logging_config", "payment_context", "redact"]

#: (payment_id, state) of the payment the current code works on.
_payment: ContextVar[tuple[str, str | None] | None] = ContextVar("log_payment", default=None)

_SENSITIVE = ("amount", "customer_id", "merchant_id")
#: ``amount=Decimal('1.50')``, ``customer_id='c-1'``, ``"merchant_id": "m-1"``, ``'amount': 5``.
_MASK = re.compile(
    r"""(?P<key>["']?\b(?:amount|customer_id|merchant_id)\b["']?\s*[:=]\s*)"""
    r"""(?P<value>Decimal\([^)]*\)|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;)}\]>]+)"""
)


def redact(text: str) -> str:
    """`text` with the value of every amount / customer id / merchant id masked."""
    if not any(word in text for word in _SENSITIVE):
        return text
    return _MASK.sub(lambda m: m.group("key") + "***", text)


@contextlib.contextmanager
def payment_context(payment_id: str, state: str | None = None) -> Iterator[None]:
    """Lines logged inside name this payment (and state), unless they say otherwise."""
    token = _payment.set((payment_id, state))
    try:
        yield
    finally:
        _payment.reset(token)


def _trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        bound = _payment.get()
        payment_id = getattr(record, "payment_id", None) or (bound[0] if bound else None)
        state = getattr(record, "state", None) or (bound[1] if bound else None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "payment_id": payment_id,
            "state": state,
            "trace_id": getattr(record, "trace_id", None) or _trace_id(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """The app's ``logging_config`` (a dict: the worker applies it when it starts, never at
    import). None for ``text``: Faust's own coloured format."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": level, "handlers": ["default"]},
    }
