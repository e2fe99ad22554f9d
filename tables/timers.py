"""The ``timers`` table: each waiting payment's one pending timer, key payment_id.

Written only by the saga agent (set on entering a waiting state, deleted on leaving it), so
it is small — only payments in flight — and durable through its changelog: a retry backoff
or a deadline survives a worker crash. The timer agent reads it.
"""

from __future__ import annotations

from orchestrator_app.app import app, settings
from orchestrator_app.domain.records import Timer

__all__ = ["timers"]

timers = app.Table(
    "timers",
    key_type=str,
    value_type=Timer,
    partitions=settings.topic_partitions,
    help="Pending retry / deadline timer per payment.",
)
# Raw keys, co-partitioned with the commands topic (see tables/payments.py).
timers.key_serializer = "raw"
timers.changelog_topic = timers.changelog_topic.derive(key_serializer="raw")
