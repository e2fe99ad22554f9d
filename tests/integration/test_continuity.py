"""Records a stream skipped are read again from the real broker (`agents.continuity`):
exactly the skipped offsets, none where the log has a transaction marker, in order."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

import agents.continuity
from orchestrator_app.app import app
from orchestrator_app.clients.kafka_range import RangeReader
from orchestrator_app.continuity import Continuity
from tests.kafka_util import create_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def topic(kafka_brokers: str) -> str:
    name = f"continuity-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_brokers, name, 2)
    return name


@pytest.fixture
async def reader(kafka_brokers: str) -> AsyncIterator[RangeReader]:
    reader = RangeReader([kafka_brokers], "test-range-reader")
    try:
        yield reader
    finally:
        await reader.stop()


async def send(brokers: str, topic: str, keys: list[str], partition: int = 1,
               transactional: bool = False) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=brokers,
        transactional_id=f"t-{uuid.uuid4().hex[:8]}" if transactional else None)
    await producer.start()
    try:
        if transactional:
            async with producer.transaction():
                for key in keys:
                    await producer.send_and_wait(topic, b"v-" + key.encode(), key=key.encode(),
                                                 partition=partition)
        else:
            for key in keys:
                await producer.send_and_wait(topic, b"v-" + key.encode(), key=key.encode(),
                                             partition=partition)
    finally:
        await producer.stop()


async def wait_for_end(brokers: str, topic: str, partition: int, end: int,
                       timeout: float = 30.0) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, partition)
    try:
        deadline = time.monotonic() + timeout
        while (await consumer.end_offsets([tp]))[tp] < end:
            assert time.monotonic() < deadline, f"{topic}[{partition}] never reached {end}"
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


async def test_reads_exactly_the_range(kafka_brokers: str, topic: str,
                                       reader: RangeReader) -> None:
    await send(kafka_brokers, topic, [f"k{i}" for i in range(10)])
    records = await reader.read(topic, 1, 3, 7)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (i, f"k{i}".encode(), f"v-k{i}".encode()) for i in range(3, 7)]
    assert [r.offset for r in await reader.read(topic, 1, 0, 10)] == list(range(10))
    assert await reader.read(topic, 0, 0, 0) == []  # an empty range reads nothing
    # The same reader moves between partitions and ranges.
    assert [r.offset for r in await reader.read(topic, 1, 9, 10)] == [9]


async def test_a_transaction_marker_reads_back_as_no_record(
        kafka_brokers: str, topic: str, reader: RangeReader) -> None:
    await send(kafka_brokers, topic, ["a", "b"], transactional=True)  # offsets 0, 1; marker 2
    # The coordinator writes the commit marker after the commit returns: wait for it, so
    # the next record lands after it.
    await wait_for_end(kafka_brokers, topic, 1, 3)
    await send(kafka_brokers, topic, ["c"])  # offset 3
    records = await reader.read(topic, 1, 0, 4)
    assert [(r.offset, r.key) for r in records] == [(0, b"a"), (1, b"b"), (3, b"c")]
    assert await reader.read(topic, 1, 2, 3) == []  # only the marker


async def test_a_skip_is_handed_back_from_the_broker(
        kafka_brokers: str, topic: str, reader: RangeReader,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault seen in the PostgreSQL-outage test: a partition taken over at committed
    offset 2 whose stream starts at 3. The record at 2 comes back, then 3 goes on."""
    await send(kafka_brokers, topic, [f"k{i}" for i in range(6)])
    tp = TP(topic, 1)
    monkeypatch.setattr(agents.continuity, "range_reader", reader)
    monkeypatch.setattr(app, "consumer_generation_id", 7)
    monkeypatch.setitem(app.consumer._committed_offset, tp, 2)
    continuity = Continuity()

    def message(offset: int) -> SimpleNamespace:
        return SimpleNamespace(tp=tp, topic=topic, partition=1, offset=offset)

    skipped = agents.continuity.skipped_before
    assert [(r.offset, r.key) for r in await skipped(message(3), continuity)] == [(2, b"k2")]
    assert await skipped(message(4), continuity) == []
    assert [(r.offset, r.key) for r in await skipped(message(6), continuity)] == [(5, b"k5")]
    assert await skipped(message(4), continuity) == []  # read again from earlier: no skip
