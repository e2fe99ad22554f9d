"""The platform ceiling: what the broker and a plain aiokafka client do with no Faust at all.

Produces R records (N payments x the records one payment costs the orchestrator) to a fresh
4-partition topic with raw aiokafka (the worker's producer settings: linger 5 ms, 256 KiB
batches, acks=all), then consumes them all from the beginning, and reports records/s for
each half and for the whole, and the same as "payments/s equivalent" (payments whose
records would pass through the broker in that time). A benchmark: prints, asserts nothing.

    .venv/bin/python benchmarks/ceiling.py --payments 20000 --records-per-payment 21

bench.py runs it after the designs with the records/payment it measured. Uses
KAFKA_BROKERS when set, else starts a broker with orchestrator_app.dev.stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from orchestrator_app.dev.stack import Stack  # noqa: E402

__all__ = ["run_ceiling"]


async def _create_topic(brokers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
        deadline = time.monotonic() + 30
        while topic not in set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not visible")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _delete_topic(brokers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    with contextlib.suppress(Exception):  # best effort (Tansu may not delete)
        await admin.start()
        await admin.delete_topics([topic])
    with contextlib.suppress(Exception):
        await admin.close()


async def run_ceiling(brokers: str, records: int, value_bytes: int = 400,
                      partitions: int = 4, records_per_payment: float | None = None,
                      keep_topic: bool = False) -> dict[str, Any]:
    """Produce then consume `records` records; return the figures (nothing printed)."""
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    await _create_topic(brokers, topic, partitions)
    head, tail = b'{"payment_id":"ceiling","pad":"', b'"}'
    value = head + b"x" * max(0, value_bytes - len(head) - len(tail)) + tail
    keys = [f"c{i:08d}".encode() for i in range(records)]
    try:
        producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5,
                                    max_batch_size=256 * 1024, acks="all")
        await producer.start()
        try:
            t0 = time.monotonic()
            futures = [await producer.send(topic, value, key=k) for k in keys]
            await asyncio.gather(*futures)
            produce_s = time.monotonic() - t0
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None,
                                    enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                                    fetch_max_bytes=16 << 20)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            t1 = time.monotonic()
            deadline = t1 + 600
            while seen < records and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                seen += sum(len(v) for v in batch.values())
            consume_s = time.monotonic() - t1
        finally:
            await consumer.stop()
    finally:
        if not keep_topic:
            await _delete_topic(brokers, topic)
    total_s = produce_s + consume_s
    out: dict[str, Any] = {
        "records": records, "value_bytes": len(value), "partitions": partitions,
        "consumed": seen, "produce_s": round(produce_s, 3), "consume_s": round(consume_s, 3),
        "produce_records_per_s": round(records / produce_s),
        "consume_records_per_s": round(seen / consume_s) if consume_s else None,
        "records_per_s": round(records / total_s),
    }
    if records_per_payment:
        out["records_per_payment"] = records_per_payment
        out["payments_per_s_equivalent"] = round(records / total_s / records_per_payment)
        out["produce_only_payments_per_s_equivalent"] = round(
            records / produce_s / records_per_payment)
    return out


def describe(result: dict[str, Any]) -> str:
    line = (f"ceiling: {result['records']} records of {result['value_bytes']} B, "
            f"produce {result['produce_records_per_s']:,}/s ({result['produce_s']}s), "
            f"consume {result['consume_records_per_s']:,}/s ({result['consume_s']}s), "
            f"both {result['records_per_s']:,} records/s")
    if "payments_per_s_equivalent" in result:
        line += (f" = {result['payments_per_s_equivalent']:,} payments/s equivalent "
                 f"at {result['records_per_payment']} records/payment")
    return line


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop what we started


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=20000)
    parser.add_argument("--records-per-payment", type=float, default=21.0,
                        help="records one payment produces (bench.py measures it)")
    parser.add_argument("--value-bytes", type=int, default=400)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    args = parser.parse_args()
    records = round(args.payments * args.records_per_payment)
    with Stack() as stack:
        brokers = stack.broker(args.broker)
        result = asyncio.run(run_ceiling(brokers, records, args.value_bytes, args.partitions,
                                         args.records_per_payment))
    print(describe(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
