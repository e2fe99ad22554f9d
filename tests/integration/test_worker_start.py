"""A real worker process starts, answers /health and consumes, on Apache Kafka and Tansu."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from tests.kafka_util import produce, read_until
from tests.workers import WorkerProcess

pytestmark = pytest.mark.integration


async def _start_and_consume(
    brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess], broker_name: str,
) -> None:
    env = worker_env(brokers)
    prefix = env["TOPIC_PREFIX"]
    worker = spawn_worker(env)
    healthy_after = worker.wait_healthy(path="/health")
    status, body = worker.get("/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "service": "payment-orchestrator"}

    payment_id = f"pay-{uuid.uuid4().hex[:12]}"
    event = {
        "payment_id": payment_id, "amount": 100.50, "currency": "USD",
        "customer_id": "customer-123", "merchant_id": "merchant-456",
        "status": "NEW", "created_at": "2026-02-13T10:00:00Z",
    }
    await produce(brokers, f"{prefix}payment.created",
                  [(payment_id.encode(), json.dumps(event).encode())])
    # The saga reads payment.created itself (co-partitioned): its first output is the NEW
    # state change (no NATS here, so the payment then waits in FRAUD_CHECK).
    records = await read_until(
        brokers, f"{prefix}payment.state.changed",
        lambda rs: any(r.key == payment_id.encode() for r in rs), timeout=60,
    )
    consuming_after = time.monotonic() - worker.started_at
    first = json.loads(next(r.value for r in records if r.key == payment_id.encode()))
    assert (first["version"], first["current_state"]) == (1, "NEW")
    assert first["payment_id"] == payment_id
    status, body = worker.get("/metrics")
    assert status == 200
    assert 'kafka_messages_processed_total{topic="payment.created"} 1.0' in body.decode()
    print(f"\n[{broker_name}] worker healthy after {healthy_after:.1f}s, "
          f"first record consumed and applied after {consuming_after:.1f}s")
    worker.stop()
    assert worker.proc is not None and worker.proc.returncode is not None


async def test_worker_starts_and_consumes_on_apache_kafka(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    await _start_and_consume(kafka_brokers, worker_env, spawn_worker, "apache-kafka")


@pytest.mark.tansu
async def test_worker_starts_and_consumes_on_tansu(
    tansu_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    await _start_and_consume(tansu_brokers, worker_env, spawn_worker, "tansu")
