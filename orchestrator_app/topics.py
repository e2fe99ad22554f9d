"""Every Kafka topic the orchestrator reads or writes (DESIGN §1), in one place.

All are declared ``internal`` so the worker creates them at start-up when missing, with the
same partition count: co-partitioning keeps a payment's commands, table shard and events on
the same partition number.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust

from orchestrator_app.app import app, settings
from orchestrator_app.clients.kafka_lane import KafkaLane
from orchestrator_app.domain.records import Command
from orchestrator_app.partitioning import key_hash
from orchestrator_app.supervision import produce_failed

__all__ = [
    "ALL_TOPICS",
    "commands",
    "dead_letters",
    "effects",
    "notifications",
    "payment_created",
    "payment_created_dlq",
    "send_effect",
    "sink_dlq",
    "state_changed",
]

_names = settings.topics


class GuardedTopic(faust.Topic):  # type: ignore[misc]
    """A topic whose undecodable records become dead letters instead of crashing the agent.

    Faust acks a record it cannot deserialize and then *throws* the error into every stream
    reading the topic: the agent dies (and with it every payment on the worker). Here the
    record goes to the dead-letter topic with its raw bytes and position, and the stream
    moves on. (Clones — each agent's stream — keep the class, so the override holds.)
    """

    async def on_key_decode_error(self, exc: Exception, message: Any) -> None:
        self._dead_letter(exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Any) -> None:
        self._dead_letter(exc, message)

    def _dead_letter(self, exc: Exception, message: Any) -> None:
        from orchestrator_app.supervision import dead_letter_event

        dead_letter_event(f"decode:{message.topic}", SimpleNamespace(message=message), exc)


def _topic(name: str, **options: Any) -> faust.TopicT:
    return GuardedTopic(
        app,
        topics=[name],
        internal=True,
        partitions=settings.topic_partitions,
        replicas=settings.topic_replication_factor,
        # kafka_admin creates the topics first; this only matters if Faust ever does.
        config=settings.topic_config,
        **options,
    )


#: Input from the API gateway. Raw bytes: the ingest agent validates them itself, so a bad
#: event becomes a dead letter instead of a deserialisation crash.
payment_created = _topic(
    _names.payment_created, key_type=bytes, value_type=bytes, value_serializer="raw"
)
#: Refused inputs with the raw bytes, the reason and the source position.
payment_created_dlq = _topic(_names.payment_created_dlq, value_serializer="raw")
#: What another agent could not process, with stage, reason and source position.
dead_letters = _topic(_names.dead_letters, key_type=bytes, value_serializer="raw")
#: State changes PostgreSQL refused, with the database's error (written by the sink).
sink_dlq = _topic(_names.sink_dlq, key_type=bytes, value_serializer="raw")
#: Everything that can change a payment, keyed by payment_id (DESIGN §1).
commands = _topic(_names.commands, key_type=str, value_type=Command)
#: One event per transition; key payment_id; exact-decimal JSON.
state_changed = _topic(_names.state_changed, key_type=str, value_serializer="raw")
#: Customer and operations notifications.
notifications = _topic(_names.notifications, key_type=str, value_serializer="raw")



def send_command(command: Command) -> None:
    """Put a command on the commands topic, keyed by its payment (so on its partition).

    Buffered, not awaited (DESIGN §7: awaited sends cost the most); Faust flushes the
    producer before it commits the input that led here.
    """
    commands.send_soon(key=command.payment_id, value=command)


#: The saga's effects (state changes, notifications) go straight into the producer's
#: batches: a payment's five events skip Faust's per-record send path (see the module).
effects = KafkaLane(lambda: app.producer._producer, key_hash, produce_failed,
                    settings.producer_unacked_max)


def send_effect(topic: faust.TopicT, payment_id: str, value: bytes,
                headers: list[tuple[str, bytes]] | None, callback: Any) -> None:
    """One state change or notification, keyed by its payment; not awaited, and flushed
    with the producer before any commit (`effects.room()` is the backpressure)."""
    effects.send(topic.get_topic_name(), payment_id.encode(), value, headers, callback)


ALL_TOPICS = [
    payment_created, payment_created_dlq, dead_letters, sink_dlq, commands, state_changed,
    notifications,
]


@app.task
async def declare_topics() -> None:
    """Create produce-only topics too; the consumed ones Faust declares before subscribing."""
    for topic in ALL_TOPICS:
        await topic.maybe_declare()
