"""The ``payments`` table: a payment's live state, key payment_id.

Changelog-backed (RocksDB via rocksdict by default), partitioned like the commands topic.
The saga agent is its only writer, so one partition has one writer and no lock is needed.
"""

from __future__ import annotations

from orchestrator_app.domain.records import Payment
from tables.keyed import payment_keyed_table

__all__ = ["payments"]

payments = payment_keyed_table(
    "payments", Payment, "Live payment state by payment_id (DESIGN §1)."
)
