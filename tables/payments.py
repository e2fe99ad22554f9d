"""The ``payments`` table: a payment's live state, key payment_id.

Changelog-backed (RocksDB via rocksdict by default), partitioned like the commands topic.
The saga is its only writer, so one partition has one writer and no lock is needed. A
payment's pending timer is part of its row (see `tables.timers`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import Any

import rocksdict
from faust.stores.base import SerializedStore
from faust.types import TP

from orchestrator_app.app import app, settings
from orchestrator_app.domain.records import Payment, Timer
from orchestrator_app.domain.saga import timer_of
from orchestrator_app.topics import effects
from tables.keyed import partition_of, payment_keyed_table, writing_partition

__all__ = ["LiveRows", "flush_rows_too", "live_rows", "payments", "pending_timers"]

log = logging.getLogger(__name__)

payments = payment_keyed_table(
    "payments", Payment, "Live payment state by payment_id (DESIGN §1)."
)

class LiveRows:
    """The saga's rows: applied at once in memory, written to the table only after their
    effects are on the broker.

    Why write-behind. A payment's row (store and changelog) must never be durable before
    the events and notifications of that version are: a worker killed in between would
    leave a successor with a state whose events nobody will ever send — an outcome applied
    in place (`agents.saga.deliver`) has no input record to be redelivered. So every effect
    carries an acknowledgement callback; a version's row is written (`_write_row`: store
    and changelog together) once its effects and those of every earlier version are
    acknowledged; and the producer's flush — what Faust awaits before committing offsets or
    giving up partitions — also waits for the rows those acknowledgements release
    (`flush_rows_too`). A worker killed first leaves the previous row, whose pending
    work (a call to re-issue, a redelivered input) brings the same version back.

    A released row waits up to `delay` seconds before it is written, and only the newest
    of a payment's released versions is: a payment's outcomes arrive milliseconds apart, so
    its three versions usually cost one store write and one changelog record instead of
    three (a third of the records a payment produced). Waiting is as safe as the wait for
    acknowledgements: a row not yet written is recovered by the same rule. The flush
    writes whatever waits, so nothing is committed past an unwritten row.

    Until then the saga reads its rows here (decoding a stored Payment also cost more than
    applying a command to it); so do the API's reads, which see what the saga sees. Rows of
    finished payments are dropped once written; every row is forgotten when partitions are
    revoked (after Faust's flush: nothing is pending).
    """

    def __init__(self, limit: int = 50_000,
                 write: Callable[[Payment], None] | None = None,
                 delay: float = 0.0) -> None:
        self.limit = limit
        self.delay = delay
        self._write = write or _write_row
        self._rows: dict[str, Payment] = {}
        #: Per payment, versions not yet written: [effects not yet acknowledged, row].
        self._pending: dict[str, deque[list[Any]]] = {}
        #: Released rows waiting for the next write (newest version per payment).
        self._released: dict[str, Payment] = {}
        self._scheduled: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, payment_id: str) -> Payment | None:
        row = self._rows.get(payment_id)
        return row if row is not None else payments.get(payment_id)

    def rows_in(self, partitions: Collection[int]) -> list[Payment]:
        """The latest applied rows of `partitions` (some not yet in the table)."""
        return [row for payment_id, row in self._rows.items()
                if partition_of(payment_id) in partitions]

    def pending(self) -> int:
        """Payments with a version not yet written to the table."""
        return len(self._pending)

    def applied(self, payment: Payment, effects: int) -> Callable[[Any], None]:
        """`payment` is the new row; `effects` sends will call the returned callback once
        each, when the broker has them. (No effects: written as soon as the earlier
        versions are.)"""
        payment_id = payment.payment_id
        self._rows[payment_id] = payment
        entry: list[Any] = [effects, payment]
        self._pending.setdefault(payment_id, deque()).append(entry)

        def acknowledged(_: Any = None) -> None:
            entry[0] -= 1
            if entry[0] <= 0:
                self._write_ready(payment_id)

        if effects <= 0:
            self._write_ready(payment_id)
        return acknowledged

    def _write_ready(self, payment_id: str) -> None:
        queue = self._pending.get(payment_id)
        ready: Payment | None = None
        while queue and queue[0][0] <= 0:
            ready = queue.popleft()[1]
        if ready is None:
            return
        if not queue:
            del self._pending[payment_id]
        self._released[payment_id] = ready
        if self.delay <= 0:
            self.write_released()
        elif self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(
                self.delay, self.write_released)

    def released(self) -> int:
        """Payments with a released row not yet written."""
        return len(self._released)

    def _unschedule(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def write_released(self) -> None:
        """Write every released row now (the flush calls this, and the delay's timer)."""
        self._unschedule()
        released, self._released = self._released, {}
        for payment_id, row in released.items():
            self._write(row)
            if (payment_id not in self._pending and self._rows.get(payment_id) is row
                    and row.timer_kind is None):
                del self._rows[payment_id]  # written and waiting for nobody: the table has it
        if len(self._rows) > self.limit:
            self._evict()

    def _evict(self) -> None:
        for payment_id in list(self._rows)[: len(self._rows) - self.limit]:
            if payment_id not in self._pending and payment_id not in self._released:
                del self._rows[payment_id]  # written: safe to read back

    def clear(self) -> None:
        self._unschedule()
        self._rows.clear()
        self._pending.clear()
        self._released.clear()


def _write_row(row: Payment) -> None:
    """Store and changelog of the row's own partition (called from send callbacks too).

    A serialized store (RocksDB) gets the row encoded once, and its changelog record goes
    through the effects lane, like the saga's events: Faust's table write would encode the
    row again for the changelog and send it through its per-record send path (taking it
    off gave two workers ~13 % more payments/s, README run L). What Faust's write does
    besides is kept: the store write, in the partition's own database, and the persisted
    changelog offset once the broker has the record (`_persisted`; recovery reads the
    changelog from there). The in-memory store keeps the decoded row and Faust's own path.
    """
    try:
        partition = partition_of(row.payment_id)
        with writing_partition(partition):
            if not isinstance(payments.data, SerializedStore):
                payments[row.payment_id] = row
                return
            value = row.dumps()
            payments.data[row.payment_id] = value
        effects.send(_changelog_name(), row.payment_id.encode(), value, None,
                     _persisted(partition), partition)
    except Exception:  # pragma: no cover - a bug; the worker must not go on silently
        log.exception("writing a payment row failed")
        raise


def _changelog_name() -> str:
    return str(payments.changelog_topic.get_topic_name())


_persisting: dict[int, Callable[[int | None], None]] = {}


def _persisted(partition: int) -> Callable[[int | None], None]:
    """The callback that records a changelog offset of `partition` in its database, as
    Faust's own changelog callback does (at-least-once: at once, not at commit)."""
    callback = _persisting.get(partition)
    if callback is None:
        tp = TP(_changelog_name(), partition)

        def persist(offset: int | None) -> None:
            if offset is not None:
                payments.data.set_persisted_offset(tp, offset)

        callback = _persisting[partition] = persist
    return callback


live_rows = LiveRows(delay=settings.row_write_delay)


def flush_rows_too(producer: Any) -> None:
    """Make ``producer.flush()`` — awaited by Faust before every commit and revocation — wait
    for what was sent before it was called, and then for the rows its acknowledgements
    released.

    Faust's own flush waits until its send buffer is *empty*, one ``wait_for`` per message:
    under steady load that is never, and commits ran for a minute ("Timer commit is
    overlapping"). A commit needs only the records sent before it: the buffer hands them to
    aiokafka in order, so once the last of them is acknowledged, aiokafka's flush covers
    every earlier one.
    """
    buffer = producer.buffer
    put = buffer.put
    last: list[Any] = [None]

    def put_marked(fut: Any) -> None:
        last[0] = fut
        put(fut)

    buffer.put = put_marked

    async def upto(mark: Any) -> None:
        if mark is not None and not mark.done():
            await asyncio.wait([mark])
        if producer._producer is not None:
            await producer._producer.flush()

    async def flush_with_rows() -> None:
        await effects.drained()  # the saga's effects sent before the topic's metadata came
        await upto(last[0])
        # Acknowledgement callbacks run on the next loop turns; they release the rows,
        # which are then written now rather than after their delay.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        live_rows.write_released()
        await effects.drained()  # their changelog records, if their topic was not known yet
        await upto(last[0])

    producer.flush = flush_with_rows


flush_rows_too(app.producer)

#: A stored row without a timer (most rows: every terminal payment) — skipped undecoded.
_NO_TIMER = re.compile(rb'"timer_kind"\s*:\s*null')
#: The rebuild scan reads every row once: keep those blocks out of the block cache, which
#: then holds what the saga reads again (a scan of 1M rows filled it with 1.4 GB).
_SCAN = rocksdict.ReadOptions()
_SCAN.fill_cache(False)


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
        for key, raw in db.items(read_opt=_SCAN):
            if raw is None or key == store.offset_key or _NO_TIMER.search(raw):
                continue
            timer = timer_of(store._decode_value(raw))
            if timer is not None:
                yield timer
