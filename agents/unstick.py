"""Stall guard: re-reads a partition whose fetched records Faust never handed to a stream.

Why it exists: in the kill-one-of-two-workers fault test (about one run in five), after the
survivor took over the dead worker's partitions, aiokafka had fetched every record of them
(its position at the end offset) while Faust's read offset stayed at the committed offset
and the agents sat idle with empty queues: the batch fetched across the rebalance was
dropped by Faust's consumer (``getmany`` gives up a batch when the generation changes, and
aiokafka's position had already moved past it). Nothing re-read it: those payments waited
forever while ``/health`` said ok.

The signature is exact and cheap to check: for a partition of a stream topic, records
fetched past the last one delivered (position > read offset + 1), no delivery on it for
`STALL_CHECKS` checks in a row, and every agent's queue empty (so the stream is not simply
busy or applying backpressure). Then every partition is sought back to its committed
offset (Faust's own ``perform_seek``, which also resets the read offsets), and a stalled one
the group never committed to its earliest offset: at-least-once, and the saga ignores what
it has applied already.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.ingest import ingest
from agents.saga import saga
from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from tables.keyed import recovering

__all__ = ["CHECK_SECONDS", "STALL_CHECKS", "check_stalls", "undelivered"]

log = logging.getLogger(__name__)

CHECK_SECONDS = 5.0
#: Consecutive checks a partition must look stalled before it is read again.
STALL_CHECKS = 3

#: Per partition: the read offset seen at the last check, and for how many checks in a row
#: it stood still with fetched records behind it.
_seen: dict[Any, tuple[int | None, int]] = {}


def undelivered(consumer: Any) -> dict[Any, tuple[int | None, int]]:
    """Stream partitions whose fetch position is past the last record delivered to a
    stream: partition -> (read offset, position)."""
    thread = getattr(consumer, "_thread", None)
    aio = getattr(thread, "_consumer", None) if thread is not None else None
    subscription = getattr(getattr(aio, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None:
        return {}
    topics = {settings.topics.payment_created, settings.topics.commands}
    out: dict[Any, tuple[int | None, int]] = {}
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        try:
            state = assignment.state_value(tp)
        except (KeyError, AssertionError):
            continue
        if state is None or not state.has_valid_position:
            continue
        position = state.position
        read = consumer._read_offset.get(tp)
        # No read offset: nothing delivered since the assignment (Faust sets it to the
        # committed offset when it seeks, then to each record it delivers).
        if position > (read + 1 if read is not None else 0):
            out[tp] = (read, position)
    return out


def _agents_idle() -> bool:
    for agent in (ingest, saga):
        channel = getattr(agent, "_channel_iterator", None)  # what the agent's stream reads
        queue = getattr(channel, "_queue", None) if channel is not None else None
        if queue is None or queue.qsize() > 0:
            return False
    return True


async def check_stalls() -> bool:
    """One check; True when it sought the partitions back (for tests and the metric)."""
    consumer = app.consumer
    if recovering():
        _seen.clear()
        return False
    behind = undelivered(consumer) if _agents_idle() else {}
    stalled = []
    for tp, (read, _) in behind.items():
        last, count = _seen.get(tp, (None, 0))
        count = count + 1 if last == read else 1
        _seen[tp] = (read, count)
        if count >= STALL_CHECKS:
            stalled.append(tp)
    for tp in list(_seen):
        if tp not in behind:
            del _seen[tp]
    if not stalled:
        return False
    log.warning("stream partitions stalled with fetched records never delivered: %s; "
                "reading them again from the committed offsets",
                ", ".join(f"{tp.topic}[{tp.partition}]@{behind[tp]}" for tp in stalled))
    metrics.stalled_partitions_recovered.inc(len(stalled))
    _seen.clear()
    await consumer.perform_seek()
    # A partition the group never committed is not sought by that (nothing to seek to):
    # it starts again where the reset policy (earliest) would have started it.
    fresh = [tp for tp in stalled if consumer._committed_offset.get(tp) is None]
    if fresh:
        starts = await consumer.earliest_offsets(*fresh)
        for tp in fresh:
            await consumer.seek(tp, starts.get(tp) or 0)
    return True


@app.timer(CHECK_SECONDS)
async def unstick_partitions() -> None:
    await check_stalls()
