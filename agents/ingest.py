"""Ingest agent: ``payment.created`` → validated CREATE command, or a dead letter.

It never crashes on input: every value is either forwarded or dead-lettered with the raw
bytes, the reason and its source position, and the stream moves on.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator_app import clock, metrics
from orchestrator_app.app import app, settings
from orchestrator_app.deadletter import dead_letter
from orchestrator_app.domain.records import Command, CommandKind, PaymentCreated, SourceRef
from orchestrator_app.domain.saga import create_command_id
from orchestrator_app.domain.validation import Invalid, validate_created
from orchestrator_app.topics import commands, payment_created, payment_created_dlq

__all__ = ["handle_created", "ingest", "reject", "to_command"]

log = logging.getLogger(__name__)


def to_command(payment: PaymentCreated, raw: bytes, source: SourceRef, now: str) -> Command:
    return Command(
        kind=CommandKind.CREATE.value,
        payment_id=payment.payment_id,
        command_id=create_command_id(payment.payment_id),
        issued_at=now,
        payment=payment,
        source=source,
        raw=raw.decode(),
    )


def handle_created(raw: bytes, key: bytes | None, source: SourceRef) -> None:
    """Forward one valid event as a CREATE command, or dead-letter it with the reason."""
    now = clock.now()
    result = validate_created(raw, settings.max_event_bytes)
    if isinstance(result, Invalid):
        reject(raw, key, source, result.code, result.detail, now)
    else:
        commands.send_soon(key=result.payment_id, value=to_command(result, raw, source, now))


def reject(raw: bytes, key: bytes | None, source: SourceRef, code: str, detail: str,
           now: str) -> None:
    metrics.dead_letters.labels(reason=code).inc()
    # Only the reason code and position: the payload may hold customer data.
    log.warning("dead-lettered payment.created at %s[%d]@%d: %s",
                source.topic, source.partition, source.offset, code)
    payment_created_dlq.send_soon(
        key=key, value=dead_letter(raw, code, detail, source, now, "ingest"))


@app.agent(payment_created)
async def ingest(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        raw: bytes = event.value if isinstance(event.value, bytes) else b""
        source = SourceRef(topic=message.topic, partition=message.partition, offset=message.offset)
        try:
            handle_created(raw, message.key, source)
        except Exception as exc:  # a bug, not bad input: still a dead letter, never a crash
            log.exception("ingest failed on %s[%d]@%d", source.topic, source.partition,
                          source.offset)
            reject(raw, message.key, source, "processing_error",
                   f"{exc.__class__.__name__}: {str(exc)[:300]}", clock.now())
        metrics.messages_processed.labels(topic="payment.created").inc()
