"""Read a range of offsets of one topic partition: the records an agent was not handed.

Its own consumer (no group, manual assignment, no commits), created on first use: most
workers never need it. One read at a time; the agents that use it read in order anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

__all__ = ["RangeReader"]


class RangeReader(faust.Service):
    def __init__(self, brokers: Sequence[str], client_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._brokers = list(brokers)
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._brokers, client_id=self._client_id,
                group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, topic: str, partition: int, start: int, end: int,
                   timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic[partition]`` with ``start <= offset < end``, in order
        (none where the log has no record: a transaction marker, a compacted key). Raises
        `TimeoutError` if the broker has not returned them in `timeout` seconds."""
        tp = TopicPartition(topic, partition)
        async with self._lock:
            try:
                consumer = await self._open()
                consumer.assign([tp])
                consumer.seek(tp, start)
                records: list[ConsumerRecord[bytes, bytes]] = []
                deadline = time.monotonic() + timeout
                while await consumer.position(tp) < end:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{topic}[{partition}] {start}..{end} not read "
                                           f"in {timeout:.0f}s")
                    batch = await consumer.getmany(tp, timeout_ms=200)
                    records.extend(r for r in batch.get(tp, ()) if start <= r.offset < end)
                return records
            except (KafkaError, OSError):
                await self._reset()  # a broken connection: a fresh consumer next time
                raise

    async def _reset(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), 5.0)

    async def on_stop(self) -> None:
        await self._reset()
