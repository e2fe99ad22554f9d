"""The saga: the one place that writes the ``payments`` table.

`handle_command` calls the pure `domain.saga.apply`, stores the new state (its pending timer
included, mirrored in the due index), and
sends the effects — state-change events and notifications — without awaiting anything
slow: the NATS calls a state needs start as bounded background tasks (`agents.outbound`).

Commands reach it three ways, all on the worker that owns the payment's partition:

* the ``saga`` agent below reads the commands topic (API commands, timers, re-keyed events,
  outcomes that could not be applied locally);
* the ingest agent applies a CREATE in place when ``payment.created`` is co-partitioned;
* `deliver` applies a NATS call's outcome in place while this worker still owns the
  partition (DESIGN §7: two Kafka hops fewer per payment).

Every call runs synchronously on the event loop, so there is still one writer per
partition at a time and no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from opentelemetry.trace import SpanKind

from agents.continuity import skipped_before
from agents.outbound import outbound
from orchestrator_app import clock, metrics, pending, telemetry
from orchestrator_app.app import app
from orchestrator_app.continuity import Continuity
from orchestrator_app.deadletter import dead_letter
from orchestrator_app.domain.records import Command
from orchestrator_app.domain.saga import Outcome, Status, apply
from orchestrator_app.logs import payment_context
from orchestrator_app.policy import POLICY, saga_policy
from orchestrator_app.supervision import dead_letter_event
from orchestrator_app.telemetry import tracer
from orchestrator_app.topics import (
    commands,
    effects,
    notifications,
    payment_created_dlq,
    send_command,
    send_effect,
    state_changed,
)
from tables.keyed import local_partition, writing_partition
from tables.payments import live_rows
from tables.timers import due_index

__all__ = ["POLICY", "apply_traced", "deliver", "handle_command", "saga", "saga_policy"]

log = logging.getLogger(__name__)


def handle_command(command: Command) -> Outcome:
    """Apply one command and send its effects (buffered sends, flushed before commit)."""
    started = time.perf_counter()
    now = clock.now()
    before = live_rows.get(command.payment_id)
    outcome = apply(before, command, now, POLICY)

    acknowledged: Callable[[Any], None] | None = None
    if outcome.status is Status.APPLIED:
        assert outcome.payment is not None
        # Written to the table once its effects below are on the broker (see LiveRows).
        acknowledged = live_rows.applied(
            outcome.payment, len(outcome.events) + len(outcome.notifications))
        for event in outcome.events:
            metrics.child(metrics.transitions, event.previous_state or "",
                          event.current_state).inc()
            if event.current_state == "RETRY":
                metrics.child(metrics.retries, "FAILED").inc()
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
        log.info("command %s refused: %s", command.kind, outcome.reason, extra={"state": state})

    if outcome.status in (Status.APPLIED, Status.DUPLICATE) and outcome.payment is not None:
        _store_timer(outcome)
    pending.resolve(command.command_id, outcome.status is not Status.REJECTED, outcome.reason)
    # Re-sent for duplicates too: a crash may have lost them; consumers dedupe by id.
    headers = telemetry.header_list() if telemetry.enabled() else None
    for event in outcome.events:
        send_effect(state_changed, event.payment_id, event.dumps(), headers, acknowledged)
    # NATS calls run as background tasks of this worker; outcomes come back to `deliver`.
    outbound.start_all(outcome.fraud_requests, outcome.process_requests)
    for note in outcome.notifications:
        send_effect(notifications, note.payment_id, note.dumps(), None, acknowledged)
        metrics.child(metrics.notifications_sent, note.audience, note.event).inc()

    metrics.child(metrics.command_latency,
                  outcome.payment.state if outcome.payment else "NONE"
                  ).observe(time.perf_counter() - started)
    return outcome


def _store_timer(outcome: Outcome) -> None:
    """Keep the due index equal to the payment's timer (stored in its row)."""
    assert outcome.payment is not None
    if outcome.timer is None:
        due_index.discard(outcome.payment.payment_id)
    else:
        due_index.set(outcome.timer)


