"""Tables keyed by payment_id, co-partitioned with the commands topic."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import murmur2

from orchestrator_app.app import app, settings

__all__ = ["partition_of", "payment_keyed_table"]


def partition_of(payment_id: str) -> int:
    """Kafka's default partitioner on the raw key: the partition of a payment's commands,
    table rows and events (every topic has ``TOPIC_PARTITIONS`` partitions)."""
    return (murmur2(payment_id.encode()) & 0x7FFFFFFF) % settings.topic_partitions


def payment_keyed_table(name: str, value_type: type, help: str) -> Any:
    """A changelog-backed table whose keys are the raw payment id.

    Faust derives the "json" key serializer from ``key_type=str``, and table routing hashes
    the *serialized* key: a JSON-quoted key ('"p-1"') hashes to another partition than the
    command key ('p-1'), so a replica would forward a request to one that does not own the
    payment. Both the table (store, changelog writes) and its changelog topic object (which
    the router hashes with) must say "raw".
    """
    table = app.Table(
        name, key_type=str, value_type=value_type, partitions=settings.topic_partitions,
        help=help,
    )
    table.key_serializer = "raw"
    table.changelog_topic = table.changelog_topic.derive(key_serializer="raw")
    return table
