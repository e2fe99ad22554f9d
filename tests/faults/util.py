"""Helpers shared by the fault tests: PostgreSQL checks, Kafka positions, bounded waits."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from tests.saga_util import created_event, get_state
from tests.workers import WorkerProcess

T = TypeVar("T")

HAPPY = ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]


def ids(run: str, n: int, tag: str = "p", start: int = 0) -> list[str]:
    return [f"{tag}-{run}-{i:05d}" for i in range(start, start + n)]


def created_items(payment_ids: Iterable[str], amount: str = "10.00",
                  **kwargs: str) -> list[tuple[bytes, bytes]]:
    return [(pid.encode(), created_event(pid, amount, **kwargs)) for pid in payment_ids]


async def produce_positions(
    brokers: str, topic: str, items: Sequence[tuple[bytes | None, bytes]]
) -> list[RecordMetadata]:
    """Produce and return each record's (partition, offset), in the order given."""
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def produce_steady(
    brokers: str, topic: str, items: Sequence[tuple[bytes, bytes]], rate: float,
    sent_at: dict[bytes, float] | None = None,
) -> float:
    """Produce `items` at about `rate` records a second; return the seconds it took.
    `sent_at` (if given) gets the monotonic time each key was acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=1)
    await producer.start()
    t0 = time.monotonic()
    try:
        for i, (key, value) in enumerate(items):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await (await producer.send(topic, value, key=key))
            if sent_at is not None:
                sent_at[key] = time.monotonic()
    finally:
        await producer.stop()
    return time.monotonic() - t0


async def read_to_end(brokers: str, topic: str, timeout: float = 60.0
                      ) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its end offsets as of now (none when it is absent)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout}s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(r for r in tp_records if r.offset < ends[TopicPartition(
                    r.topic, r.partition)])
    finally:
        await consumer.stop()
    return records


async def wait_until(check: Callable[[], Awaitable[T | None]], timeout: float,
                     what: str, interval: float = 0.25) -> T:
    """Await `check()` until it returns something other than None/False; bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def count_in_state(url: str, payment_ids: Sequence[str], state: str) -> int:
    rows = await fetch(url, "SELECT count(*) AS n FROM payment_states WHERE "
                            "payment_id = ANY($1::varchar[]) AND current_state = $2",
                       list(payment_ids), state)
    return int(rows[0]["n"])


async def db_rows(url: str, payment_ids: Sequence[str]) -> tuple[
        dict[str, asyncpg.Record], dict[str, list[asyncpg.Record]]]:
    """payment_states rows by id, and history rows by id (ordered by version)."""
    pids = list(payment_ids)
    states = await fetch(url, "SELECT payment_id, current_state, previous_state, version, "
                              "amount, metadata FROM payment_states "
                              "WHERE payment_id = ANY($1::varchar[])", pids)
    history = await fetch(url, "SELECT payment_id, state, previous_state, version, event_id, "
                               "metadata, created_at FROM payment_state_history "
                               "WHERE payment_id = ANY($1::varchar[]) "
                               "ORDER BY payment_id, version", pids)
    hist: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in history:
        hist[row["payment_id"]].append(row)
    return {r["payment_id"]: r for r in states}, dict(hist)


def db_problems(expected: dict[str, list[str]], states: dict[str, asyncpg.Record],
                history: dict[str, list[asyncpg.Record]]) -> list[str]:
    """Why PostgreSQL does not hold exactly `expected[pid]` (states in version order) for
    every payment: a missing/old state row, a history gap, an extra or duplicate row."""
    problems: list[str] = []
    for pid, path in expected.items():
        row = states.get(pid)
        if row is None:
            problems.append(f"{pid}: no payment_states row")
            continue
        if (row["current_state"], row["version"]) != (path[-1], len(path)):
            problems.append(f"{pid}: payment_states {row['current_state']} v{row['version']},"
                            f" expected {path[-1]} v{len(path)}")
        got = history.get(pid, [])
        got_states = [h["state"] for h in got]
        versions = [h["version"] for h in got]
        if versions != list(range(1, len(path) + 1)) or got_states != path:
            problems.append(f"{pid}: history {list(zip(versions, got_states, strict=True))}"
                            f", expected {path}")
        elif any(h["event_id"] != f"{pid}:{h['version']}" for h in got):
            problems.append(f"{pid}: history event_ids {[h['event_id'] for h in got]}")
    return problems


async def wait_db_exact(url: str, expected: dict[str, list[str]], timeout: float,
                        interval: float = 0.5) -> float:
    """Wait until PostgreSQL holds exactly the expected histories; seconds it took.
    Waits while rows are missing; fails at once on a duplicate or a wrong row."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        try:
            states, history = await db_rows(url, list(expected))
        except (TimeoutError, OSError, asyncpg.PostgresError):
            await asyncio.sleep(interval)
            continue
        problems = db_problems(expected, states, history)
        if not problems:
            return time.monotonic() - t0
        over = [pid for pid, rows in history.items() if len(rows) > len(expected[pid])]
        assert not over, f"more history rows than transitions for {over[:5]}: " + "; ".join(
            db_problems({p: expected[p] for p in over[:5]}, states, history))
        await asyncio.sleep(interval)
    raise AssertionError(f"PostgreSQL not exact after {timeout:.0f}s: {len(problems)} "
                         f"payments wrong, e.g. {problems[:5]}")


async def states_via_api(worker: WorkerProcess, payment_ids: Sequence[str],
                         concurrency: int = 16) -> dict[str, tuple[int, dict[str, Any]]]:
    """GET every payment's state (a few requests at a time, in threads)."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, tuple[int, dict[str, Any]]] = {}

    async def one(pid: str) -> None:
        async with sem:
            try:
                out[pid] = await asyncio.to_thread(get_state, worker, pid)
            except OSError as exc:
                out[pid] = (0, {"error": repr(exc)})

    await asyncio.gather(*(one(pid) for pid in payment_ids))
    return out


def event_versions(records: Iterable[ConsumerRecord[bytes, bytes]]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for r in records:
        event = json.loads(r.value, parse_float=Decimal)
        seen[event["payment_id"]].add(event["version"])
    return seen


def stamp(value: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(value).timestamp()


def all_versions_seen(final_versions: dict[str, int]
                      ) -> Callable[[list[ConsumerRecord[bytes, bytes]]], bool]:
    """A `read_until` predicate: every payment's versions 1..n seen (parsed incrementally,
    duplicates allowed)."""
    seen: dict[str, set[int]] = defaultdict(set)
    missing = set(final_versions)
    parsed = 0

    def done(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        nonlocal parsed
        for r in records[parsed:]:
            event = json.loads(r.value, parse_float=Decimal)
            pid = event["payment_id"]
            seen[pid].add(event["version"])
            if pid in missing and seen[pid] >= set(range(1, final_versions[pid] + 1)):
                missing.discard(pid)
        parsed = len(records)
        return not missing

    done.seen = seen  # type: ignore[attr-defined]
    return done


async def wait_db_matches_api(url: str, bodies: dict[str, dict[str, Any]], timeout: float
                              ) -> float:
    """Wait until PostgreSQL holds, for every payment, exactly the history the state API
    showed (same states in version order, state row at the last one); seconds it took."""
    expected = {pid: [e["state"] for e in body["history"]] for pid, body in bodies.items()}
    return await wait_db_exact(url, expected, timeout)


def decoded_metadata(value: Any) -> dict[str, Any]:
    """A JSONB column as asyncpg returns it (text unless a codec is set)."""
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)