def command_of(event: Any) -> Command | None:
    """The command an input carries; None when it was dead-lettered instead."""
    value = event.value
    if isinstance(value, Command):
        return value
    try:  # GuardedTopic hands over what it could not decode as bytes
        decoded = Command.loads(value)
        if not isinstance(decoded, Command):
            raise TypeError(f"expected a command, got {type(decoded).__name__}")
        return decoded
    except Exception as exc:  # not a command: a dead letter, never a crash
        dead_letter_event(f"decode:{event.message.topic}", event, exc)
        return None


def apply_traced(command: Command, message: Any = None) -> Outcome:
    """`handle_command` in a ``saga.apply`` span of the payment's trace (tracing on), with
    the messaging attributes of the record it came from (`message`, when one)."""
    if not telemetry.enabled():  # off: no span, no context, one test
        with payment_context(command.payment_id):
            return handle_command(command)
    before = live_rows.get(command.payment_id)
    parent = telemetry.payment_parent(
        command.payment_id, before.traceparent if before is not None else None,
        command.traceparent)
    with tracer.start_as_current_span("saga.apply", context=parent,
                                      kind=SpanKind.CONSUMER) as span, \
            payment_context(command.payment_id):
        span.set_attribute("payment.id", command.payment_id)
        span.set_attribute("command.kind", command.kind)
        if message is not None:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.operation", "process")
            span.set_attribute("messaging.destination.name", message.topic)
            span.set_attribute("messaging.kafka.destination.partition", message.partition)
            span.set_attribute("messaging.kafka.message.offset", message.offset)
            span.set_attribute("messaging.kafka.message.key", command.payment_id)
        outcome = handle_command(command)
        span.set_attribute("command.status", outcome.status.value)
        if outcome.payment is not None:
            span.set_attribute("payment.state", outcome.payment.state)
    return outcome


def deliver(command: Command) -> None:
    """Apply a NATS call's outcome here if this worker owns the payment right now, else
    send it on the commands topic to whoever does.

    Why this is safe without a Kafka hop: the outcome's table write and events are buffered
    sends flushed before any commit (and before a revocation completes); if the worker dies
    first, the payment is still waiting in the recovered table and the next owner re-issues
    the call (`agents.timers.rebuild`); a second answer is deduplicated by its command id.
    """
    partition = local_partition(command.payment_id)
    if partition is None:  # rebalancing, recovering, or not ours: the Kafka path
        metrics.child(metrics.outcomes_delivered, "kafka").inc()
        send_command(command)
        return
    try:
        with writing_partition(partition):
            apply_traced(command)
        metrics.child(metrics.outcomes_delivered, "local").inc()
    except Exception:  # a bug: the saga agent retries it, and dead-letters it if it fails
        log.exception("applying a %s outcome in place failed", command.kind)
        metrics.child(metrics.outcomes_delivered, "kafka").inc()
        send_command(command)


outbound.deliver = deliver


async def _saga(stream: Any) -> None:
    continuity = Continuity()
    async for event in stream.events():
        for record in await skipped_before(event.message, continuity):
            await _handle(SimpleNamespace(message=record, value=record.value))
        await _handle(event)


async def _handle(event: Any) -> None:
    """One command: a Faust event, or a record read again (``message`` and raw ``value``)."""
    await outbound.room()  # backpressure: bounded NATS calls in flight
    await effects.room()  # and bounded effects not yet acknowledged
    command = command_of(event)
    if command is None:
        return
    try:
        apply_traced(command, event.message)
    except Exception as exc:  # a bug: dead-letter the command, keep the partition moving
        log.exception("saga failed on a %s command", getattr(command, "kind", "?"))
        dead_letter_event("saga", event, exc)
        pending.resolve(getattr(command, "command_id", ""), False, "internal error")
    metrics.child(metrics.messages_processed, "orchestrator-commands").inc()


saga = app.agent(commands, name="agents.saga.saga")(_saga)
