"""Kafka's default partitioner, with the key hash remembered.

aiokafka's partitioner is murmur2 in pure Python, run on every send without an explicit
partition: a payment's 5 state changes, its notifications and its commands hash the same
key again and again (~2 % of a busy worker, py-spy). Same result as aiokafka's
``DefaultPartitioner`` for any partition count; only the hash is cached.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from aiokafka.partitioner import murmur2

__all__ = ["key_hash", "partitioner"]


@lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """The positive murmur2 hash Kafka's default partitioner uses."""
    return int(murmur2(key)) & 0x7FFFFFFF


def partitioner(key: bytes | None, all_partitions: Sequence[int],
                available: Sequence[int]) -> int:
    """`aiokafka.partitioner.DefaultPartitioner`, with `key_hash` cached."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_hash(key) % len(all_partitions)]
