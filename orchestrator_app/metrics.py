"""Prometheus metrics (names from the spec's Monitoring section), one registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = [
    "REGISTRY",
    "dead_letters",
    "duplicates_ignored",
    "messages_processed",
    "render",
    "transition_errors",
    "transitions",
]

REGISTRY = CollectorRegistry(auto_describe=True)

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


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)
