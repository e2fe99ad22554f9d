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
