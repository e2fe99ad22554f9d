"""The saga's effects lane (`orchestrator_app.clients.kafka_lane`) on the real broker: every
record lands once, in order, on its key's partition; the producer's flush covers it;
backpressure and refusals are explicit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, ProducerClosed

from orchestrator_app.clients.kafka_lane import KafkaLane
from orchestrator_app.partitioning import key_hash, partitioner
from tests.kafka_util import create_topic

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
async def topic(kafka_brokers: str) -> str:
    name = f"lane-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_brokers, name, PARTITIONS)
    return name


@pytest.fixture
async def producer(kafka_brokers: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_brokers, linger_ms=20,
                                max_batch_size=16 * 1024, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def read_all(brokers: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        records: list[Any] = []
        async with asyncio.timeout(30):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
        await asyncio.sleep(0.5)  # and nothing more than that
        for part in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(part)
        return records
    finally:
        await consumer.stop()


async def test_every_record_lands_once_in_order_on_its_keys_partition(
        kafka_brokers: str, topic: str, producer: AIOKafkaProducer) -> None:
    failures: list[BaseException] = []
    lane = KafkaLane(lambda: producer, key_hash, failures.append)
    acked: list[int] = []
    offsets: dict[int, int | None] = {}
    keys = [f"pay-{i % 17}".encode() for i in range(600)]
    # The first sends come before the topic's metadata is known: they wait in the backlog,
    # and every later send queues behind them (a payment's events keep their order).
    for i, key in enumerate(keys):
        def ack(offset: int | None, i: int = i) -> None:
            acked.append(i)
            offsets[i] = offset

        lane.send(topic, key, str(i).encode(), [("n", str(i).encode())], ack)
        if i == 300:
            await lane.drained()  # the rest go straight into the batches
    assert len(lane) > 0
    await lane.drained()
    await producer.flush()  # what Faust awaits before a commit: it covers the lane
    await asyncio.sleep(0)
    assert sorted(acked) == list(range(600)) and len(lane) == 0 and failures == []

    records = await read_all(kafka_brokers, topic, 600)
    assert len(records) == 600
    assert sorted(int(r.value) for r in records) == list(range(600))
    for r in records:
        assert r.partition == partitioner(r.key, list(range(PARTITIONS)), [])
        assert dict(r.headers) == {"n": r.value}
        assert offsets[int(r.value)] == r.offset  # each callback gets its own record's offset
    for key in set(keys):  # per key, in send order
        sent = [i for i, k in enumerate(keys) if k == key]
        got = [int(r.value) for r in sorted(records, key=lambda r: r.offset) if r.key == key]
        assert got == sent


async def test_room_waits_while_too_many_records_are_unacknowledged(
        topic: str, producer: AIOKafkaProducer) -> None:
    lane = KafkaLane(lambda: producer, key_hash, lambda exc: None, limit=5)
    await producer.partitions_for(topic)
    lane.send(topic, b"k", b"0")
    await lane.drained()
    await producer.flush()
    await asyncio.sleep(0)
    assert len(lane) == 0
    for i in range(5):
        lane.send(topic, b"k", str(i).encode())
    waiting = asyncio.ensure_future(lane.room())
    await asyncio.sleep(0)
    assert not waiting.done()  # five unacknowledged: the agents wait
    await producer.flush()
    async with asyncio.timeout(10):
        await waiting
    assert len(lane) == 0


async def test_a_record_that_cannot_be_sent_stops_the_worker_not_the_record(
        topic: str, producer: AIOKafkaProducer) -> None:
    failures: list[BaseException] = []
    lane = KafkaLane(lambda: producer, key_hash, failures.append)
    lane.send(topic, b"k", b"small")
    await lane.drained()  # the partitions are known now: sends append directly
    with pytest.raises(MessageSizeTooLargeError):  # refused up front, as send() does
        lane.send(topic, b"k", b"x" * (2 * 1024 * 1024))
    assert len(failures) == 1 and isinstance(failures[0], MessageSizeTooLargeError)

    await producer.stop()
    with pytest.raises(ProducerClosed):
        lane.send(topic, b"k", b"after the producer stopped")
    assert len(failures) == 2


async def test_a_record_goes_to_the_partition_it_is_given(
        kafka_brokers: str, topic: str, producer: AIOKafkaProducer) -> None:
    """Table changelogs name their partition (the table's), whatever the key hashes to."""
    failures: list[BaseException] = []
    lane = KafkaLane(lambda: producer, key_hash, failures.append)
    offsets: list[int | None] = []
    for i in range(30):
        lane.send(topic, b"same-key", str(i).encode(), None, offsets.append,
                  partition=i % PARTITIONS)
    await lane.drained()
    await producer.flush()
    await asyncio.sleep(0)
    records = await read_all(kafka_brokers, topic, 30)
    assert sorted((int(r.value) % PARTITIONS, r.partition) for r in records) == sorted(
        (i % PARTITIONS, i % PARTITIONS) for i in range(30))
    assert len(offsets) == 30 and failures == []
    with pytest.raises(ValueError, match="no partition 3"):
        lane.send(topic, b"k", b"v", None, None, partition=PARTITIONS)
