"""Hand an agent the input records its stream skipped, before the record after them.

The bookkeeping and why it is needed are in `orchestrator_app.continuity`. Here: ask it about
each record an agent is handed; if records were skipped, read them from the broker (retrying
until the broker answers: the stream waits, it does not move past them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.structs import ConsumerRecord

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.clients.kafka_range import RangeReader
from orchestrator_app.continuity import Continuity

__all__ = ["range_reader", "skipped_before"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0

range_reader = RangeReader(settings.kafka_brokers, f"{settings.app_id}-range-reader")
app.service(range_reader)


def _committed(tp: Any) -> int | None:
    offset = app.consumer._committed_offset.get(tp)
    return offset if isinstance(offset, int) else None


async def skipped_before(message: Any, continuity: Continuity
                         ) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `message`'s partition the stream skipped right before it (usually
    none); the caller handles them, in order, before `message`."""
    tp = message.tp
    skipped = continuity.seen(tp, message.offset, app.consumer_generation_id, _committed)
    if skipped is None:
        return []
    delay = 0.2
    while True:
        try:
            records = await range_reader.read(message.topic, message.partition,
                                              skipped.start, skipped.end)
            break
        except Exception as exc:  # the broker is unreachable: wait, never skip them
            log.error("could not read skipped records %s[%d] %d..%d (%s); retrying in %.1fs",
                      message.topic, message.partition, skipped.start, skipped.end - 1,
                      exc.__class__.__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
    if records:
        metrics.input_records_replayed.labels(topic=message.topic).inc(len(records))
        log.warning("the consumer skipped %d record(s) of %s[%d] at offsets %d..%d; "
                    "handling them now", len(records), message.topic, message.partition,
                    skipped.start, skipped.end - 1)
    return records
