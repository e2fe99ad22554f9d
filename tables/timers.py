"""The due index: every pending timer of the payments this worker owns, by due time.

There is no timers table: a payment's one pending timer (retry backoff or deadline) lives in
its own row of the ``payments`` table (``timer_kind``/``timer_due``/``timer_seq``), so it is
as durable as the payment and costs no changelog write of its own. This in-memory heap is
the saga's index of those rows — kept current by the saga on every command, rebuilt from
the owned partitions of the table after each rebalance (`tables.payments.pending_timers`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from orchestrator_app.domain.records import Timer

__all__ = ["DueIndex", "due_index"]


class DueIndex:
    """Pending timers by due time: O(log n) per change, no table scan per tick."""

    def __init__(self) -> None:
        self._current: dict[str, Timer] = {}
        self._heap: list[tuple[float, str, int]] = []

    def __len__(self) -> int:
        return len(self._current)

    def set(self, timer: Timer) -> None:
        current = self._current.get(timer.payment_id)
        if current == timer:
            return  # a redelivered command re-arms the same timer: no second heap entry
        self._current[timer.payment_id] = timer
        heapq.heappush(self._heap, (timer.due, timer.payment_id, timer.seq))
        if len(self._heap) > 2 * len(self._current) + 1024:
            # Replaced and discarded timers leave stale entries until they come due (a
            # deadline is minutes away): compact, amortised O(1) per change.
            self.rebuild(list(self._current.values()))

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
