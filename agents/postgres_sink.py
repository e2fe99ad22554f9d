"""Postgres sink agent: ``payment.state.changed`` → payment_states + payment_state_history.

Batched (one transaction per batch) and idempotent (history is unique on (payment_id,
version); a state row only moves forward). When the database is down the agent waits and
retries the same batch: its offsets are not committed, so nothing is lost, and the rest
of the orchestrator keeps moving payments (Postgres is a sink, not the source of truth).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.clients.postgres import CONNECTION_ERRORS, StateRow
from orchestrator_app.domain import codec
from orchestrator_app.resources import payment_store
from orchestrator_app.topics import state_changed

__all__ = ["decode_rows", "postgres_sink", "write_with_retry"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0


def decode_rows(values: list[bytes]) -> list[StateRow]:
    rows = []
    for value in values:
        try:
            rows.append(StateRow.from_event(codec.loads(value)))
        except (ValueError, KeyError, TypeError):
            # Only we write this topic; an undecodable value is a bug, not data to guess at.
            metrics.sink_skipped.inc()
            log.error("postgres sink skipped an undecodable state change")
    return rows


async def write_with_retry(rows: list[StateRow]) -> None:
    """Write until it succeeds; only connection-type errors are retried."""
    delay = 0.2
    while True:
        try:
            await payment_store.write_batch(rows)
            metrics.sink_rows.inc(len(rows))
            return
        except CONNECTION_ERRORS as exc:
            metrics.sink_retries.inc()
            log.warning("postgres unavailable (%s); retrying in %.1fs",
                        exc.__class__.__name__, delay)
            await payment_store.reset()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


@app.agent(state_changed)
async def postgres_sink(stream: Any) -> None:
    async for events in stream.take_events(settings.sink_batch_size, within=0.2):
        await write_with_retry(decode_rows([event.value for event in events]))
