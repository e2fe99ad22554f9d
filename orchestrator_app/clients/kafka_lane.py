"""Records appended straight to the producer's batches: the saga's state changes and
notifications, and the payments table's changelog records (`tables.payments`), past Faust's
per-record send path.

Why. A record sent through Faust (``send_soon``) becomes a future message in a buffer that a
background task drains, each record one ``publish_message`` and one awaited
``AIOKafkaProducer.send`` with its metadata wait, serialization and partitioning: measured
(py-spy, one worker at peak) ~12 % of a worker's CPU for a payment's six sends. Here a
record is appended, synchronously, to the aiokafka batch of its partition — what
``AIOKafkaProducer.send`` does in the end — and its acknowledgement callback waits with
the other records of ours in that batch on the batch's one delivery future: no future, no
record metadata and no scheduled callback per record (aiokafka's ``MessageBatch.append``
makes all three; they were ~4 % of a worker).

What still holds:

* **Order per partition**: appends are synchronous, in call order; a record sent before the
  topic's metadata is known waits in a backlog that keeps every later record behind it.
* **Nothing committed past an unacknowledged record**: the records are in the producer's
  accumulator at once, so the producer's flush — which Faust awaits before committing
  offsets or giving up partitions — waits for them too.
* **A refused record stops the worker** (`on_failure`), as for Faust's sends
  (`orchestrator_app.supervision.guard_producer`).
* **Backpressure**: `room` waits while more than `limit` records are unacknowledged (the
  accumulator itself would only make a sender wait on a full batch).

It reads aiokafka internals: the accumulator's per-partition batch queues and
``_append_batch``, and a batch's builder and delivery future. ``aiokafka`` is pinned below
0.15, and the integration test (``tests/integration/test_kafka_lane.py``) reads back what
the lane wrote.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, ProducerClosed

__all__ = ["KafkaLane"]

log = logging.getLogger(__name__)

#: Called with the record's offset once the broker has it (None with ``acks=0``).
Callback = Callable[[int | None], None]
Headers = list[tuple[str, bytes]]


class KafkaLane:
    def __init__(self, producer: Callable[[], Any], key_hash: Callable[[bytes], int],
                 on_failure: Callable[[BaseException], None], limit: int = 20_000) -> None:
        """`producer` returns the started ``AIOKafkaProducer`` (None before it starts);
        `key_hash` is the default partitioner's hash (the partition is hash % count)."""
        self._producer = producer
        self._key_hash = key_hash
        self._on_failure = on_failure
        self.limit = limit
        self._partitions: dict[str, int] = {}
        self._backlog: deque[tuple[str, bytes, bytes, Headers, Callback | None, int | None]] \
            = deque()
        self._draining: asyncio.Task[None] | None = None
        self._unacked = 0
        #: Per producer batch holding records of ours: their callbacks and offsets in the
        #: batch, in append order.
        self._waiting: dict[Any, list[tuple[Callback | None, int]]] = {}
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        """Records sent and not yet acknowledged (the backlog included)."""
        return self._unacked

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None,
             callback: Callback | None = None, partition: int | None = None) -> None:
        """Append one record to `partition` (by default the key's, as Kafka's default
        partitioner picks it); `callback(offset)` runs once the broker has it."""
        self._unacked += 1
        if self._unacked >= self.limit:
            self._room.clear()
        if self._backlog or topic not in self._partitions:
            self._backlog.append((topic, key, value, headers or [], callback, partition))
            self._drain_soon()
            return
        self._append(topic, key, value, headers or [], callback, partition)

    async def room(self) -> None:
        """Wait until fewer than `limit` records are unacknowledged (cheap when so)."""
        if not self._room.is_set():
            await self._room.wait()

    async def drained(self) -> None:
        """Wait until the backlog is in the producer's batches (where its flush sees it)."""
        while self._backlog:
            await asyncio.shield(self._drain_soon())

    def _append(self, topic: str, key: bytes, value: bytes, headers: Headers,
                callback: Callback | None, partition: int | None) -> None:
        """Append to the partition's open batch; a record that cannot be appended stops the
        worker (`on_failure`) and raises."""
        try:
            self._append_to_batch(topic, key, value, headers, callback, partition)
        except Exception as exc:
            self._on_failure(exc)
            raise

    def _append_to_batch(self, topic: str, key: bytes, value: bytes, headers: Headers,
                         callback: Callback | None, partition: int | None) -> None:
        producer = self._producer()
        accumulator = producer._message_accumulator
        if accumulator._closed or accumulator._exception is not None:
            raise accumulator._exception or ProducerClosed()
        if len(key) + len(value) > producer._max_request_size:  # as send() refuses it
            raise MessageSizeTooLargeError(
                f"a record of {len(key) + len(value)} B is over the producer's "
                f"max_request_size ({producer._max_request_size} B)")
        count = self._partitions[topic]
        if partition is None:
            partition = self._key_hash(key) % count
        elif not 0 <= partition < count:
            raise ValueError(f"{topic} has no partition {partition} (it has {count})")
        tp = TopicPartition(topic, partition)
        queue = accumulator._batches.get(tp)
        batch = queue[-1] if queue else None
        record = None if batch is None else batch._builder.append(
            timestamp=None, key=key, value=value, headers=headers)
        if record is None:  # no open batch for the partition, or it is full: a new one
            batch = accumulator._append_batch(accumulator.create_builder(), tp)
            record = batch._builder.append(timestamp=None, key=key, value=value,
                                           headers=headers)
            if record is None:  # an empty batch takes any record: not expected
                raise RuntimeError("a new producer batch refused a record")
        waiting = self._waiting.get(batch)
        if waiting is None:
            waiting = self._waiting[batch] = []
            batch.future.add_done_callback(partial(self._delivered, batch))
        waiting.append((callback, record.offset))

    def _delivered(self, batch: Any, future: asyncio.Future[Any]) -> None:
        """A batch is on the broker (or failed): every record of ours in it is settled."""
        callbacks = self._waiting.pop(batch, [])
        self._unacked -= len(callbacks)
        if self._unacked < self.limit:
            self._room.set()
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._on_failure(error)
            return
        metadata = future.result()
        base = None if metadata is None else metadata.offset
        for callback, offset in callbacks:
            if callback is not None:
                callback(None if base is None else base + offset)

    def _drain_soon(self) -> asyncio.Task[None]:
        """The task appending the backlog: the running one, else a new one."""
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        return self._draining

    async def _drain(self) -> None:
        """Learn the partition counts the backlog needs, then append it in order."""
        delay = 0.05
        while self._backlog:
            topic = self._backlog[0][0]
            if topic not in self._partitions:
                producer = self._producer()
                try:
                    if producer is None:
                        raise RuntimeError("the producer is not started")
                    self._partitions[topic] = len(await producer.partitions_for(topic))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # not yet: the broker is starting, or moving
                    log.warning("partitions of %s not known yet (%s); retrying",
                                topic, exc.__class__.__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
            while self._backlog and self._backlog[0][0] in self._partitions:
                self._append(*self._backlog.popleft())

