"""A record the broker refuses stops the worker before its input's offset is committed.

Real Apache Kafka: the dead-letter topic is created with a small ``max.message.bytes``, so
the dead letter of one oversized (and invalid) payment.created is refused by the broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from orchestrator_app.domain import codec
from orchestrator_app.supervision import EXIT_PRODUCE_FAILED
from tests.kafka_util import create_topic, produce
from tests.saga_util import created_event, get_state, partition_of
from tests.workers import WorkerProcess

pytestmark = pytest.mark.integration


async def committed(brokers: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def worker_refused_on(brokers: str, env: dict[str, str], topic: str, max_bytes: int,
                            spawn_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A healthy worker whose `topic` (created first) takes no record batch over
    `max_bytes`."""
    await create_topic(brokers, env["TOPIC_PREFIX"] + topic, 4,
                       {"max.message.bytes": str(max_bytes)})
    worker = spawn_worker(env)
    worker.wait_healthy()
    return worker


async def test_a_refused_produce_exits_the_worker_before_committing(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    env = worker_env(kafka_brokers)
    prefix = env["TOPIC_PREFIX"]
    worker = await worker_refused_on(kafka_brokers, env, "payment.created.dlq", 4000,
                                     spawn_worker)

    run = uuid.uuid4().hex[:8]
    small = f"small-{run}"
    await produce(kafka_brokers, prefix + "payment.created",
                  [(small.encode(), created_event(small, "1.00"))])
    deadline = time.monotonic() + 30
    while get_state(worker, small)[0] != 200:
        assert time.monotonic() < deadline, worker.log_tail()
        await asyncio.sleep(0.2)

    big = f"big-{run}"
    event = codec.loads(created_event(big, "2.00", currency="ZZZ"))  # invalid: dead-lettered
    event["note"] = "x" * 6000  # the dead letter carries the raw event (twice): > 4000 bytes
    await produce(kafka_brokers, prefix + "payment.created",
                  [(big.encode(), codec.dumps(event))])
    assert worker.proc is not None
    status = await asyncio.to_thread(worker.proc.wait, 60)
    assert status == EXIT_PRODUCE_FAILED, worker.log_tail()
    assert "could not be produced" in worker.log_path.read_text(errors="replace")

    # The oversized event's offset was never committed: a restarted worker sees it again.
    tp = TopicPartition(prefix + "payment.created", partition_of(big))
    big_offset = 1 if partition_of(big) == partition_of(small) else 0
    offset = await committed(kafka_brokers, env["APP_ID"], tp)
    assert (offset or 0) <= big_offset, (offset, big_offset)


async def test_a_refused_state_change_exits_the_worker_before_committing(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    """The same for the saga's effects, which skip Faust's send path (`KafkaLane`): here
    the broker refuses every state change (any record batch is over 100 bytes)."""
    env = worker_env(kafka_brokers)
    prefix = env["TOPIC_PREFIX"]
    worker = await worker_refused_on(kafka_brokers, env, "payment.state.changed", 100,
                                     spawn_worker)

    payment = f"refused-{uuid.uuid4().hex[:8]}"
    await produce(kafka_brokers, prefix + "payment.created",
                  [(payment.encode(), created_event(payment, "2.00"))])
    assert worker.proc is not None
    status = await asyncio.to_thread(worker.proc.wait, 60)
    assert status == EXIT_PRODUCE_FAILED, worker.log_tail()
    assert "could not be produced" in worker.log_path.read_text(errors="replace")

    # Its input's offset was never committed: a restarted worker applies it again.
    tp = TopicPartition(prefix + "payment.created", partition_of(payment))
    assert (await committed(kafka_brokers, env["APP_ID"], tp) or 0) == 0
