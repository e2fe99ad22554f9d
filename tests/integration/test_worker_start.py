"""A real worker process starts, answers /health and consumes, on Apache Kafka and Tansu."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from tests.kafka_util import produce, read_until
from tests.workers import CLI, WorkerProcess

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


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_replication_factor_above_the_live_brokers_exits_2(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]], log_format: str,
) -> None:
    """The production defaults (3 replicas, 2 in sync) against the one-broker dev Kafka:
    the worker cannot create its topics, and says so in one line, with exit code 2."""
    env = worker_env(kafka_brokers, TOPIC_REPLICATION_FACTOR="3",
                     TOPIC_MIN_INSYNC_REPLICAS="2", LOG_FORMAT=log_format,
                     PORT="1", DATA_DIR="/nonexistent")
    result = subprocess.run([CLI, "worker"], env=env, capture_output=True, text=True,
                            timeout=90)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = json.loads(lines[0])["message"] if log_format == "json" else lines[0]
    assert "1 live broker" in line and "TOPIC_REPLICATION_FACTOR=3" in line, line
    assert result.stdout == ""
    print(f"\n{lines[0]}")
