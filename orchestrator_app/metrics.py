"""Prometheus metrics (names from the spec's Monitoring section), one registry per process."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "REGISTRY",
    "agent_crashes",
    "agent_dead_letters",
    "api_requests",
    "breaker_state",
    "calls_reissued",
    "child",
    "command_latency",
    "dead_letters",
    "duplicates_ignored",
    "fraud_duration",
    "fraud_timeouts",
    "fraud_unavailable",
    "gc_pauses",
    "messages_processed",
    "notifications_sent",
    "outbound_inflight",
    "outcomes_delivered",
    "processor_duration",
    "producer_errors",
    "render",
    "retries",
    "sink_dead_letters",
    "sink_errors",
    "sink_last_write",
    "sink_retries",
    "sink_rows",
    "timers_fired",
    "transition_errors",
    "transitions",
]

REGISTRY = CollectorRegistry(auto_describe=True)


@cache
def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once per label set: ``labels()`` validates,
    locks and builds a tuple on every call (~2 % of a busy worker, py-spy). Label values
    here are states, kinds and topics: a bounded set."""
    return metric.labels(*values)

messages_processed = Counter(
    "kafka_messages_processed",
    "Records consumed and handled, by topic.",
    ["topic"],
    registry=REGISTRY,
)
dead_letters = Counter(
    "payment_dead_letters",
    "Inputs sent to the dead-letter topic, by reason code.",
    ["reason"],
    registry=REGISTRY,
)
transitions = Counter(
    "payment_state_transitions",
    "Applied state transitions.",
    ["from_state", "to_state"],
    registry=REGISTRY,
)
transition_errors = Counter(
    "payment_state_transition_errors",
    "Commands refused because the current state does not allow them.",
    ["state", "error_type"],
    registry=REGISTRY,
)
duplicates_ignored = Counter(
    "payment_duplicate_commands",
    "Commands seen before; their effects were re-emitted, nothing applied twice.",
    registry=REGISTRY,
)
command_latency = Histogram(
    "payment_state_transition_duration_seconds",
    "Time to apply one command in the saga agent.",
    ["state"],
    registry=REGISTRY,
)


fraud_timeouts = Counter(
    "payment_fraud_check_timeouts",
    "Fraud checks that got no reply in time (the payment goes to MANUAL_REVIEW).",
    registry=REGISTRY,
)
fraud_unavailable = Counter(
    "payment_fraud_check_unavailable",
    "Fraud checks with no responder or no NATS connection.",
    registry=REGISTRY,
)
fraud_duration = Histogram(
    "payment_fraud_check_duration_seconds",
    "Duration of NATS fraud.check requests.",
    registry=REGISTRY,
)
processor_duration = Histogram(
    "payment_processing_duration_seconds",
    "Duration of NATS payment.process requests.",
    registry=REGISTRY,
)
sink_rows = Counter(
    "payment_sink_rows_written",
    "State changes written to PostgreSQL (redeliveries included; they change nothing).",
    registry=REGISTRY,
)
sink_retries = Counter(
    "payment_sink_retries",
    "Postgres sink batches retried because the database was unreachable.",
    registry=REGISTRY,
)
sink_dead_letters = Counter(
    "payment_sink_dead_letters",
    "State changes the sink could not store, sent to the sink dead-letter topic, by reason.",
    ["reason"],
    registry=REGISTRY,
)
sink_errors = Counter(
    "payment_sink_errors",
    "Unexpected errors of the sink loop (it retries; a bug if ever non-zero), by type.",
    ["kind"],
    registry=REGISTRY,
)
sink_last_write = Gauge(
    "payment_sink_last_write_timestamp_seconds",
    "When the sink last wrote a batch to PostgreSQL (Unix time).",
    registry=REGISTRY,
)
agent_crashes = Counter(
    "payment_agent_crashes",
    "Agents that crashed (the worker turns unready and exits non-zero), by agent.",
    ["agent"],
    registry=REGISTRY,
)
producer_errors = Counter(
    "kafka_producer_errors",
    "Records the broker refused after the client's retries (the worker then exits).",
    registry=REGISTRY,
)
outbound_inflight = Gauge(
    "payment_nats_calls_in_flight",
    "NATS calls running as background tasks of this worker, by kind.",
    ["kind"],
    registry=REGISTRY,
)
input_records_replayed = Counter(
    "payment_input_records_replayed",
    "Input records the consumer skipped, read again from the broker and handled before the "
    "record after them (agents/continuity.py); each means Faust dropped a record.",
    ["topic"],
    registry=REGISTRY,
)
stalled_partitions_recovered = Counter(
    "payment_stalled_partitions_recovered",
    "Stream partitions read again from their committed offset because fetched records were "
    "never handed to a stream (agents/unstick.py).",
    registry=REGISTRY,
)
outcomes_delivered = Counter(
    "payment_nats_outcomes_delivered",
    "NATS call outcomes applied in place (local) or sent on the commands topic (kafka: the "
    "partition was moving or owned elsewhere).",
    ["path"],
    registry=REGISTRY,
)
calls_reissued = Counter(
    "payment_nats_calls_reissued",
    "NATS calls re-issued for waiting payments of partitions this worker took over.",
    registry=REGISTRY,
)
agent_dead_letters = Counter(
    "payment_agent_dead_letters",
    "Inputs an agent could not process, dead-lettered so the stream moves on, by stage.",
    ["stage"],
    registry=REGISTRY,
)


retries = Counter(
    "payment_retries",
    "Retries started (state: the state retried from; FAILED for processing, REFUND for "
    "refunds).",
    ["state"],
    registry=REGISTRY,
)
breaker_state = Gauge(
    "payment_circuit_breaker_state",
    "Circuit breaker per downstream: 0 closed, 1 open, 2 half-open.",
    ["service"],
    registry=REGISTRY,
)
notifications_sent = Counter(
    "payment_notifications",
    "Notifications published on payment.notifications.",
    ["audience", "event"],
    registry=REGISTRY,
)
timers_fired = Counter(
    "payment_timers_fired",
    "Due timers turned into TIMER commands (retry backoffs, deadlines).",
    ["kind"],
    registry=REGISTRY,
)


gc_pauses = Histogram(
    "python_gc_pause_seconds",
    "Garbage-collector pauses of this process (the event loop stops for each), by generation.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)


api_requests = Counter(
    "payment_api_commands",
    "Command API requests by action and HTTP status.",
    ["action", "status"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)
