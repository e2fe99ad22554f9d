"""Tables keyed by payment_id, co-partitioned with the commands topic."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.streams import _current_event

from orchestrator_app.app import app, settings
from orchestrator_app.partitioning import key_hash
from orchestrator_app.topics import commands

__all__ = [
    "local_partition",
    "owned_partitions",
    "partition_of",
    "payment_keyed_table",
    "recovering",
    "writing_partition",
]


def recovering() -> bool:
    """Partitions moving or tables still recovering: what this worker owns, and what its
    table holds, is not settled yet."""
    return bool(app.rebalancing) or not app.tables.recovery.completed.is_set()


def partition_of(payment_id: str) -> int:
    """Kafka's default partitioner on the raw key: the partition of a payment's commands,
    table rows and events (every topic has ``TOPIC_PARTITIONS`` partitions)."""
    return key_hash(payment_id.encode()) % settings.topic_partitions


_open_database = RocksDBOptions.open


def _open_without_wal(options: RocksDBOptions, path: Any, *, read_only: bool = False) -> Any:
    """Faust's RocksDB open, with the write-ahead log off (``ROCKSDB_WAL=false``).

    Why it is safe: a table partition is recovered from its changelog topic starting after
    the offset persisted in the same database (Faust writes it after each row it covers).
    Without the log, a killed worker loses the newest rows *and* the offset that covers them
    together (a memtable is flushed whole), so the next start reads them back from the
    changelog. Kafka Streams runs its RocksDB stores the same way. What it saves: strace at
    peak counted a ``write()`` to the log for every row and every persisted offset, more than
    a third of a worker's system calls.
    """
    db = _open_database(options, path, read_only=read_only)
    if isinstance(db, rocksdict.Rdict) and not settings.rocksdb_wal:
        write_options = rocksdict.WriteOptions()
        write_options.disable_wal = True
        db.set_write_options(write_options)
    return db


RocksDBOptions.open = _open_without_wal  # type: ignore[method-assign]


def payment_keyed_table(name: str, value_type: type, help: str) -> Any:
    """A changelog-backed table whose keys are the raw payment id.

    Faust derives the "json" key serializer from ``key_type=str``, and table routing hashes
    the *serialized* key: a JSON-quoted key ('"p-1"') hashes to another partition than the
    command key ('p-1'), so a replica would forward a request to one that does not own the
    payment. Both the table (store, changelog writes) and its changelog topic object (which
    the router hashes with) must say "raw".
    """
    table = app.Table(
        name, key_type=str, value_type=value_type, partitions=settings.topic_partitions,
        help=help, extra_topic_configs=settings.topic_config,
        # RocksDB: a bounded block cache per partition database (Faust's is 2 GiB each).
        options={"block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024},
        standby_buffer_size=settings.table_standby_buffer_size,
    )
    table.key_serializer = "raw"
    table.changelog_topic = table.changelog_topic.derive(key_serializer="raw")
    return table


#: (app.rebalancing_count, the commands partitions owned then): Faust's assigned_actives()
#: builds a new set of every assigned partition per call, and the saga asks once per NATS
#: outcome. The assignment changes only inside a rebalance (aiokafka revokes everything,
#: which sets ``app.rebalancing`` and bumps the count, before a new assignment arrives), so
#: a set computed outside one holds until the count moves.
_owned_cache: tuple[int, frozenset[int]] = (-1, frozenset())


def owned_partitions() -> frozenset[int]:
    """Partitions of the commands topic (co-partitioned with the tables) this worker owns as
    active — never a standby's."""
    global _owned_cache
    count = app.rebalancing_count
    if _owned_cache[0] == count and not app.rebalancing:
        return _owned_cache[1]
    topic = commands.get_topic_name()
    owned = frozenset(tp.partition for tp in app.assignor.assigned_actives()
                      if tp.topic == topic)
    if not app.rebalancing:
        _owned_cache = (count, owned)
    return owned


def local_partition(payment_id: str) -> int | None:
    """The payment's partition if this worker may write its rows right now, else None.

    "Right now" means: no rebalance under way (Faust sets ``rebalancing`` at the very start
    of a revocation, before it flushes and commits), the tables recovered, and the
    partition an active one of this worker — never a standby.
    """
    if recovering():
        return None
    partition = partition_of(payment_id)
    return partition if partition in owned_partitions() else None


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


@dataclass(frozen=True)
class _Event:
    message: _Message


_current: ContextVar[Any] = _current_event


@contextmanager
def writing_partition(partition: int) -> Iterator[None]:
    """Let table writes outside stream iteration land in `partition`.

    A Faust table (and its RocksDB store) takes the partition of a write — which changelog
    partition, which partition database — from the event being processed. Outside an
    agent's stream (a NATS call's outcome) this stands in for that event: the commands
    topic's partition of the payment, the same one its commands arrive on. Only call it
    for a partition `local_partition` returned, synchronously, without awaiting inside.
    """
    event = _Event(_Message(commands.get_topic_name(), partition))
    token = _current.set(weakref.ref(event))
    try:
        yield
    finally:
        _current.reset(token)
