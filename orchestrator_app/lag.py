"""Consumer lag of this worker's Faust consumer: in records and in seconds, per partition.

* ``kafka_consumer_lag{topic,partition}``: end offset - committed offset, for the source
  partitions this worker owns now (a partition that moved away is dropped). The end offset
  is the consumer's fetch high watermark (right on Tansu too, unlike ListOffsets — DESIGN
  §7); the committed offset is the last one this worker committed, else the group's
  committed offset the consumer started from, else (a new group) the partition's log start.
* ``kafka_consumer_lag_seconds{topic,partition}``: how old the next uncommitted record is,
  by interpolating offsets over time as kafka-lag-exporter does. A sampler records
  (time, end offset) once a second per owned partition; the record at the committed offset
  was produced between the last sample whose end offset was at or below it and the first one
  above it (interpolated linearly in offsets). 0 when nothing is pending; it grows by a
  second per second while the partition is held.

Faust keeps no time lag and never forgets a partition in its monitor: both are done here.
Registered with `orchestrator_app.metrics.REGISTRY` on import (`topology` imports it).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from faust.types import TP
from prometheus_client.core import GaugeMetricFamily

from orchestrator_app import metrics
from orchestrator_app.app import app

__all__ = [
    "SAMPLE_SECONDS",
    "ConsumerLagCollector",
    "LagHistory",
    "PartitionLag",
    "consumer_lag",
]

#: How often end offsets are sampled for the time lag.
SAMPLE_SECONDS = 1.0
#: Samples kept per partition (at one a second: 15 minutes of backlog age resolution).
MAX_SAMPLES = 900


class LagHistory:
    """(time, end offset) samples of one partition, and the age of a given offset (pure)."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=max_samples)

    def add(self, now: float, end: int) -> None:
        if self._samples and self._samples[-1][1] == end:
            return  # unchanged: the first time an end offset was seen is what counts
        if self._samples and end < self._samples[-1][1]:
            self._samples.clear()  # the topic was recreated or truncated
        self._samples.append((now, end))

    def seconds_behind(self, committed: int, end: int, now: float) -> float:
        """Age of the record at offset `committed` (the next one to process) at `now`."""
        if committed >= end:
            return 0.0
        before: tuple[float, int] | None = None
        for sample in self._samples:
            at, seen_end = sample
            if seen_end > committed:
                if before is None:  # already there at the first sample: at least this old
                    return max(0.0, now - at)
                t0, e0 = before
                produced = t0 + (at - t0) * (committed + 1 - e0) / (seen_end - e0)
                return max(0.0, now - produced)
            before = sample
        return 0.0  # the end offset only just moved past it

    def prune(self, committed: int) -> None:
        """Forget samples older than the last one at or below `committed` (kept: it bounds
        the interpolation)."""
        while len(self._samples) > 1 and self._samples[1][1] <= committed:
            self._samples.popleft()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end: int
    committed: int
    records: int
    seconds: float


_histories: dict[TP, LagHistory] = {}
#: Log start offsets of owned partitions that have no committed offset yet (a new group
#: starts there: ``consumer_auto_offset_reset="earliest"``), fetched by the sampler.
_log_start: dict[TP, int] = {}


def _owned_source_partitions() -> set[TP]:
    """Active partitions of the topics the agents read (changelogs and standbys excluded)."""
    try:
        actives = set(app.assignor.assigned_actives())
    except (AttributeError, KeyError):
        return set()
    internal = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    internal.add(f"{app.conf.id}-__assignor-__leader")
    return {tp for tp in actives if tp.topic not in internal}


def _end_offset(tp: TP) -> int | None:
    try:
        end = app.consumer.highwater(tp)
    except Exception:  # no fetch for it yet, or the consumer is not started
        end = None
    if end is None or end < 0:
        end = app.monitor.tp_end_offsets.get(tp)
    return end


def _committed(tp: TP) -> int | None:
    done = app.monitor.tp_committed_offsets.get(tp)
    if done is None:
        done = app.consumer._committed_offset.get(tp)
    if done is None:  # a new group: it starts at the log start (auto_offset_reset earliest)
        done = _log_start.get(tp)
    return done


def consumer_lag(now: float | None = None) -> list[PartitionLag]:
    """The lag of every source partition this worker owns (sampling end offsets too)."""
    now = time.time() if now is None else now
    owned = _owned_source_partitions()
    for gone in set(_histories) - owned:
        del _histories[gone]
    for gone in set(_log_start) - owned:
        del _log_start[gone]
    found: list[PartitionLag] = []
    for tp in sorted(owned):
        end = _end_offset(tp)
        if end is None:
            continue
        history = _histories.setdefault(tp, LagHistory())
        history.add(now, end)
        done = _committed(tp)
        if done is None:  # nothing committed or read yet, and the log start is not known
            continue
        history.prune(done)
        found.append(PartitionLag(
            tp.topic, tp.partition, end, done, max(0, end - done),
            round(history.seconds_behind(done, end, now), 3)))
    return found


@app.timer(interval=SAMPLE_SECONDS)
async def sample_end_offsets() -> None:
    """Sample end offsets between scrapes: the time lag needs a history of them."""
    consumer_lag()
    unknown = [tp for tp in _owned_source_partitions()
               if tp not in _log_start and _committed(tp) is None]
    if unknown:
        try:
            starts = await app.consumer.earliest_offsets(*unknown)
        except Exception:  # the broker is away: the next tick asks again
            return
        _log_start.update({tp: offset for tp, offset in starts.items() if offset is not None})


class ConsumerLagCollector:
    """``kafka_consumer_lag`` and ``kafka_consumer_lag_seconds`` at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return _families(consumer_lag())


def _families(lags: Iterable[PartitionLag]) -> Iterator[GaugeMetricFamily]:
    records = GaugeMetricFamily(
        "kafka_consumer_lag",
        "Records not yet processed and committed, per partition this worker owns.",
        labels=["topic", "partition"],
    )
    seconds = GaugeMetricFamily(
        "kafka_consumer_lag_seconds",
        "Age of the next uncommitted record (offsets interpolated over time), per partition "
        "this worker owns.",
        labels=["topic", "partition"],
    )
    for lag in lags:
        labels = [lag.topic, str(lag.partition)]
        records.add_metric(labels, lag.records)
        seconds.add_metric(labels, lag.seconds)
    yield records
    yield seconds


metrics.REGISTRY.register(ConsumerLagCollector())  # type: ignore[arg-type]
