"""Postgres sink: ``payment.state.changed`` → payment_states + payment_state_history.

Not a Faust agent on purpose: it is its own Kafka consumer (group ``<APP_ID>-sink``) with
its own offsets. Faust waits at every rebalance until each in-flight event is acked
(``stream_wait_empty``); a sink holding unacked events while the database is down froze
the whole consumer group at the next rebalance (DESIGN §3, measured). Here the saga's group
never waits for the database: the sink's group rebalances on its own, and a batch it holds
when its partitions move is simply dropped (the new owner reads it again from the committed
offset; writes are idempotent).

Each batch is one ``getmany`` and one transaction. Rules:

* connection errors (database down, restarting): retry the same batch with backoff, forever;
  offsets are committed only after the batch is written;
* a batch PostgreSQL refuses for a *value* (a row it cannot store): split in halves until
  the offending rows are found; the good rows are written, each bad one goes to the sink
  dead-letter topic with the database's error — a bad row never stops good ones;
* an event that does not decode goes to the same dead-letter topic.

Nothing is committed before it is written or dead-lettered (dead letters are awaited).
Offsets are committed at most every `COMMIT_INTERVAL` while busy (at once when idle, and
at stop): a commit per small batch cost the broker more CPU than the
records themselves, and a batch written again after a crash is harmless (idempotent).
Fetches wait up to `FETCH_WAIT_MS` for `FETCH_MIN_BYTES`, so batches are fuller too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind
from prometheus_client.core import GaugeMetricFamily

from orchestrator_app import clock, metrics, supervision, telemetry
from orchestrator_app.app import app, settings
from orchestrator_app.clients.postgres import CONNECTION_ERRORS, PaymentStore, StateRow
from orchestrator_app.deadletter import dead_letter, position_of
from orchestrator_app.domain import codec
from orchestrator_app.topics import sink_dlq

__all__ = ["ROW_ERRORS", "PostgresSink", "SinkItem", "decode", "postgres_sink", "write_split"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
#: Seconds between offset commits while batches keep coming.
COMMIT_INTERVAL = 1.0
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 100
#: Errors that blame the data, not the connection: split the batch and dead-letter the row.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # SQLSTATE class 22: bad value, untranslatable character, overflow
    asyncpg.IntegrityConstraintViolationError,  # class 23
    asyncpg.ProgramLimitExceededError,  # class 54: e.g. a row too large for an index
    ValueError,  # asyncpg refused to encode an argument client-side
    TypeError,
    OverflowError,
)


@dataclass(frozen=True)
class SinkItem:
    """A decoded row and where it came from (for its dead letter)."""

    row: StateRow
    record: ConsumerRecord[bytes, bytes]


def decode(records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[
        list[SinkItem], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    """Rows to write, and the records that are not a state change (with why)."""
    items: list[SinkItem] = []
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for record in records:
        try:
            items.append(SinkItem(StateRow.from_event(codec.loads(record.value or b"")), record))
        except Exception as exc:  # any shape of garbage: a dead letter, never a crash
            bad.append((record, f"undecodable state change: {exc.__class__.__name__}: "
                                f"{str(exc)[:200]}"))
    return items, bad


async def write_split(
    store: PaymentStore, items: Sequence[SinkItem]
) -> list[tuple[SinkItem, BaseException]]:
    """Write `items`; return the rows PostgreSQL refused (each with its error).

    Connection errors propagate (the caller retries the whole batch; rows already written
    are written again harmlessly). A refused batch is bisected: log2(n) extra statements
    per bad row, and a batch of good rows still costs one statement.
    """
    try:
        await store.write_batch([item.row for item in items])
        return []
    except CONNECTION_ERRORS:
        raise
    except ROW_ERRORS as exc:
        if len(items) == 1:
            return [(items[0], exc)]
    middle = len(items) // 2
    return [*await write_split(store, items[:middle]), *await write_split(store, items[middle:])]


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts rebalances (a batch read before one is dropped, not written late) and keeps
    the committed offset of each owned partition (for the lag gauge)."""

    def __init__(self, sink: PostgresSink) -> None:
        self.generation = 0
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # No commit here: one from inside the rebalance callback once left the sink's
        # group stuck after a member died. What was written but not committed is written
        # again by the next owner (idempotent).
        self.generation += 1
        for tp in revoked:
            self.sink._done.pop(tp, None)
            self.sink._committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.generation += 1
        consumer = self.sink.consumer
        for tp in assigned:
            committed = None
            if consumer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    committed = await consumer.committed(tp)
            self.sink._done[tp] = self.sink._committed[tp] = committed or 0


