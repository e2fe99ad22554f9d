"""Saga agent: the only writer of the ``payments`` table.

For each command it calls the pure `domain.saga.apply`, stores the new state and sends the
effects — state-change events and fraud / processor requests — without awaiting anything
slow: NATS calls happen in the fraud and processor agents (DESIGN §1).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.deadletter import dead_letter
from orchestrator_app.domain.records import Command
from orchestrator_app.domain.saga import Outcome, SagaPolicy, Status, apply, format_timestamp
from orchestrator_app.topics import (
    commands,
    fraud_requests,
    payment_created_dlq,
    processor_requests,
    state_changed,
)
from tables.payments import payments

__all__ = ["handle_command", "saga"]

log = logging.getLogger(__name__)

POLICY = SagaPolicy(auto_process=settings.auto_process)


def handle_command(command: Command) -> Outcome:
    """Apply one command and send its effects (buffered sends, flushed before commit)."""
    started = time.perf_counter()
    now = format_timestamp(datetime.now(UTC))
    outcome = apply(payments.get(command.payment_id), command, now, POLICY)

    if outcome.status is Status.APPLIED:
        assert outcome.payment is not None
        payments[command.payment_id] = outcome.payment
        for event in outcome.events:
            metrics.transitions.labels(
                from_state=event.previous_state or "", to_state=event.current_state
            ).inc()
    elif outcome.status is Status.DUPLICATE:
        metrics.duplicates_ignored.inc()
    elif outcome.status is Status.CONFLICT:
        metrics.dead_letters.labels(reason="conflict").inc()
        log.warning("conflicting payment.created for an existing payment dead-lettered")
        payment_created_dlq.send_soon(
            key=command.payment_id,
            value=dead_letter(
                (command.raw or "").encode(), "conflict", outcome.reason, command.source,
                now, "saga",
            ),
        )
    else:
        state = outcome.payment.state if outcome.payment else "UNKNOWN"
        metrics.transition_errors.labels(
            state=state, error_type=outcome.trigger.value if outcome.trigger else command.kind
        ).inc()
        log.info("command %s refused: %s", command.kind, outcome.reason)

    # Re-sent for duplicates too: a crash may have lost them; consumers dedupe by event_id.
    for event in outcome.events:
        state_changed.send_soon(key=event.payment_id, value=event.dumps())
    for request in outcome.fraud_requests:
        fraud_requests.send_soon(key=request.payment_id, value=request)
    for process in outcome.process_requests:
        processor_requests.send_soon(key=process.payment_id, value=process)

    metrics.command_latency.labels(
        state=outcome.payment.state if outcome.payment else "NONE"
    ).observe(time.perf_counter() - started)
    return outcome


@app.agent(commands)
async def saga(stream: Any) -> None:
    async for command in stream:
        handle_command(command)
        metrics.messages_processed.labels(topic="orchestrator-commands").inc()
