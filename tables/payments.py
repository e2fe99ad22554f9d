"""The ``payments`` table: a payment's live state, key payment_id.

Changelog-backed (RocksDB via rocksdict by default), partitioned like the commands topic.
The saga is its only writer, so one partition has one writer and no lock is needed. A
payment's pending timer is part of its row (see `tables.timers`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Any

from orchestrator_app.domain.records import Payment, Timer
from orchestrator_app.domain.saga import timer_of
from tables.keyed import partition_of, payment_keyed_table

__all__ = ["LiveRows", "live_rows", "payments", "pending_timers"]

payments = payment_keyed_table(
    "payments", Payment, "Live payment state by payment_id (DESIGN §1)."
)

class LiveRows:
    """Decoded rows of the payments in flight on this worker, beside the table.

    Decoding a stored Payment (a Faust record with its history) cost more than applying a
    command to it, and each payment is read once per command. The saga is the only writer of
    its partitions, so the row it wrote last *is* the stored row while it keeps the
    partition: every row it writes is kept here until the payment has nothing left to wait
    for, and everything is forgotten when partitions are revoked (another worker may write
    them next). Bounded: the oldest entries go first.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._rows: dict[str, Payment] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, payment_id: str) -> Payment | None:
        row = self._rows.get(payment_id)
        return row if row is not None else payments.get(payment_id)

    def stored(self, payment: Payment) -> None:
        """`payment` was just written to the table."""
        if payment.timer_kind is None:  # finished, or waiting for nobody: read it back
            self._rows.pop(payment.payment_id, None)
            return
        self._rows[payment.payment_id] = payment
        if len(self._rows) > self.limit:
            del self._rows[next(iter(self._rows))]

    def clear(self) -> None:
        self._rows.clear()


live_rows = LiveRows()

#: A stored row without a timer (most rows: every terminal payment) — skipped undecoded.
_NO_TIMER = re.compile(rb'"timer_kind"\s*:\s*null')


def pending_timers(partitions: Collection[int]) -> Iterator[Timer]:
    """The timers of the payments stored here for `partitions` (a scan of the local store:
    run after a rebalance, not per tick).

    With RocksDB each partition has its own database, so only those are read, and a row
    is decoded only if its raw JSON has a timer: ~1-2 µs per finished payment.
    """
    store: Any = payments.data
    databases = getattr(store, "_dbs", None)
    if databases is None:  # the in-memory store holds decoded rows
        for payment_id, payment in list(store.data.items()):
            if partition_of(payment_id) in partitions:
                timer = timer_of(payment)
                if timer is not None:
                    yield timer
        return
    for partition in partitions:
        db = databases.get(partition)
        if db is None:
            continue
        for _, raw in store._visible_items(db):
            if raw is None or _NO_TIMER.search(raw):
                continue
            timer = timer_of(store._decode_value(raw))
            if timer is not None:
                yield timer
