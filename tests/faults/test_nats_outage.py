"""NATS stopped for 20 s while payments arrive at a steady rate: fraud checks end within
their timeout (MANUAL_REVIEW, then at once while the breaker is open), nothing waits in
FRAUD_CHECK, a processing attempt that hits the outage is retried per policy, and once
NATS and the fraud service are back and the breaker resets, payments complete again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.servers import PrivateNats
from tests.faults.util import created_items, fetch, ids, produce_steady, stamp
from tests.kafka_util import produce
from tests.saga_util import get_state, metric, states, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FRAUD_TIMEOUT = 1.0
SLACK = 2.0
OUTAGE = 20.0
RATE = 5.0  # payments a second during the outage
#: Outage payments stop this long before NATS returns, so every one of their fraud checks
#: has ended (timeout ≤ FRAUD_TIMEOUT) while NATS is still down.
QUIET_BEFORE_RESTART = 3.0
RETRIES = 3  # RETRY_MAX_ATTEMPTS default

# A flaky merchant's first attempt fails retryably (a reply); the retry lands in the
# outage: attempts 2, 3, 4 get no answer (timeout, or connection error), and after the 3rd
# retry the payment is compensated. The processor breaker (threshold 3) opens only on the
# last of those failures, so no circuit wait changes the sequence.
FLAKY_PATH = (["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED"]
              + ["RETRY", "PROCESSING", "FAILED"] * RETRIES + ["COMPENSATED"])


async def test_nats_outage_under_steady_load(
    private_nats: PrivateNats, kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess], tmp_path: Path,
) -> None:
    nats = private_nats
    env = worker_env(
        kafka_brokers, NATS_URL=nats.url, FRAUD_CHECK_TIMEOUT_SECONDS=str(FRAUD_TIMEOUT),
        BREAKER_FAILURE_THRESHOLD="3", BREAKER_RESET_TIMEOUT_SECONDS="3",
        RETRY_INITIAL_DELAY_SECONDS="0.5", PROCESSOR_TIMEOUT_SECONDS="1",
        RETRY_MAX_ATTEMPTS=str(RETRIES))
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    simulators: list[SimulatorProcess] = []

    def simulator() -> SimulatorProcess:
        sim = SimulatorProcess(nats.url, tmp_path / f"simulator-{len(simulators)}.log")
        simulators.append(sim)
        sim.wait_ready()
        return sim

    try:
        await _scenario(nats, kafka_brokers, migrated_database_url, env, topic, simulator,
                        spawn_worker)
    finally:
        for sim in simulators:
            sim.stop()


async def _scenario(
    nats: PrivateNats, brokers: str, db: str, env: dict[str, str], topic: str,
    simulator: Callable[[], SimulatorProcess], spawn_worker: Callable[..., WorkerProcess],
) -> None:
    first_sim = simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:6]
    warm = ids(run, 4, "warm")
    await produce(brokers, topic, created_items(warm, "2"))
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(warm, "COMPLETED"), 60)
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 0.0

    # A payment whose retry will hit the outage: stop NATS while it waits in FAILED
    # (0.5 s backoff after its first, answered, failure).
    flaky = f"flaky-{run}"
    await produce(brokers, topic, created_items([flaky], "12.34", merchant_id="flaky-shop"))
    deadline = time.monotonic() + 30
    while True:
        status, body = await asyncio.to_thread(get_state, worker, flaky)
        if status == 200 and body["current_state"] == "FAILED":
            break
        assert time.monotonic() < deadline, f"flaky payment never FAILED: {body}"
        await asyncio.sleep(0.01)
    nats.stop()
    stopped_at, stopped_wall = time.monotonic(), time.time()

    # Payments at a steady rate during the outage; watch the fraud breaker meanwhile.
    during = ids(run, int(RATE * (OUTAGE - QUIET_BEFORE_RESTART - 0.5)), "out")
    sent_at: dict[bytes, float] = {}
    producing = asyncio.ensure_future(
        produce_steady(brokers, topic, created_items(during, "5.55"), RATE, sent_at))
    await asyncio.to_thread(first_sim.stop)
    print(f"\nNATS stopped while the flaky payment waits for its retry "
          f"(its history so far: {states(body['history'])})")
    breaker_seen: Counter[float] = Counter()
    opened_after = None
    while time.monotonic() < stopped_at + OUTAGE:
        value = await asyncio.to_thread(
            metric, worker, "payment_circuit_breaker_state", service="fraud")
        breaker_seen[value] += 1
        if value == 1.0 and opened_after is None:
            opened_after = time.monotonic() - stopped_at
        await asyncio.sleep(0.25)
    await producing
    assert time.monotonic() - max(sent_at.values()) >= QUIET_BEFORE_RESTART - 0.5
    # Every outage payment has settled before NATS returns.
    settled = await asyncio.to_thread(
        wait_for_states, worker, dict.fromkeys(during, "MANUAL_REVIEW"), 5.0)
    assert not nats.is_running()
    nats.start()
    restarted_at = time.monotonic()
    simulator()
    print(f"NATS back after {restarted_at - stopped_at:.1f}s; {len(during)} payments produced "
          f"during the outage at {RATE:.0f}/s; fraud breaker gauge samples {dict(breaker_seen)}"
          f" (0 closed, 1 open, 2 half-open), first open {opened_after and f'{opened_after:.1f}s'}"
          f" into the outage")
    assert breaker_seen[1.0] > 0, "the fraud breaker never showed open during the outage"

    # Every outage payment: MANUAL_REVIEW, reached within the fraud timeout (+ slack).
    waits = []
    reasons: Counter[str] = Counter()
    for pid in during:
        body = settled[pid]
        assert states(body["history"]) == ["NEW", "FRAUD_CHECK", "MANUAL_REVIEW"], (pid, body)
        stamps = {e["state"]: stamp(e["timestamp"]) for e in body["history"]}
        waits.append(stamps["MANUAL_REVIEW"] - stamps["FRAUD_CHECK"])
        reasons[body["metadata"].get("review_reason", "")] += 1
    print(f"FRAUD_CHECK → MANUAL_REVIEW: max {max(waits):.3f}s, median "
          f"{sorted(waits)[len(waits) // 2]:.3f}s; review reasons {dict(reasons)}")
    assert max(waits) <= FRAUD_TIMEOUT + SLACK, sorted(waits)[-5:]

    # The flaky payment: retried per policy through the outage, then compensated.
    body = (await asyncio.to_thread(
        wait_for_states, worker, {flaky: "COMPENSATED"}, 30.0))[flaky]
    assert states(body["history"]) == FLAKY_PATH, states(body["history"])
    processing = [stamp(e["timestamp"]) for e in body["history"] if e["state"] == "PROCESSING"]
    assert processing[1] >= stopped_wall - 0.05, "race lost: the retry ran before NATS stopped"
    assert body["metadata"]["compensation_reason"] == "retries exhausted"
    codes = await _failure_codes(db, flaky, len(FLAKY_PATH))
    print(f"flaky payment: {len(FLAKY_PATH)} states, failures {codes}, compensated "
          f"{stamp(body['updated_at']) - stopped_wall:.1f}s into the outage")
    assert codes[0] == "processor_unavailable"
    assert all(code in ("timeout", "connection_error") for code in codes[1:]), codes

    # NATS and the fraud service are back: once the breaker lets a trial through, payments
    # complete again.
    first_complete = None
    probe = 0
    deadline = time.monotonic() + 60
    while first_complete is None:
        assert time.monotonic() < deadline, "no payment completed within 60s of NATS' return"
        pid = f"after-{run}-{probe}"
        probe += 1
        await produce(brokers, topic, created_items([pid], "3"))
        for _ in range(50):
            status, b = await asyncio.to_thread(get_state, worker, pid)
            if status == 200 and b["current_state"] in ("COMPLETED", "MANUAL_REVIEW"):
                break
            await asyncio.sleep(0.2)
        if status == 200 and b["current_state"] == "COMPLETED":
            first_complete = time.monotonic() - restarted_at
        else:
            await asyncio.sleep(0.5)
    after = ids(run, 20, "back")
    await produce(brokers, topic, created_items(after, "4.40"))
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(after, "COMPLETED"), 30)
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 0.0
    print(f"first payment COMPLETED {first_complete:.1f}s after NATS restarted "
          f"({probe} probes); then {len(after)} of {len(after)} COMPLETED, breaker closed")
    assert worker.proc is not None and worker.proc.poll() is None


async def _failure_codes(db: str, pid: str, versions: int) -> list[str]:
    """error_code of each FAILED state, from PostgreSQL (waits for the sink)."""
    deadline = time.monotonic() + 30
    while True:
        rows = await fetch(db, "SELECT state, metadata FROM payment_state_history "
                               "WHERE payment_id = $1 ORDER BY version", pid)
        if len(rows) == versions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert len(rows) == versions, [r["state"] for r in rows]

    def meta(value: Any) -> dict[str, Any]:
        return json.loads(value) if isinstance(value, str) else dict(value or {})

    return [meta(r["metadata"]).get("error_code") for r in rows if r["state"] == "FAILED"]
