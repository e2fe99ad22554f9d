"""Real round-trips through every server the dev stack starts (no mocks)."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import nats
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orchestrator_app.dev.stack import Stack, kafka_broker_ids

# Also loaded by tests/conftest.py; listing it here keeps this file runnable on its own
# (pytest skips a plugin that is already registered).
pytest_plugins = ["tests.stack_plugin"]


async def _produce_consume(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"k", partition=0)
    finally:
        await producer.stop()
    # No consumer group: assign + seek avoids group joins (slow on Tansu, see DESIGN §7).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"k", b"hello", meta.offset)


async def test_kafka_produce_consume(kafka_brokers: str, topic_prefix: str) -> None:
    await _produce_consume(kafka_brokers, f"{topic_prefix}devstack.kafka")


async def test_tansu_produce_consume(tansu_brokers: str, topic_prefix: str) -> None:
    await _produce_consume(tansu_brokers, f"{topic_prefix}devstack.tansu")


def test_one_broker_gets_replication_factor_one(stack: Stack, kafka_brokers: str,
                                                tansu_brokers: str) -> None:
    """The worker defaults (3 replicas, 2 in sync) are for a cluster; the dev stack's one
    broker (either kind, or a KAFKA_BROKERS answering with one broker) gets 1 and 1."""
    given = bool(os.environ.get("KAFKA_BROKERS"))  # may be a cluster: only Tansu is ours
    for brokers in (tansu_brokers,) if given else (kafka_brokers, tansu_brokers):
        host, port = brokers.split(",")[0].rsplit(":", 1)
        assert kafka_broker_ids(host, int(port)) == {1} or \
            len(kafka_broker_ids(host, int(port)) or ()) == 1
    env = stack.env()
    assert env["KAFKA_BROKERS"] in (kafka_brokers, tansu_brokers)
    if not given and not os.environ.get("TOPIC_REPLICATION_FACTOR"):
        assert env["TOPIC_REPLICATION_FACTOR"] == env["TOPIC_MIN_INSYNC_REPLICAS"] == "1"


async def test_postgres_select(test_database_url: str) -> None:
    conn = await asyncpg.connect(test_database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert (await conn.fetchval("SELECT current_database()")).startswith("test_")
    finally:
        await conn.close()


async def test_redis_ping_set_get(redis_url: str, topic_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping()
        await client.set(f"{topic_prefix}k", b"v", ex=60)
        assert await client.get(f"{topic_prefix}k") == b"v"
    finally:
        await client.aclose()


async def test_nats_request_reply(nats_url: str, topic_prefix: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        async def responder(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(b"pong:" + msg.data)

        await nc.subscribe(f"{topic_prefix}ping", cb=responder)
        reply = await nc.request(f"{topic_prefix}ping", b"1", timeout=5)
        assert reply.data == b"pong:1"
    finally:
        await nc.close()
