"""Which input offsets an agent has not seen: the bookkeeping behind `agents.continuity`.

Why: Faust's consumer can skip a record at a rebalance and still commit past it. Seen in
the PostgreSQL-outage fault test (about one run in 25): the survivor took over a dead
worker's ``payment.created`` partition at committed offset 635, its ingest agent was
handed 636 onwards but never 635, and the group committed the partition to its end. The
payment was never created, and nothing would ever have read it again. (Faust confuses the
last offset delivered with the next one to read around its seeks: it fills an offset gap
from ``read_offset + 1`` and accepts acks that start one past the committed offset.)

An agent reads each partition in order, so the rule is simple: within one consumer
generation, an offset beyond the next expected one means the records in between were not
delivered. Those are read again from the broker and handled first, before the record that
revealed them is acknowledged, so nothing is committed past them. A real gap in the log
(a transaction marker, a compacted record) reads back as no records and costs one fetch.
At a partition's first record of a generation the next expected offset is the group's
committed one: exactly where the dropped record above sat.

Pure: no Kafka here; `agents.continuity` does the reading.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Continuity", "Skipped"]


@dataclass(frozen=True)
class Skipped:
    """Offsets ``[start, end)`` of one partition that were not delivered."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class Continuity:
    """Per input partition, the next offset the agent should be handed."""

    def __init__(self) -> None:
        self._generation: int | None = None
        self._next: dict[Hashable, int] = {}

    def seen(self, partition: Hashable, offset: int, generation: int,
             committed: Callable[[Hashable], int | None]) -> Skipped | None:
        """Record that `offset` of `partition` was delivered; the offsets skipped before it,
        if any. ``committed(partition)`` is the group's committed offset of the partition
        (None if the group never committed it): where a generation starts reading, asked
        at the partition's first record of a generation only.

        Offsets behind the expected one (a partition read again from an earlier offset)
        are fine: the saga ignores what it applied already, and reading goes on from them.
        """
        if generation != self._generation:
            self._generation = generation
            self._next.clear()
        expected = self._next.get(partition)
        if expected is None:
            expected = committed(partition)
        self._next[partition] = offset + 1
        if expected is not None and offset > expected:
            return Skipped(expected, offset)
        return None
