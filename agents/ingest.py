"""Ingest: ``payment.created`` → validated CREATE command, or a dead letter.

It never crashes on input: every value becomes a command or a dead letter with the raw
bytes, the reason and its source position, and the stream moves on.

Where the CREATE is applied: when ``payment.created`` is co-partitioned with the commands
topic (same partition count — the CLI checks at start-up, and Faust's assignor then gives
partition p of both topics to the same worker — and the event keyed by its payment id with
Kafka's default partitioner), right here, through the saga's `handle_command`: the event's
partition is the payment's, so the table write lands where the saga's own would, and the
event's offset is committed only after that write is flushed. One Kafka hop fewer per
payment. Any other event (another key, another partitioner) is forwarded on the commands
topic, which re-keys it; with ``INGEST_DIRECT=false`` every event is.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from agents.continuity import skipped_before
from agents.outbound import outbound
from agents.saga import apply_traced
from orchestrator_app import clock, metrics, telemetry
from orchestrator_app.app import app, settings
from orchestrator_app.continuity import Continuity
from orchestrator_app.deadletter import dead_letter, position_of
from orchestrator_app.domain.records import Command, CommandKind, PaymentCreated, SourceRef
from orchestrator_app.domain.saga import create_command_id
from orchestrator_app.domain.validation import Invalid, validate_created
from orchestrator_app.supervision import dead_letter_event
from orchestrator_app.topics import effects, payment_created, payment_created_dlq, send_command
from tables.keyed import partition_of

__all__ = ["copartitioned", "created_command", "ingest", "reject", "to_command"]

log = logging.getLogger(__name__)


def to_command(payment: PaymentCreated, raw: bytes, source: SourceRef, now: str) -> Command:
    return Command.trusted(
        kind=CommandKind.CREATE.value,
        payment_id=payment.payment_id,
        command_id=create_command_id(payment.payment_id),
        issued_at=now,
        payment=payment,
        source=source,
        raw=raw.decode(),
    )


def created_command(raw: bytes, key: bytes | None, source: SourceRef) -> Command | None:
    """The CREATE command of one event, or None once it is dead-lettered. Never raises."""
    now = clock.now()
    try:
        result = validate_created(raw, settings.max_event_bytes)
        if isinstance(result, Invalid):
            reject(raw, key, source, result.code, result.detail, now)
            return None
        return to_command(result, raw, source, now)
    except Exception as exc:  # a bug, not bad input: still a dead letter, never a crash
        log.exception("ingest failed on %s[%d]@%d", source.topic, source.partition,
                      source.offset)
        reject(raw, key, source, "processing_error",
               f"{exc.__class__.__name__}: {str(exc)[:300]}", now)
        return None
    finally:
        metrics.child(metrics.messages_processed, "payment.created").inc()


def copartitioned(command: Command, key: bytes | None, partition: int) -> bool:
    """May this CREATE be applied on the partition it arrived on?"""
    return (settings.ingest_direct and key == command.payment_id.encode()
            and partition == partition_of(command.payment_id))


def reject(raw: bytes, key: bytes | None, source: SourceRef, code: str, detail: str,
           now: str) -> None:
    metrics.dead_letters.labels(reason=code).inc()
    # Only the reason code and position: the payload may hold customer data.
    log.warning("dead-lettered payment.created at %s[%d]@%d: %s",
                source.topic, source.partition, source.offset, code)
    payment_created_dlq.send_soon(
        key=key, value=dead_letter(raw, code, detail, source, now, "ingest"))


async def _ingest(stream: Any) -> None:
    continuity = Continuity()
    async for event in stream.events():
        message = event.message
        for record in await skipped_before(message, continuity):
            await _handle(record.value or b"", record)
        await _handle(event.value if isinstance(event.value, bytes) else b"", message)


async def _handle(raw: bytes, message: Any) -> None:
    """One ``payment.created`` record: a Faust message, or a record read again."""
    command = created_command(raw, message.key, position_of(message))
    if command is None:
        return
    if telemetry.enabled():  # the producer's trace, else one derived from the id
        command.traceparent = telemetry.payment_traceparent(
            command.payment_id, telemetry.traceparent_of(message.headers))
    if not copartitioned(command, message.key, message.partition):
        send_command(command)  # the re-keying hop: onto its payment's partition
        return
    await outbound.room()  # backpressure: the CREATE starts a fraud check
    await effects.room()  # and sends its first state change
    try:
        apply_traced(command, message)
    except Exception as exc:  # a bug: dead-letter the event, keep the partition moving
        log.exception("saga failed on a CREATE")
        dead_letter_event("saga", SimpleNamespace(message=message), exc)


ingest = app.agent(payment_created, name="agents.ingest.ingest")(_ingest)
