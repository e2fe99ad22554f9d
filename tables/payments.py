"""The ``payments`` table: a payment's live state, key payment_id.

Changelog-backed (RocksDB via rocksdict by default), partitioned like the commands topic.
The saga agent is its only writer, so one partition has one writer and no lock is needed.
"""

from __future__ import annotations

from orchestrator_app.app import app, settings
from orchestrator_app.domain.records import Payment

__all__ = ["payments"]

payments = app.Table(
    "payments",
    key_type=str,
    value_type=Payment,
    partitions=settings.topic_partitions,
    help="Live payment state by payment_id (DESIGN §1).",
)
# Raw keys, like the commands topic. Faust derives "json" from key_type=str, and table
# routing hashes the *serialized* key: a JSON-quoted key ('"p-1"') hashes to another
# partition than the command key ('p-1'), so a replica would forward a state request to
# one that does not own the payment. Both the table (store, changelog writes) and its
# changelog topic object (which the router hashes with) must say "raw".
payments.key_serializer = "raw"
payments.changelog_topic = payments.changelog_topic.derive(key_serializer="raw")
