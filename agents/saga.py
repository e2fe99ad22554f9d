"""Saga agent: the only writer of the ``payments`` and ``timers`` tables.

For each command it calls the pure `domain.saga.apply`, stores the new state and timer, and
sends the effects — state-change events and notifications — without awaiting anything
slow: the NATS calls a state needs start as bounded background tasks (`agents.outbound`),
whose outcomes come back as commands.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents.ingest import copartitioned, created_command, forward
from agents.outbound import outbound
from orchestrator_app import clock, metrics, pending
from orchestrator_app.app import app, settings
from orchestrator_app.config import Settings
from orchestrator_app.deadletter import dead_letter, position_of
from orchestrator_app.domain.policies import RetryPolicy
from orchestrator_app.domain.records import Command, Payment
from orchestrator_app.domain.saga import Outcome, SagaPolicy, Status, apply, timer_of
from orchestrator_app.supervision import dead_letter_event
from orchestrator_app.telemetry import tracer
from orchestrator_app.topics import (
    commands,
    notifications,
    payment_created_dlq,
    saga_inputs,
    state_changed,
)
from tables.payments import payments
from tables.timers import due_index, timers

__all__ = ["POLICY", "handle_command", "saga", "saga_policy"]

log = logging.getLogger(__name__)


def saga_policy(s: Settings) -> SagaPolicy:
    """Deadlines sit well above the NATS timeouts: they only catch lost requests."""
    watchdog = max(s.watchdog_seconds, 2 * max(s.fraud_timeout, s.processor_timeout,
                                               s.refund_timeout))
    return SagaPolicy(
        auto_process=s.auto_process,
        retry=RetryPolicy(
            max_retries=s.retry_max_attempts,
            initial_delay=s.retry_initial_delay,
            max_delay=s.retry_max_delay,
            factor=s.retry_backoff_factor,
        ),
        fraud_deadline=watchdog,
        processing_deadline=watchdog,
        refund_deadline=watchdog,
        max_circuit_waits=s.max_circuit_waits,
    )


POLICY = saga_policy(settings)


def handle_command(command: Command) -> Outcome:
    """Apply one command and send its effects (buffered sends, flushed before commit)."""
    started = time.perf_counter()
    now = clock.now()
    before = payments.get(command.payment_id)
    outcome = apply(before, command, now, POLICY)

    if outcome.status is Status.APPLIED:
        assert outcome.payment is not None
        payments[command.payment_id] = outcome.payment
        for event in outcome.events:
            metrics.transitions.labels(
                from_state=event.previous_state or "", to_state=event.current_state
            ).inc()
            if event.current_state == "RETRY":
                metrics.retries.labels(state="FAILED").inc()
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

    if outcome.status in (Status.APPLIED, Status.DUPLICATE) and outcome.payment is not None:
        _store_timer(before, outcome)
    pending.resolve(command.command_id, outcome.status is not Status.REJECTED, outcome.reason)
    # Re-sent for duplicates too: a crash may have lost them; consumers dedupe by id.
    for event in outcome.events:
        state_changed.send_soon(key=event.payment_id, value=event.dumps())
    # NATS calls run as background tasks of this worker; outcomes come back as commands.
    outbound.start_all(outcome.fraud_requests, outcome.process_requests)
    for note in outcome.notifications:
        notifications.send_soon(key=note.payment_id, value=note.dumps())
        metrics.notifications_sent.labels(audience=note.audience, event=note.event).inc()

    metrics.command_latency.labels(
        state=outcome.payment.state if outcome.payment else "NONE"
    ).observe(time.perf_counter() - started)
    return outcome


def _store_timer(before: Payment | None, outcome: Outcome) -> None:
    """Keep the ``timers`` table (and the due index) equal to the payment's timer."""
    assert outcome.payment is not None
    payment_id = outcome.payment.payment_id
    timer = outcome.timer
    if outcome.status is Status.APPLIED:
        # The stored timer is the one the payment carried before: no table read needed.
        current = timer_of(before) if before is not None else None
    else:  # a redelivery: the first timer write may be the part a crash lost
        current = timers.get(payment_id)
    if timer is None:
        due_index.discard(payment_id)
        if current is not None:
            del timers[payment_id]
    elif current is None or current.seq != timer.seq:
        timers[payment_id] = timer
        due_index.set(timer)


def command_of(event: Any) -> Command | None:
    """The command an input carries; None when it was dead-lettered or forwarded instead.

    Inputs are commands, or — when the saga reads payment.created itself — raw events, whose
    CREATE is applied here if the event sits on its payment's own partition (the table's
    changelog follows the partition of the event being processed) and forwarded through
    the commands topic otherwise.
    """
    value = event.value
    if isinstance(value, Command):  # INGEST_DIRECT=false: a typed commands stream
        return value
    message = event.message
    if message.topic == settings.topics.payment_created:
        raw = value if isinstance(value, bytes) else b""
        command = created_command(raw, message.key, position_of(message))
        if command is None or copartitioned(command, message.key, message.partition):
            return command
        forward(command)
        return None
    try:
        decoded = Command.loads(value)
        if not isinstance(decoded, Command):
            raise TypeError(f"expected a command, got {type(decoded).__name__}")
        return decoded
    except Exception as exc:  # not a command: a dead letter, never a crash
        dead_letter_event(f"decode:{message.topic}", event, exc)
        return None


async def _saga(stream: Any) -> None:
    async for event in stream.events():
        await outbound.room()  # backpressure: bounded NATS calls in flight
        command = command_of(event)
        if command is None:
            continue
        try:
            with tracer.start_as_current_span("saga.apply") as span:
                outcome = handle_command(command)
                span.set_attribute("payment.id", command.payment_id)
                span.set_attribute("command.kind", command.kind)
                span.set_attribute("command.status", outcome.status.value)
        except Exception as exc:  # a bug: dead-letter the command, keep the partition moving
            log.exception("saga failed on a %s command", getattr(command, "kind", "?"))
            dead_letter_event("saga", event, exc)
            pending.resolve(getattr(command, "command_id", ""), False, "internal error")
        metrics.messages_processed.labels(topic="orchestrator-commands").inc()


#: The saga reads payment.created and the commands (co-partitioned), or only the commands.
saga = app.agent(saga_inputs if settings.ingest_direct else commands,
                 name="agents.saga.saga")(_saga)
