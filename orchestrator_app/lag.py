"""Consumer lag of this worker's Faust consumer, computed at scrape time.

Registered with `orchestrator_app.metrics.REGISTRY` on import (`topology` imports it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from orchestrator_app import metrics
from orchestrator_app.app import app

__all__ = ["ConsumerLagCollector"]


class ConsumerLagCollector:
    """``kafka_consumer_lag{topic}`` at scrape time, from Faust's monitor: the end offsets
    it tracks come from the fetch responses' high watermark (right on Tansu too, unlike
    ListOffsets — DESIGN §7), minus the committed (else the next unread) offset."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kafka_consumer_lag", "Records not yet processed and committed, by topic.",
            labels=["topic"],
        )
        monitor = app.monitor
        lag: dict[str, int] = defaultdict(int)
        for tp, end in dict(monitor.tp_end_offsets).items():
            done = monitor.tp_committed_offsets.get(tp)
            if done is None:
                read = monitor.tp_read_offsets.get(tp)
                done = read + 1 if read is not None else None
            if end is not None and done is not None:
                lag[tp.topic] += max(0, end - done)
        for topic, value in sorted(lag.items()):
            family.add_metric([topic], value)
        yield family


metrics.REGISTRY.register(ConsumerLagCollector())  # type: ignore[arg-type]
