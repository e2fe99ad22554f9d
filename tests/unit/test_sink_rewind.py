"""The sink never skips a batch it fetched: whatever fails while writing it, the batch's
partitions are rewound to its first offsets, so the next commit cannot pass it.

(An asyncpg ``InternalClientError`` from a server shutting down mid-statement escaped the
sink's retry once and lost the rows of that batch; the fault suite caught it.)
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from agents.postgres_sink import PostgresSink
from orchestrator_app.domain import codec


def record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    value = codec.dumps({
        "payment_id": f"p{offset}", "previous_state": None, "current_state": "NEW",
        "amount": 1, "currency": "USD", "customer_id": "c", "merchant_id": "m",
        "changed_at": "2026-12-01T10:00:00.000Z", "metadata": {}, "version": 1,
        "event_id": f"p{offset}:1",
    })
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", value, None, 0, len(value), ())


class Consumer:
    """Only what `_once` touches: a fetched batch, the assignment, seeks and commits."""

    def __init__(self) -> None:
        self.tps = {TopicPartition("t", 0), TopicPartition("t", 1)}
        self.seeks: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[Any]]:
        return {TopicPartition("t", 0): [record(0, 10), record(0, 11)],
                TopicPartition("t", 1): [record(1, 7)]}

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class Store:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    async def write_batch(self, rows: Any) -> None:
        if self.error is not None:
            raise self.error

    async def reset(self) -> None:
        pass


async def test_an_unexpected_error_rewinds_the_batch_and_commits_nothing() -> None:
    sink = PostgresSink(Store(RuntimeError("cannot switch to state 15")))  # type: ignore[arg-type]
    consumer = Consumer()
    with pytest.raises(RuntimeError):
        await sink._once(consumer)  # type: ignore[arg-type]
    assert consumer.seeks == {TopicPartition("t", 0): 10, TopicPartition("t", 1): 7}
    assert consumer.commits == []


async def test_a_written_batch_is_committed_past_its_last_record() -> None:
    sink = PostgresSink(Store(None))  # type: ignore[arg-type]
    consumer = Consumer()
    await sink._once(consumer)  # type: ignore[arg-type]
    assert consumer.seeks == {}
    assert consumer.commits == [{TopicPartition("t", 0): 12, TopicPartition("t", 1): 8}]
