"""Load for the observability tests: a group of workers and a mix of every saga path."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from tests.kafka_util import produce
from tests.saga_util import created_event, metric_samples
from tests.workers import SimulatorProcess, WorkerProcess

#: kind -> (customer prefix, merchant prefix, final state): the simulator's rules.
MIX = {
    "completed": ("cust", "m", "COMPLETED"),
    "rejected": ("fraud-cust", "m", "REJECTED"),
    "review": ("noreply-cust", "m", "MANUAL_REVIEW"),
    "compensated": ("cust", "fail-m", "COMPENSATED"),
}


def run_load(kafka_brokers: str, topic: str, per_kind: int) -> dict[str, str]:
    """Produce a mix of every path (and one undecodable record); the expected states."""
    run = uuid.uuid4().hex[:6]
    expected: dict[str, str] = {}
    items: list[tuple[bytes | None, bytes]] = []
    for kind, (customer, merchant, final) in MIX.items():
        for i in range(per_kind):
            payment_id = f"dash-{run}-{kind}-{i:03d}"
            expected[payment_id] = final
            items.append((payment_id.encode(), created_event(
                payment_id, Decimal("25.00"), f"{customer}-{i}", f"{merchant}-{i}")))
    items.append((b"garbage", b"{not json"))
    asyncio.run(produce(kafka_brokers, topic, items))
    return expected


def settled(workers: list[WorkerProcess]) -> bool:
    """Every worker's lag, in records and seconds, is 0."""
    for worker in workers:
        for name in ("kafka_consumer_lag", "kafka_consumer_lag_seconds"):
            if any(v != 0 for v in metric_samples(worker, name).values()):
                return False
    return True


def wait(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def start_group(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], workers: int,
) -> tuple[dict[str, str], list[WorkerProcess]]:
    env = worker_env(kafka_brokers, FRAUD_CHECK_TIMEOUT_SECONDS="1",
                     BREAKER_FAILURE_THRESHOLD="1000")
    spawn_simulator()
    started = [spawn_worker(env, name=f"worker-{n}") for n in range(workers)]
    for worker in started:
        worker.wait_healthy(timeout=90)
    return env, started


def census_reporter(workers: list[WorkerProcess], timeout: float = 60.0) -> WorkerProcess:
    """The worker that reports the group-wide gauges, once it has a census."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            if metric_samples(worker, "payment_current_state_gauge"):
                return worker
        time.sleep(0.5)
    raise AssertionError("no worker reports payment_current_state_gauge")


def census_count(worker: WorkerProcess, state: str) -> float:
    """payment_current_state_gauge{state}. The database is shared by the tests of a run, so
    tests compare against the count before their load, never an absolute number."""
    return metric_samples(worker, "payment_current_state_gauge").get(
        (("state", state),), 0.0)