def _batch_span(records: Sequence[ConsumerRecord[bytes, bytes]]) -> Any:
    """The span of one sink batch: linked to the trace of every payment in it (their
    ``traceparent`` headers), and a child of that trace when the batch holds one only."""
    traceparents = [telemetry.traceparent_of(r.headers) for r in records]
    links = telemetry.links_of(traceparents)
    parents = {tp.split("-")[1] for tp in traceparents if tp}
    context = (telemetry.payment_parent("", next(t for t in traceparents if t))
               if len(parents) == 1 else None)
    span = telemetry.tracer.start_as_current_span(
        "postgres.sink batch", context=context, links=links, kind=SpanKind.CONSUMER)
    return _with_attributes(span, {
        "messaging.system": "kafka", "messaging.operation": "process",
        "messaging.destination.name": records[0].topic,
        "messaging.batch.message_count": len(records),
        "messaging.kafka.consumer.group": f"{settings.app_id}-sink",
        "db.system": "postgresql"})


@contextlib.contextmanager
def _with_attributes(manager: Any, attributes: dict[str, Any]) -> Any:
    with manager as span:
        span.set_attributes(attributes)
        yield span


class PostgresSink(faust.Service):
    """The sink loop as a Faust service: started and stopped with the worker."""

    def __init__(self, store: PaymentStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.consumer: AIOKafkaConsumer | None = None
        self.assignment = _Assignment(self)
        self._task: asyncio.Task[None] | None = None
        #: Next offset to write, per partition, and what was committed last.
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=list(settings.kafka_brokers),
            group_id=f"{settings.app_id}-sink",
            client_id=f"{settings.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.sink_batch_size,
            session_timeout_ms=int(settings.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(settings.broker_heartbeat_interval * 1000),
            rebalance_timeout_ms=int(settings.broker_rebalance_timeout * 1000),
            # A long outage must not make the sink leave its group: it polls again as soon
            # as the database answers (a departed member would simply rejoin, but a stable
            # group avoids moving partitions for nothing).
            max_poll_interval_ms=3_600_000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.consumer is not None:
            with contextlib.suppress(KafkaError, OSError, CommitFailedError,
                                     IllegalStateError, TimeoutError):
                await asyncio.wait_for(
                    self.commit_written(self.consumer, self.consumer.assignment()), 5.0)
            try:
                await asyncio.wait_for(self.consumer.stop(), 5.0)
            except (TimeoutError, KafkaError, OSError):
                log.warning("sink consumer did not stop cleanly")
            self.consumer = None
        await self.store.close()

    @property
    def alive(self) -> bool:
        """False once the loop ended: it never should while the worker runs."""
        return self._task is None or not self._task.done()

    async def _run(self) -> None:
        """Never ends on its own: every error is logged, counted and retried."""
        delay = 0.2
        while True:
            try:
                if self.consumer is None:
                    consumer = self._consumer()
                    await consumer.start()
                    consumer.subscribe([settings.topics.state_changed],
                                       listener=self.assignment)
                    self.consumer = consumer
                await self._once(self.consumer)
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.sink_errors.labels(kind=exc.__class__.__name__).inc()
                log.error("postgres sink: %s: %s; retrying in %.1fs",
                          exc.__class__.__name__, str(exc)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _once(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=200, max_records=settings.sink_batch_size)
        if not batch:  # idle: commit what was written
            await self._commit(consumer)
            return
        generation = self.assignment.generation
        records = [r for tp in sorted(batch, key=lambda t: t.partition) for r in batch[tp]]
        firsts = {tp: rs[0].offset for tp, rs in batch.items()}
        nexts = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
        try:
            if telemetry.enabled():
                with _batch_span(records):
                    written = await self._write(records, generation)
            else:
                written = await self._write(records, generation)
        except BaseException:
            # Whatever failed (an unexpected error, a stop), the batch is read again: its
            # records were fetched, and without this the next batch's commit would pass them.
            self._rewind(consumer, firsts)
            raise
        if not written:  # partitions moved while the database was down: read them again
            self._rewind(consumer, firsts)
            return
        owned = consumer.assignment()
        self._done.update({tp: off for tp, off in nexts.items() if tp in owned})
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL:
            await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self.commit_written(consumer, consumer.assignment())
        except (CommitFailedError, IllegalStateError) as exc:
            # Rebalanced meanwhile: the next owner writes these again (idempotent).
            log.info("sink commit skipped after a rebalance (%s)", exc.__class__.__name__)

    async def commit_written(self, consumer: AIOKafkaConsumer,
                             partitions: set[TopicPartition]) -> None:
        """Commit the written offsets of `partitions` that are ahead of the committed ones."""
        self._last_commit = time.monotonic()
        offsets = {tp: off for tp, off in self._done.items()
                   if tp in partitions and off > self._committed.get(tp, 0)}
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, firsts: dict[TopicPartition, int]) -> None:
        for tp, offset in firsts.items():
            if tp in consumer.assignment():
                consumer.seek(tp, offset)

    async def _write(self, records: list[ConsumerRecord[bytes, bytes]], generation: int) -> bool:
        """Write or dead-letter every record; False if a rebalance overtook the batch."""
        items, undecodable = decode(records)
        for record, reason in undecodable:
            await self._dead_letter(record, "undecodable", reason)
        delay = 0.2
        while True:
            try:
                refused = await write_split(self.store, items)
                break
            except CONNECTION_ERRORS as exc:
                metrics.sink_retries.inc()
                log.warning("postgres unavailable (%s); retrying in %.1fs",
                            exc.__class__.__name__, delay)
                await self.store.reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                if self.assignment.generation != generation:
                    return False
        for item, exc in refused:
            await self._dead_letter(item.record, "rejected_by_database",
                                    f"{exc.__class__.__name__}: {str(exc)[:300]}")
        metrics.sink_rows.inc(len(items) - len(refused))
        metrics.sink_last_write.set_to_current_time()
        return True

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], code: str,
                           reason: str) -> None:
        metrics.sink_dead_letters.labels(reason=code).inc()
        log.error("postgres sink dead-lettered %s[%d]@%d: %s",
                  record.topic, record.partition, record.offset, code)
        value = dead_letter(record.value or b"", code, reason, position_of(record),
                            clock.now(), "postgres_sink")
        # Awaited: the offset is committed only once the dead letter is on the broker.
        await (await sink_dlq.send(key=record.key, value=value))

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet written, per partition this worker's sink owns."""
        consumer = self.consumer
        if consumer is None:
            return {}
        out = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                out[tp] = max(0, high - self._done.get(tp, 0))
        return out


class SinkLagCollector:
    """``payment_sink_lag_records``: state changes on this worker's sink partitions that are
    not yet in PostgreSQL (high watermark minus the next offset to write), at scrape time."""

    def __init__(self, sink: PostgresSink) -> None:
        self.sink = sink

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "payment_sink_lag_records",
            "State changes not yet written to PostgreSQL, per partition this sink owns.",
            labels=["partition"],
        )
        for tp, lag in sorted(self.sink.lag().items()):
            family.add_metric([str(tp.partition)], lag)
        yield family


#: Its own small pool: API readers (the listing) cannot starve it, nor it them.
postgres_sink = PostgresSink(PaymentStore(settings.database_url, max_size=2))
app.service(postgres_sink)
supervision.checks["the postgres sink"] = lambda: postgres_sink.alive
metrics.REGISTRY.register(SinkLagCollector(postgres_sink))
