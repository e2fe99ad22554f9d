"""The ``timers`` table: each waiting payment's one pending timer, key payment_id.

Written only by the saga agent (set on entering a waiting state, deleted on leaving it), so
it is small — only payments in flight — and durable through its changelog: a retry backoff
or a deadline survives a worker crash. The timer agent reads it through `due_index`, an
in-memory heap the saga agent keeps current, rebuilt from the table now and then (after a
rebalance the table holds timers this process never saw being set).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from orchestrator_app.domain.records import Timer
from tables.keyed import payment_keyed_table

__all__ = ["DueIndex", "due_index", "timers"]

timers = payment_keyed_table(
    "timers", Timer, "Pending retry / deadline timer per payment."
)


class DueIndex:
    """Pending timers by due time: O(log n) per change, no table scan per tick."""

    def __init__(self) -> None:
        self._current: dict[str, Timer] = {}
        self._heap: list[tuple[float, str, int]] = []

    def __len__(self) -> int:
        return len(self._current)

    def set(self, timer: Timer) -> None:
        self._current[timer.payment_id] = timer
        heapq.heappush(self._heap, (timer.due, timer.payment_id, timer.seq))

    def discard(self, payment_id: str) -> None:
        self._current.pop(payment_id, None)  # its heap entry is skipped when it surfaces

    def due(self, now: float) -> list[Timer]:
        """Timers due at `now` (still pending: the saga removes them once handled)."""
        found: list[Timer] = []
        while self._heap and self._heap[0][0] <= now:
            _, payment_id, seq = heapq.heappop(self._heap)
            timer = self._current.get(payment_id)
            if timer is not None and timer.seq == seq:
                found.append(timer)
        for timer in found:  # keep them until the saga clears them (resend if lost)
            heapq.heappush(self._heap, (timer.due, timer.payment_id, timer.seq))
        return found

    def keep(self, wanted: Callable[[Timer], bool]) -> None:
        """Drop every timer `wanted` refuses (e.g. those of revoked partitions)."""
        self.rebuild([t for t in self._current.values() if wanted(t)])

    def rebuild(self, pending: list[Timer]) -> None:
        self._current = {t.payment_id: t for t in pending}
        self._heap = [(t.due, t.payment_id, t.seq) for t in pending]
        heapq.heapify(self._heap)


due_index = DueIndex()
