"""The ingest agent on Apache Kafka with a real worker: bad input is dead-lettered exactly once
with its reason, source position and exact raw bytes, and never stops the stream; a second
``payment.created`` for an existing payment is a conflict (dead-lettered) or, when identical,
a harmless duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata

from orchestrator_app.domain import codec
from tests.kafka_util import create_topic, produce, read_until
from tests.saga_util import await_states, get_state, metric_samples, partition_of
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

COMPLETED_PATH = ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]


# --- helpers ------------------------------------------------------------------------------


def created(pid: str, **overrides: Any) -> dict[str, Any]:
    """A valid payment.created (amounts as Decimal: codec.dumps writes exact JSON numbers)."""
    event: dict[str, Any] = {
        "payment_id": pid, "amount": Decimal("100.50"), "currency": "USD",
        "customer_id": "customer-123", "merchant_id": "merchant-456",
        "status": "NEW", "created_at": "2026-02-13T10:00:00Z",
    }
    event.update(overrides)
    return event


async def send_each(
    brokers: str, topic: str, items: list[tuple[bytes | None, bytes]],
    partitions: list[int | None] | None = None,
) -> list[RecordMetadata]:
    """Produce in order, one acknowledged send at a time; the metadata of each record.

    `partitions` pins records to partitions (None: the key, or at random without one).
    """
    chosen = partitions or [None] * len(items)
    producer = AIOKafkaProducer(bootstrap_servers=brokers)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key, partition=partition)
                for (key, value), partition in zip(items, chosen, strict=True)]
    finally:
        await producer.stop()








def dead_letter_counts(worker: WorkerProcess) -> dict[str, float]:
    samples = metric_samples(worker, "payment_dead_letters_total")
    return {dict(labels)["reason"]: value for labels, value in samples.items()}


def decode_dlq(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


async def history_rows(url: str, pid: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT * FROM payment_state_history WHERE payment_id = $1 ORDER BY version", pid)
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def state_row(url: str, pid: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT * FROM payment_states WHERE payment_id = $1", pid)
        return dict(row) if row else None
    finally:
        await conn.close()


async def wait_sunk(url: str, pid: str, versions: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await state_row(url, pid)
        if row and row["version"] == versions and len(await history_rows(url, pid)) == versions:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{pid}: sink did not write {versions} versions in {timeout}s")


def good_ids(run: str, per_partition: int, partitions: int = 4) -> list[str]:
    """Payment ids whose keys land `per_partition` times on each partition."""
    ids: list[str] = []
    counts = Counter[int]()
    n = 0
    while len(ids) < per_partition * partitions:
        pid = f"good-{run}-{n}"
        p = partition_of(pid, partitions)
        if counts[p] < per_partition:
            counts[p] += 1
            ids.append(pid)
        n += 1
    return ids


def assert_dead_letter(
    record: dict[str, Any], code: str, meta: RecordMetadata, raw: bytes, stage: str
) -> None:
    assert record["reason_code"] == code, (code, record)
    assert isinstance(record["reason"], str) and record["reason"].strip(), record
    assert record["stage"] == stage, record
    assert record["source_topic"] == meta.topic
    assert record["source_partition"] == meta.partition
    assert record["source_offset"] == meta.offset
    assert base64.b64decode(record["payload_base64"]) == raw
    try:
        text: str | None = raw.decode()
    except UnicodeDecodeError:
        text = None
    assert record["payload_text"] == text
    assert record["failed_at"]


# --- bad input ----------------------------------------------------------------------------


def bad_inputs(run: str) -> list[tuple[str, str, bytes]]:
    """(label, expected reason_code, raw bytes); every one carries a unique marker."""

    def ev(n: int, **overrides: Any) -> bytes:
        return codec.dumps(created(f"bad-{run}-{n}", **overrides))

    missing = created(f"bad-{run}-3")
    del missing["currency"]
    big = created(f"bad-{run}-14", note="x" * 3000)
    return [
        ("malformed json", "malformed_json", b'{"payment_id": "bad-' + run.encode() + b'", '),
        ("array", "not_an_object", b'["bad", "' + run.encode() + b'"]'),
        ("string", "not_an_object", b'"bad-' + run.encode() + b'"'),
        ("number", "not_an_object", b"12345.678"),
        ("null", "not_an_object", b"null"),
        ("missing currency", "missing_field", codec.dumps(missing)),
        ("amount as string", "invalid_type", ev(4, amount="100.50")),
        ("currency as number", "invalid_type", ev(5, currency=840)),
        ("zero amount", "invalid_amount", ev(6, amount=0)),
        ("negative amount", "invalid_amount", ev(7, amount=Decimal("-5.00"))),
        ("5 decimal places", "invalid_amount", ev(8, amount=Decimal("1.23456"))),
        ("16 integer digits", "invalid_amount", ev(9, amount=Decimal("1234567890123456"))),
        ("unknown currency", "invalid_currency", ev(10, currency="ZZZ")),
        ("status not NEW", "invalid_status", ev(11, status="COMPLETED")),
        ("over MAX_EVENT_BYTES", "too_large", codec.dumps(big)),
        ("invalid utf-8", "malformed_json",
         b'{"payment_id": "bad-' + run.encode() + b'-15", "customer_id": "\xff\xfe\xc3("}'),
        ("invalid utf-8, not json", "malformed_json", b"\x80\x81\xfe\xff" + run.encode()),
        # Judged on the digits as sent, never rounded in a decimal context (issue 7).
        ("32 decimal places", "invalid_amount",
         ev(16, amount=Decimal("1." + "1" * 32))),
        ("tiny exponent", "invalid_amount",
         ev(17).replace(b'"amount":100.50', b'"amount":1e-1000027')),
        ("huge exponent", "malformed_json",
         ev(18).replace(b'"amount":100.50', b'"amount":1e99999999999999999999999')),
        ("JPY with decimals", "invalid_amount", ev(19, amount=Decimal("100.5"), currency="JPY")),
        ("USD with 3 decimals", "invalid_amount", ev(20, amount=Decimal("1.005"))),
    ]


async def test_bad_inputs_are_dead_lettered_and_the_stream_moves_on(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers, MAX_EVENT_BYTES="2048")
    topic = env["TOPIC_PREFIX"] + "payment.created"
    dlq = env["TOPIC_PREFIX"] + "payment.created.dlq"
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()

    run = uuid.uuid4().hex[:10]
    bad = bad_inputs(run)
    too_large = next(raw for label, _, raw in bad if label == "over MAX_EVENT_BYTES")
    assert 2048 < len(too_large) < 4096
    # Bad ones first, spread over every partition (most keyed, a few without a key), then
    # good ones on every partition: if the agent had died on a bad one, these would stall.
    bad_items = [(None if i % 4 == 0 else f"bad-{run}-{i}".encode(), raw)
                 for i, (_, _, raw) in enumerate(bad)]
    pinned: list[int | None] = [i % 4 for i in range(len(bad))]
    good = good_ids(run, per_partition=2)
    good_items = [(pid.encode(), codec.dumps(created(pid, amount=Decimal(f"{i + 1}.25"))))
                  for i, pid in enumerate(good)]
    metas = await send_each(kafka_brokers, topic, bad_items + good_items,
                            pinned + [None] * len(good_items))
    bad_metas = metas[:len(bad)]
    assert {m.partition for m in bad_metas} == {m.partition for m in metas[len(bad):]} == \
        set(range(4)), "bad and good records on every partition"

    for pid in good:
        body = (await await_states(worker, {pid: "COMPLETED"}))[pid]
        assert [h["state"] for h in body["history"]] == COMPLETED_PATH

    records = await read_until(kafka_brokers, dlq, lambda rs: len(rs) >= len(bad), 30)
    # On every partition a good one completed after the bad ones before it; give a
    # duplicate dead letter a moment to show up, then read the whole topic again.
    await asyncio.sleep(1.0)
    records = await read_until(kafka_brokers, dlq, lambda rs: len(rs) >= len(bad), 10)
    letters = decode_dlq(records)
    by_position = defaultdict(list)
    for letter in letters:
        by_position[(letter["source_partition"], letter["source_offset"])].append(letter)
    for (label, code, raw), meta in zip(bad, bad_metas, strict=True):
        found = by_position.get((meta.partition, meta.offset), [])
        assert len(found) == 1, f"{label}: {len(found)} dead letters"
        try:
            assert_dead_letter(found[0], code, meta, raw, "ingest")
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from exc
    assert len(letters) == len(bad), "a dead letter for something that was not bad"
    # The key is kept: a keyed bad input's dead letter has the same key.
    for record in records:
        letter = json.loads(record.value)
        index = next(i for i, m in enumerate(bad_metas)
                     if (m.partition, m.offset) ==
                     (letter["source_partition"], letter["source_offset"]))
        assert record.key == bad_items[index][0]

    expected = Counter(code for _, code, _ in bad)
    assert dead_letter_counts(worker) == {k: float(v) for k, v in expected.items()}
    # The good ones reached the database too, with their exact amounts.
    for i, pid in enumerate(good):
        await wait_sunk(migrated_database_url, pid, len(COMPLETED_PATH))
        row = await state_row(migrated_database_url, pid)
        assert row is not None and row["amount"] == Decimal(f"{i + 1}.25")
    # Nothing of the bad ones reached the saga.
    for i in range(len(bad)):
        status, _ = worker.get(f"/payments/bad-{run}-{i}/state")
        assert status == 404


# --- second payment.created for an existing payment -----------------------------------------


async def test_conflicting_creates_are_dead_lettered_and_identical_ones_ignored(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    topic = env["TOPIC_PREFIX"] + "payment.created"
    dlq = env["TOPIC_PREFIX"] + "payment.created.dlq"
    changed = env["TOPIC_PREFIX"] + "payment.state.changed"
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    url = migrated_database_url
    run = uuid.uuid4().hex[:10]
    a, b = f"dup-a-{run}", f"dup-b-{run}"

    def variants(pid: str) -> list[tuple[str, bytes]]:
        return [
            ("amount", codec.dumps(created(pid, amount=Decimal("100.51")))),
            ("customer_id", codec.dumps(created(pid, customer_id="customer-999"))),
            ("merchant_id", codec.dumps(created(pid, merchant_id="merchant-999"))),
            ("currency", codec.dumps(created(pid, currency="EUR"))),
        ]

    # A: created, completed, sunk; then the conflicting and the identical ones arrive.
    original_a = codec.dumps(created(a))
    await send_each(kafka_brokers, topic, [(a.encode(), original_a)])
    (await await_states(worker, {a: "COMPLETED"}))[a]
    await wait_sunk(url, a, 5)
    api_before = worker.get(f"/payments/{a}/state")
    states_before = await state_row(url, a)
    history_before = await history_rows(url, a)

    # B: the conflicting and identical ones right behind the original (same key, same
    # partition: they reach the saga while B is still in flight).
    original_b = codec.dumps(created(b, amount=Decimal("7.01")))
    conflicts_b = [("amount", codec.dumps(created(b, amount=Decimal("7.02"))))]
    items: list[tuple[bytes | None, bytes]] = [(b.encode(), original_b), (b.encode(), original_b)]
    items += [(b.encode(), raw) for _, raw in conflicts_b]
    # For A: the identical duplicate first, then the conflicts: when the last conflict's
    # dead letter is out, the duplicate was handled too (same partition, in order).
    items += [(a.encode(), original_a)]
    items += [(a.encode(), raw) for _, raw in variants(a)]
    metas = await send_each(kafka_brokers, topic, items)
    meta_b_conflict = metas[2]
    metas_a_conflicts = metas[4:]

    expected_letters = 1 + len(metas_a_conflicts)
    records = await read_until(kafka_brokers, dlq, lambda rs: len(rs) >= expected_letters, 20)
    (await await_states(worker, {b: "COMPLETED"}))[b]
    await asyncio.sleep(1.0)
    records = await read_until(kafka_brokers, dlq, lambda rs: len(rs) >= expected_letters, 10)
    letters = decode_dlq(records)
    assert len(letters) == expected_letters, letters
    by_position = {(x["source_partition"], x["source_offset"]): x for x in letters}
    for (field, raw), meta in zip(variants(a), metas_a_conflicts, strict=True):
        letter = by_position[(meta.partition, meta.offset)]
        assert_dead_letter(letter, "conflict", meta, raw, "saga")
        assert field in letter["reason"]
    letter_b = by_position[(meta_b_conflict.partition, meta_b_conflict.offset)]
    assert_dead_letter(letter_b, "conflict", meta_b_conflict, conflicts_b[0][1], "saga")
    assert {r.key for r in records} == {a.encode(), b.encode()}

    # A is untouched: the same API answer, the same rows.
    assert worker.get(f"/payments/{a}/state") == api_before

    # Every state change of A and B: distinct versions 1..5, original terms; re-emitted
    # events (the identical duplicates) are exact copies of the first ones.
    def complete(rs: list[ConsumerRecord[bytes, bytes]]) -> bool:
        seen: dict[str, set[int]] = defaultdict(set)
        for r in rs:
            e = codec.loads(r.value)
            seen[e["payment_id"]].add(e["version"])
        return seen[a] == seen[b] == set(range(1, 6))

    changes = await read_until(kafka_brokers, changed, complete, 30)
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in changes:
        e = codec.loads(r.value)
        events[e["payment_id"]].append(e)
    for pid, amount in ((a, Decimal("100.50")), (b, Decimal("7.01"))):
        versions = sorted({e["version"] for e in events[pid]})
        assert versions == [1, 2, 3, 4, 5], (pid, versions)
        first: dict[int, dict[str, Any]] = {}
        for e in events[pid]:
            assert (e["amount"], e["currency"], e["customer_id"], e["merchant_id"]) == \
                (amount, "USD", "customer-123", "merchant-456"), e
            assert e["event_id"] == f"{pid}:{e['version']}"
            assert first.setdefault(e["version"], e) == e, "same version, different event"
        assert [first[v]["current_state"] for v in versions] == COMPLETED_PATH

    # The sink has consumed every state change (re-emitted ones included) ...
    total = len(changes)
    deadline = time.monotonic() + 20
    while metric_samples(worker, "payment_sink_rows_written_total").get((), 0) < total:
        assert time.monotonic() < deadline, "sink did not consume every state change"
        await asyncio.sleep(0.2)
    # ... and wrote exactly 5 history rows per payment; A's rows did not change.
    await wait_sunk(url, b, 5)
    assert await state_row(url, a) == states_before
    assert await history_rows(url, a) == history_before
    for pid, amount in ((a, Decimal("100.50")), (b, Decimal("7.01"))):
        history = await history_rows(url, pid)
        assert [h["version"] for h in history] == [1, 2, 3, 4, 5]
        assert [h["state"] for h in history] == COMPLETED_PATH
        row = await state_row(url, pid)
        assert row is not None
        assert (row["amount"], row["currency"], row["customer_id"], row["merchant_id"],
                row["current_state"], row["version"]) == \
            (amount, "USD", "customer-123", "merchant-456", "COMPLETED", 5)
        status, body = get_state(worker, pid)
        assert status == 200
        assert [h["state"] for h in body["history"]] == COMPLETED_PATH

    assert dead_letter_counts(worker) == {"conflict": float(expected_letters)}
    duplicates = metric_samples(worker, "payment_duplicate_commands_total").get((), 0)
    assert duplicates >= 2  # A's and B's identical copies


async def test_payment_created_with_other_partitions_takes_the_rekeying_hop(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    """payment.created with 8 partitions (commands has 4): the saga may not apply an event
    where it arrives, so the worker turns on the ingest agent (re-keying through commands),
    and every payment still completes — on the replica that owns its commands partition."""
    env = worker_env(kafka_brokers, INGEST_DIRECT="true")
    await create_topic(kafka_brokers, env["TOPIC_PREFIX"] + "payment.created", 8)
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    (note,) = [json.loads(line) for line in worker.log_path.read_text().splitlines()
               if "re-keyed through the commands topic" in line]  # a JSON line like the rest
    assert (note["level"], note["logger"]) == ("WARNING", "orchestrator_app.cli")
    run = uuid.uuid4().hex[:8]
    pids = [f"rekey-{run}-{i}" for i in range(16)]
    await produce(kafka_brokers, env["TOPIC_PREFIX"] + "payment.created",
                  [(p.encode(), codec.dumps(created(p))) for p in pids])
    bodies = await await_states(worker, dict.fromkeys(pids, "COMPLETED"))
    assert all([h["state"] for h in b["history"]] == COMPLETED_PATH for b in bodies.values())
