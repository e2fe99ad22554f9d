"""The payment saga end to end on Apache Kafka, NATS and PostgreSQL, with real processes."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.kafka_util import produce, read_to_end, read_until
from tests.saga_util import (
    created_event,
    get_state,
    metric,
    metric_samples,
    partition_of,
    states,
    wait_for_states,
)
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

PATHS: dict[str, tuple[list[str], str, str]] = {
    # kind: (history states, customer prefix, merchant prefix) — simulator rules
    "completed": (["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"], "cust", "m"),
    "rejected": (["NEW", "FRAUD_CHECK", "REJECTED"], "fraud-cust", "m"),
    "review": (["NEW", "FRAUD_CHECK", "MANUAL_REVIEW"], "noreply-cust", "m"),
    # A permanent processor error: compensated at once (customer and operations notified).
    "failed": (["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED", "COMPENSATED"],
               "cust", "fail-m"),
}
METADATA_KEYS = {
    "FRAUD_CHECK": {"fraud_requested_at"},
    "APPROVED": {"fraud_score", "fraud_reason"},
    "REJECTED": {"fraud_score", "rejection_reason"},
    "MANUAL_REVIEW": {"review_reason"},
    "PROCESSING": {"attempt"},
    "COMPLETED": {"completion_timestamp", "confirmation_id"},
    "FAILED": {"error_code", "error_message", "retry_count"},
    "COMPENSATED": {"compensation_reason", "error_code"},
}


def _amount(rng: random.Random, currency: str) -> Decimal:
    """Exact amounts under the simulator's 10,000 automatic-approval limit, with no more
    decimals than the currency has (ISO 4217: JPY none, USD and EUR 2)."""
    places = 0 if currency == "JPY" else rng.choice([0, 1, 2])
    return Decimal(rng.randint(1, 9_999 * 10**places)) / (Decimal(10) ** places)


async def test_two_hundred_payments_every_path(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    rng = random.Random(20261127)
    # 20 silent fraud checks time out together: with the default threshold (5 consecutive
    # failures) the breaker could open and send healthy payments to review. The breaker has
    # its own tests; here every path must be taken on purpose.
    env = worker_env(kafka_brokers, FRAUD_CHECK_TIMEOUT_SECONDS="1",
                     BREAKER_FAILURE_THRESHOLD="1000")
    prefix = env["TOPIC_PREFIX"]
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()

    run = uuid.uuid4().hex[:6]
    payments: dict[str, dict[str, Any]] = {}
    kinds = ["completed"] * 140 + ["rejected"] * 20 + ["review"] * 20 + ["failed"] * 20
    rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        _, customer, merchant = PATHS[kind]
        pid = f"e2e-{run}-{i:03d}"
        currency = rng.choice(["USD", "EUR", "JPY"])
        payments[pid] = {
            "kind": kind, "amount": _amount(rng, currency), "currency": currency,
            "customer_id": f"{customer}-{i % 17}", "merchant_id": f"{merchant}-{i % 5}",
        }
    started = time.monotonic()
    await produce(kafka_brokers, f"{prefix}payment.created", [
        (pid.encode(), created_event(pid, p["amount"], p["customer_id"], p["merchant_id"],
                                     p["currency"]))
        for pid, p in payments.items()
    ])

    expected = {pid: PATHS[p["kind"]][0][-1] for pid, p in payments.items()}
    bodies = await asyncio.to_thread(wait_for_states, worker, expected, 120.0)
    elapsed = time.monotonic() - started
    print(f"\n200 payments reached their final states in {elapsed:.1f}s")

    # 1. The API: spec shape, history in order, documented metadata.
    for pid, body in bodies.items():
        path = PATHS[payments[pid]["kind"]][0]
        assert set(body) == {"payment_id", "current_state", "previous_state", "updated_at",
                             "metadata", "history"}
        assert body["payment_id"] == pid
        assert states(body["history"]) == path
        assert body["previous_state"] == path[-2]
        # metadata: every state's keys (later ones win); each history item its own state's
        for entry in body["history"]:
            assert METADATA_KEYS.get(entry["state"], set()) <= set(entry["metadata"])
            assert METADATA_KEYS.get(entry["state"], set()) <= set(body["metadata"])
        folded: dict[str, Any] = {}
        for entry in body["history"]:
            folded.update(entry["metadata"])
        assert body["metadata"] == folded
        stamps = [entry["timestamp"] for entry in body["history"]]
        assert stamps == sorted(stamps)

    # 2. payment.state.changed: versions 1..n in order per payment, exact fields.
    final_versions = {pid: len(PATHS[p["kind"]][0]) for pid, p in payments.items()}

    def complete(records: list[Any]) -> bool:
        seen = defaultdict(set)
        for r in records:
            event = json.loads(r.value, parse_float=Decimal)
            seen[event["payment_id"]].add(event["version"])
        return all(len(seen[pid]) == n for pid, n in final_versions.items())

    records = await read_until(kafka_brokers, f"{prefix}payment.state.changed", complete, 60)
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        event = json.loads(record.value, parse_float=Decimal)
        assert record.key.decode() == event["payment_id"]
        events[event["payment_id"]].append(event)
    for pid, p in payments.items():
        path = PATHS[p["kind"]][0]
        got = events[pid]
        first_seen: list[int] = []
        for e in got:
            if e["version"] not in first_seen:
                first_seen.append(e["version"])
        assert first_seen == list(range(1, len(path) + 1)), (pid, first_seen)
        by_version = {e["version"]: e for e in got}
        for version, state in enumerate(path, start=1):
            e = by_version[version]
            assert e["event_id"] == f"{pid}:{version}"
            assert e["current_state"] == state
            assert e["previous_state"] == (path[version - 2] if version > 1 else None)
            assert not isinstance(e["amount"], float)  # exact JSON number, parsed exactly
            assert Decimal(e["amount"]) == p["amount"]
            assert (e["currency"], e["customer_id"], e["merchant_id"]) == (
                p["currency"], p["customer_id"], p["merchant_id"])
            assert METADATA_KEYS.get(state, set()) <= set(e["metadata"])

    # One worker, no rebalance: every NATS outcome was applied in place by its owner (no
    # result command through Kafka) — one per fraud check, at least one per processed one.
    delivered = "payment_nats_outcomes_delivered_total"
    assert metric(worker, delivered, path="kafka") == 0
    assert metric(worker, delivered, path="local") >= len(payments) + kinds.count("completed")
    # Rows written outside stream iteration (in-place outcomes, write-behind) land on their
    # payment's own changelog partition, the one a successor recovers them from.
    changelog = await read_to_end(kafka_brokers, f"{env['APP_ID']}-payments-changelog")
    mine = [r for r in changelog if r.key.decode() in payments]
    assert {r.key.decode() for r in mine} == set(payments)
    assert all(r.partition == partition_of(r.key.decode()) for r in mine)

    # Consumer lag (kafka_consumer_lag{topic,partition}) is published for every partition
    # and drains to 0 once the offsets of the processed records are committed.
    lag_topic = f"{prefix}payment.created"
    deadline = time.monotonic() + 30
    while True:
        samples = metric_samples(worker, "kafka_consumer_lag")
        lags = {dict(labels)["partition"]: value for labels, value in samples.items()
                if dict(labels)["topic"] == lag_topic}
        if (len(lags) == 4 and set(lags.values()) == {0.0}) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(lags) == 4 and set(lags.values()) == {0.0}, samples

    # 3. PostgreSQL: latest state, exact amount, one history row per transition.
    ids = list(payments)
    deadline = time.monotonic() + 60
    conn = await asyncpg.connect(migrated_database_url)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT payment_id, current_state, previous_state, amount, currency,"
                " customer_id, merchant_id, version, metadata::text AS metadata"
                " FROM payment_states"
                " WHERE payment_id = ANY($1::varchar[])", ids)
            if (len(rows) == len(ids) and all(
                    r["version"] == final_versions[r["payment_id"]] for r in rows)) \
                    or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        history = await conn.fetch(
            "SELECT payment_id, state, version, event_id, metadata::text AS metadata"
            " FROM payment_state_history"
            " WHERE payment_id = ANY($1::varchar[]) ORDER BY payment_id, version", ids)
    finally:
        await conn.close()
    assert len(rows) == len(ids)
    by_id = {r["payment_id"]: r for r in rows}
    hist: dict[str, list[Any]] = defaultdict(list)
    for h in history:
        hist[h["payment_id"]].append(h)
    for pid, p in payments.items():
        path = PATHS[p["kind"]][0]
        row = by_id[pid]
        assert row["current_state"] == path[-1]
        assert row["previous_state"] == path[-2]
        assert row["version"] == len(path)
        assert row["amount"] == p["amount"]
        assert [h["state"] for h in hist[pid]] == path
        assert [h["version"] for h in hist[pid]] == list(range(1, len(path) + 1))
        # history rows: their state's metadata; the state row: every state's, as the API
        assert [json.loads(h["metadata"], parse_float=Decimal) for h in hist[pid]] == [
            e["metadata"] for e in bodies[pid]["history"]]
        assert json.loads(row["metadata"], parse_float=Decimal) == bodies[pid]["metadata"]


async def test_slow_fraud_reply_does_not_delay_its_partition(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    spawn_simulator("--hold-seconds", "3")
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:6]
    slow_id = f"slow-{run}"
    fast_id = next(
        f"fast-{run}-{i}" for i in range(1000)
        if partition_of(f"fast-{run}-{i}") == partition_of(slow_id)
    )
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    # Warm-up payment: the first one pays for connection set-up.
    warm = f"warm-{run}"
    await produce(kafka_brokers, topic, [(warm.encode(), created_event(warm, "1"))])
    await asyncio.to_thread(wait_for_states, worker, {warm: "COMPLETED"}, 30.0)

    await produce(kafka_brokers, topic, [
        (slow_id.encode(), created_event(slow_id, "10.00", customer_id="slow-customer"))])
    await asyncio.sleep(0.3)  # the slow check is in flight, on the same partition
    await produce(kafka_brokers, topic, [(fast_id.encode(), created_event(fast_id, "20.00"))])
    fast = (await asyncio.to_thread(wait_for_states, worker, {fast_id: "COMPLETED"}, 10.0))[
        fast_id]
    status, slow = get_state(worker, slow_id)
    assert status == 200 and slow["current_state"] == "FRAUD_CHECK", slow

    def stamp(body: dict[str, Any], state: str) -> float:
        from datetime import datetime
        value = next(e["timestamp"] for e in body["history"] if e["state"] == state)
        return datetime.fromisoformat(value).timestamp()

    latency = stamp(fast, "COMPLETED") - stamp(fast, "NEW")
    print(f"\nfast payment on the slow one's partition completed in {latency * 1000:.0f} ms")
    assert latency < 1.0
    slow = (await asyncio.to_thread(wait_for_states, worker, {slow_id: "COMPLETED"}, 15.0))[
        slow_id]
    assert stamp(slow, "APPROVED") > stamp(fast, "COMPLETED")


async def test_any_replica_answers_for_any_payment(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    spawn_simulator()
    first = spawn_worker(env, name="replica-a")
    second = spawn_worker(env, name="replica-b")
    first.wait_healthy()
    second.wait_healthy()
    run = uuid.uuid4().hex[:6]
    # Four payments on each partition, so both replicas own some of them.
    candidates = (f"route-{run}-{i}" for i in range(10_000))
    by_partition: dict[int, list[str]] = {p: [] for p in range(4)}
    for pid in candidates:
        if len(by_partition[partition_of(pid)]) < 4:
            by_partition[partition_of(pid)].append(pid)
        if all(len(v) == 4 for v in by_partition.values()):
            break
    ids = [pid for pids in by_partition.values() for pid in pids]
    assert len(ids) == 16
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                  [(pid.encode(), created_event(pid, "5.5")) for pid in ids])
    expected = dict.fromkeys(ids, "COMPLETED")
    via_first = await asyncio.to_thread(wait_for_states, first, expected, 90.0)
    via_second = await asyncio.to_thread(wait_for_states, second, expected, 30.0)
    assert via_first == via_second
    for worker in (first, second):
        status, body = get_state(worker, f"unknown-{run}")
        assert status == 404 and body["error"] == "not_found"


async def test_worker_rebuilds_its_table_and_finishes_inflight_payments(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], tmp_path: Any,
) -> None:
    env = worker_env(kafka_brokers, DATA_DIR=str(tmp_path / "rocks"))
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator("--hold-seconds", "4")
    worker = spawn_worker(env, name="before-crash")
    worker.wait_healthy()
    run = uuid.uuid4().hex[:6]
    done_ids = [f"rec-done-{run}-{i}" for i in range(10)]
    await produce(kafka_brokers, topic,
                  [(pid.encode(), created_event(pid, "12.34")) for pid in done_ids])
    before = await asyncio.to_thread(
        wait_for_states, worker, dict.fromkeys(done_ids, "COMPLETED"), 60.0)

    inflight_ids = [f"rec-slow-{run}-{i}" for i in range(5)]
    await produce(kafka_brokers, topic, [
        (pid.encode(), created_event(pid, "7", customer_id="slow-c")) for pid in inflight_ids])
    await asyncio.to_thread(
        wait_for_states, worker, dict.fromkeys(inflight_ids, "FRAUD_CHECK"), 30.0)
    worker.kill()  # SIGKILL while the fraud replies are held

    import shutil
    shutil.rmtree(tmp_path / "rocks")
    # Payments created while no worker runs are not lost either.
    later_ids = [f"rec-later-{run}-{i}" for i in range(5)]
    await produce(kafka_brokers, topic,
                  [(pid.encode(), created_event(pid, "3.21")) for pid in later_ids])

    restarted = spawn_worker(env, name="after-crash")
    restarted.wait_healthy()
    after = await asyncio.to_thread(
        wait_for_states, restarted, dict.fromkeys(done_ids, "COMPLETED"), 60.0)
    assert after == before  # rebuilt from the changelog, unchanged
    finished = await asyncio.to_thread(
        wait_for_states, restarted,
        dict.fromkeys(inflight_ids + later_ids, "COMPLETED"), 60.0)
    for pid in inflight_ids:
        assert states(finished[pid]["history"]) == [
            "NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
