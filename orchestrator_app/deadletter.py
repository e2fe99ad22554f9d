"""The dead-letter record: what failed, why, where it came from, and the exact raw bytes."""

from __future__ import annotations

import base64
from typing import Any

from orchestrator_app.domain import codec
from orchestrator_app.domain.records import SourceRef

__all__ = ["dead_letter", "position_of"]


def position_of(message: Any) -> SourceRef:
    """Where a Kafka record came from: a Faust message and an aiokafka record alike."""
    return SourceRef.trusted(topic=message.topic, partition=message.partition,
                             offset=message.offset)


def dead_letter(
    raw: bytes, reason_code: str, reason: str, source: SourceRef | None, now: str, stage: str
) -> bytes:
    """JSON bytes; the payload as base64 (exact) and as text when it is UTF-8 (readable)."""
    record: dict[str, Any] = {
        "stage": stage,
        "reason_code": reason_code,
        "reason": reason,
        "source_topic": source.topic if source else None,
        "source_partition": source.partition if source else None,
        "source_offset": source.offset if source else None,
        "failed_at": now,
        "payload_base64": base64.b64encode(raw).decode(),
    }
    try:
        record["payload_text"] = raw.decode()
    except UnicodeDecodeError:
        record["payload_text"] = None
    return codec.dumps(record)
