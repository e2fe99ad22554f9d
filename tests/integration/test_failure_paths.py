"""Failure paths against the real servers: retries, compensation, a crash during a backoff,
and the fraud circuit breaker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator_app.dev.procs import free_port, stop_group
from orchestrator_app.dev.stack import find_exe
from tests.kafka_util import produce, read_until
from tests.saga_util import created_event, get_state, metric, states, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

Env = Callable[..., dict[str, str]]
Spawn = Callable[..., WorkerProcess]
Sim = Callable[..., SimulatorProcess]




async def test_automatic_retry_succeeds_on_the_second_attempt(
    kafka_brokers: str, worker_env: Env, spawn_worker: Spawn, spawn_simulator: Sim,
) -> None:
    env = worker_env(kafka_brokers, RETRY_INITIAL_DELAY_SECONDS="0.5")
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    pid = f"flaky-{uuid.uuid4().hex[:8]}"
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                  [(pid.encode(), created_event(pid, "42.42", merchant_id="flaky-shop"))])
    body = (await asyncio.to_thread(wait_for_states, worker, {pid: "COMPLETED"}, 30.0))[pid]
    assert states(body["history"]) == [
        "NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED", "RETRY", "PROCESSING",
        "COMPLETED"]
    assert metric(worker, "payment_retries_total", state="FAILED") == 1.0

    records = await read_until(
        kafka_brokers, f"{env['TOPIC_PREFIX']}payment.state.changed",
        lambda rs: sum(1 for r in rs if r.key == pid.encode()) >= 8)
    events = {e["version"]: e for e in (json.loads(r.value, parse_float=Decimal)
                                        for r in records if r.key == pid.encode())}
    failed, retry, second = events[5], events[6], events[7]
    assert failed["metadata"]["error_code"] == "processor_unavailable"
    assert failed["metadata"]["retry_count"] == 0
    assert failed["metadata"]["retryable"] is True
    assert "next_attempt_at" in failed["metadata"]
    assert retry["metadata"]["retry_count"] == 1
    assert second["metadata"]["attempt"] == 2


async def test_retries_exhausted_compensate_and_notify(
    kafka_brokers: str, worker_env: Env, spawn_worker: Spawn, spawn_simulator: Sim,
) -> None:
    env = worker_env(kafka_brokers, RETRY_MAX_ATTEMPTS="2",
                     RETRY_INITIAL_DELAY_SECONDS="0.2", RETRY_MAX_DELAY_SECONDS="0.4")
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:8]
    exhausted, declined = f"down-{run}", f"declined-{run}"
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created", [
        (exhausted.encode(), created_event(exhausted, "19.99", merchant_id="down-shop")),
        (declined.encode(), created_event(declined, "5", merchant_id="fail-shop")),
    ])
    bodies = await asyncio.to_thread(
        wait_for_states, worker, {exhausted: "COMPENSATED", declined: "COMPENSATED"}, 30.0)
    assert states(bodies[exhausted]["history"]) == [
        "NEW", "FRAUD_CHECK", "APPROVED",
        "PROCESSING", "FAILED", "RETRY",
        "PROCESSING", "FAILED", "RETRY",
        "PROCESSING", "FAILED", "COMPENSATED"]
    assert bodies[exhausted]["metadata"]["compensation_reason"] == "retries exhausted"
    assert states(bodies[declined]["history"])[-3:] == ["PROCESSING", "FAILED", "COMPENSATED"]
    assert bodies[declined]["metadata"]["compensation_reason"] == "permanent error"

    notes = await read_until(
        kafka_brokers, f"{env['TOPIC_PREFIX']}payment.notifications",
        lambda rs: len({(r.key, json.loads(r.value)["audience"]) for r in rs}) >= 4)
    by_payment: dict[str, dict[str, dict[str, object]]] = {}
    for record in notes:
        note = json.loads(record.value, parse_float=Decimal)
        by_payment.setdefault(note["payment_id"], {})[note["audience"]] = note
    for pid, amount in ((exhausted, Decimal("19.99")), (declined, Decimal("5"))):
        customer, ops = by_payment[pid]["customer"], by_payment[pid]["operations"]
        assert customer["event"] == "PAYMENT_FAILED"
        assert ops["event"] == "PAYMENT_COMPENSATED"
        assert Decimal(str(customer["amount"])) == amount
        assert customer["notification_id"].endswith(":customer")
    assert by_payment[exhausted]["operations"]["severity"] == "critical"
    assert by_payment[declined]["operations"]["severity"] == "warning"


async def test_retry_survives_a_worker_killed_during_the_backoff(
    kafka_brokers: str, worker_env: Env, spawn_worker: Spawn, spawn_simulator: Sim,
    tmp_path: Path,
) -> None:
    env = worker_env(kafka_brokers, RETRY_INITIAL_DELAY_SECONDS="4",
                     DATA_DIR=str(tmp_path / "rocks"))
    spawn_simulator()
    worker = spawn_worker(env, name="before-crash")
    worker.wait_healthy()
    pid = f"flaky-{uuid.uuid4().hex[:8]}"
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                  [(pid.encode(), created_event(pid, "7.77", merchant_id="flaky-shop"))])
    await asyncio.to_thread(wait_for_states, worker, {pid: "FAILED"}, 30.0)
    worker.kill()  # SIGKILL in the middle of the 4 s backoff
    killed_at = time.monotonic()

    restarted = spawn_worker(env, name="after-crash")
    restarted.wait_healthy()
    body = (await asyncio.to_thread(wait_for_states, restarted, {pid: "COMPLETED"}, 60.0))[pid]
    assert states(body["history"]) == [
        "NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED", "RETRY", "PROCESSING",
        "COMPLETED"]
    print(f"\nretry performed {time.monotonic() - killed_at:.1f}s after the crash")


async def test_fraud_breaker_opens_then_closes(
    kafka_brokers: str, worker_env: Env, spawn_worker: Spawn, spawn_simulator: Sim,
) -> None:
    env = worker_env(kafka_brokers, FRAUD_CHECK_TIMEOUT_SECONDS="0.5",
                     BREAKER_FAILURE_THRESHOLD="2", BREAKER_RESET_TIMEOUT_SECONDS="3")
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 0.0
    run = uuid.uuid4().hex[:8]

    silent = [f"silent-{run}-{i}" for i in range(2)]
    await produce(kafka_brokers, topic, [
        (p.encode(), created_event(p, "1", customer_id="noreply-c")) for p in silent])
    bodies = await asyncio.to_thread(
        wait_for_states, worker, dict.fromkeys(silent, "MANUAL_REVIEW"), 30.0)
    assert all(b["metadata"]["review_reason"] == "fraud check timed out" for b in bodies.values())
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 1.0  # open

    while_open = f"open-{run}"
    await produce(kafka_brokers, topic, [(while_open.encode(), created_event(while_open, "2"))])
    body = (await asyncio.to_thread(
        wait_for_states, worker, {while_open: "MANUAL_REVIEW"}, 10.0))[while_open]
    assert "circuit breaker open" in body["metadata"]["review_reason"]

    await asyncio.sleep(3.2)  # reset timeout: half-open, one trial allowed
    after = f"after-{run}"
    await produce(kafka_brokers, topic, [(after.encode(), created_event(after, "3"))])
    await asyncio.to_thread(wait_for_states, worker, {after: "COMPLETED"}, 20.0)
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 0.0  # closed
    status, _ = get_state(worker, after)
    assert status == 200


async def test_nats_down_at_start_bounds_every_wait_and_flow_resumes_when_it_is_up(
    kafka_brokers: str, worker_env: Env, spawn_worker: Spawn, tmp_path: Path,
) -> None:
    """NATS down when the worker starts: the worker starts anyway, and a fraud check waits
    no longer than its timeout (→ MANUAL_REVIEW, never stuck in FRAUD_CHECK). Once NATS and
    a fraud service are up, the next payment completes (the worker connected by itself).

    Deterministic: the second payment is produced only after the simulator subscribed."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    env = worker_env(kafka_brokers, NATS_URL=url, FRAUD_CHECK_TIMEOUT_SECONDS="2")
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:8]
    early = f"no-nats-{run}"
    await produce(kafka_brokers, topic, [(early.encode(), created_event(early, "9.99"))])
    body = (await asyncio.to_thread(wait_for_states, worker, {early: "MANUAL_REVIEW"}, 30.0)
            )[early]
    assert states(body["history"]) == ["NEW", "FRAUD_CHECK", "MANUAL_REVIEW"]
    assert body["metadata"]["review_reason"] == "fraud service unavailable"
    waited = (datetime.fromisoformat(body["history"][2]["timestamp"])
              - datetime.fromisoformat(body["history"][1]["timestamp"])).total_seconds()
    assert 1.9 <= waited <= 3.0, waited  # the timeout, not NATS, bounded the wait

    nats_bin = find_exe("nats-server")
    assert nats_bin is not None
    with (tmp_path / "nats.log").open("wb") as log:
        server = subprocess.Popen([nats_bin, "-a", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    simulator = None
    try:
        simulator = SimulatorProcess(url, tmp_path / "late-simulator.log")
        simulator.wait_ready()
        deadline = time.monotonic() + 30
        while "connected to NATS" not in worker.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, worker.log_tail()
            await asyncio.sleep(0.1)
        late = f"with-nats-{run}"
        await produce(kafka_brokers, topic, [(late.encode(), created_event(late, "9.99"))])
        body = (await asyncio.to_thread(wait_for_states, worker, {late: "COMPLETED"}, 60.0)
                )[late]
        assert states(body["history"]) == [
            "NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
    finally:
        if simulator is not None:
            simulator.stop()
        worker.stop()  # before the server, so the worker's drain finds it
        stop_group(server, signal.SIGTERM, 10.0)
