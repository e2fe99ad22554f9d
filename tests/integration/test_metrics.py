"""``GET /metrics`` against the real servers: the spec's metric names, consumer lag in records
and in seconds (held → N and growing; released → 0; a partition that moves away is dropped),
and the group-wide gauges (payments per state, success rate, dead-letter depth)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from orchestrator_app.domain.state_machine import State
from tests.kafka_util import produce
from tests.load_util import census_count, census_reporter
from tests.saga_util import created_event, metric, metric_samples, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

#: The spec's Monitoring section (names as exposed: counters get ``_total``).
SPEC_METRICS = {
    "payment_state_transitions_total": {"from_state", "to_state"},
    "payment_state_transition_duration_seconds": {"state"},
    "payment_current_state_gauge": {"state"},
    "payment_processing_duration_seconds": set(),
    "payment_fraud_check_duration_seconds": set(),
    "payment_success_rate": set(),
    "payment_state_transition_errors_total": {"state", "error_type"},
    "payment_fraud_check_timeouts_total": set(),
    "payment_retries_total": {"state"},
    "kafka_consumer_lag": {"topic", "partition"},
    "kafka_messages_processed_total": {"topic"},
    "kafka_producer_errors_total": set(),
}
#: Beyond the spec (issue 9).
EXTRA_METRICS = {
    "kafka_consumer_lag_seconds", "payment_waiting_oldest_seconds", "payment_stuck",
    "payment_dead_letter_topic_depth", "payment_circuit_breaker_state",
    "payment_sink_lag_records", "python_gc_pause_seconds",
}
N = 20


def _declared(body: str) -> set[str]:
    """Every metric name the text declares (``# TYPE`` lines), samples or not."""
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total")
                      else name)
    return names


def _lags(worker: WorkerProcess, name: str, topic: str) -> dict[int, float]:
    return {int(dict(labels)["partition"]): value
            for labels, value in metric_samples(worker, name).items()
            if dict(labels)["topic"] == topic}


def _all_lags(worker: WorkerProcess, name: str) -> dict[tuple[str, int], float]:
    """Every source partition's lag: where a held payment waits depends on the path (the
    ingest agent applies a co-partitioned CREATE itself; other commands go through the
    commands topic)."""
    return {(dict(labels)["topic"], int(dict(labels)["partition"])): value
            for labels, value in metric_samples(worker, name).items()}


def _wait(condition: Callable[[], bool], what: str, worker: WorkerProcess,
          timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    lags = {name: metric_samples(worker, name)
            for name in ("kafka_consumer_lag", "kafka_consumer_lag_seconds")}
    raise AssertionError(f"timed out waiting for {what}; {lags}\n{worker.log_tail(30)}")


async def test_metrics_lag_in_records_and_seconds_and_group_gauges(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    # One fraud call at a time and a long fraud timeout: a fraud request the (stopped)
    # simulator does not answer holds the saga agent, so commands pile up unprocessed.
    env = worker_env(kafka_brokers, FRAUD_CONCURRENCY="1", FRAUD_CHECK_TIMEOUT_SECONDS="120",
                     WATCHDOG_SECONDS="600")
    prefix = env["TOPIC_PREFIX"]
    commands_topic = f"{prefix}orchestrator-commands"
    created_topic = f"{prefix}payment.created"
    simulator = spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()

    status, body = worker.get("/metrics")
    assert status == 200
    declared = _declared(body.decode())
    assert set(SPEC_METRICS) | EXTRA_METRICS <= declared, \
        set(SPEC_METRICS) | EXTRA_METRICS - declared
    # Every owned source partition has a lag series (4 partitions, one worker: all of them).
    _wait(lambda: set(_lags(worker, "kafka_consumer_lag", commands_topic)) == {0, 1, 2, 3}
          and set(_lags(worker, "kafka_consumer_lag", created_topic)) == {0, 1, 2, 3},
          "a lag series per owned partition", worker)

    before = census_count(census_reporter([worker]), "COMPLETED")
    run = uuid.uuid4().hex[:6]
    os.kill(simulator.proc.pid, signal.SIGSTOP)  # the simulator stops answering
    try:
        first = f"lag-{run}-000"
        await produce(kafka_brokers, created_topic,
                      [(first.encode(), created_event(first, Decimal("10.00")))])
        _wait(lambda: metric(worker, "payment_nats_calls_in_flight", kind="fraud") == 1,
              "the first payment's fraud call to be in flight", worker)
        _wait(lambda: sum(_all_lags(worker, "kafka_consumer_lag").values()) == 0,
              "the first payment's input to be committed", worker)

        held = [f"lag-{run}-{i:03d}" for i in range(1, N + 1)]
        await produce(kafka_brokers, created_topic,
                      [(p.encode(), created_event(p, Decimal("12.34"))) for p in held])
        _wait(lambda: sum(_all_lags(worker, "kafka_consumer_lag").values()) == N,
              f"a lag of {N}", worker)
        seconds = _all_lags(worker, "kafka_consumer_lag_seconds")
        records = _all_lags(worker, "kafka_consumer_lag")
        behind = {p for p, lag in records.items() if lag > 0}
        assert behind and all(seconds[p] > 0 for p in behind), (records, seconds)
        assert all(seconds[p] == 0 for p in records if p not in behind), (records, seconds)
        # The time lag grows while the records wait (a bounded wait, no fixed sleep).
        start = max(seconds.values())
        _wait(lambda: max(_all_lags(worker, "kafka_consumer_lag_seconds").values())
              >= start + 1.0, "the time lag to grow", worker)
        assert sum(_all_lags(worker, "kafka_consumer_lag").values()) == N
    finally:
        os.kill(simulator.proc.pid, signal.SIGCONT)

    # Released: everything completes, and both lags return to 0.
    await asyncio.to_thread(wait_for_states, worker,
                            {p: "COMPLETED" for p in [first, *held]}, 90.0)
    _wait(lambda: sum(_all_lags(worker, "kafka_consumer_lag").values()) == 0
          and max(_all_lags(worker, "kafka_consumer_lag_seconds").values()) == 0,
          "lag 0 after release", worker)

    # Group-wide gauges (one reporter: this worker owns commands partition 0).
    await produce(kafka_brokers, created_topic, [(b"bad", b"{not json")])
    # (The database is shared by the run's tests: counts are compared with the count before.)
    _wait(lambda: census_count(worker, "COMPLETED") == before + N + 1
          and metric(worker, "payment_dead_letter_topic_depth",
                     topic=f"{prefix}payment.created.dlq") == 1,
          "the census to count the payments and the dead letter", worker)
    assert 0 < metric(worker, "payment_success_rate") <= 1
    assert set(dict(labels)["state"] for labels in metric_samples(
        worker, "payment_current_state_gauge")) == {s.value for s in State}
    assert metric(worker, "payment_circuit_breaker_state", service="fraud") == 0

    # A second worker takes over some partitions: the first drops their lag series, and
    # together they report each partition once (and one of them reports the census).
    second = spawn_worker(env, name="worker-2")
    second.wait_healthy(timeout=90)

    def split() -> bool:
        mine = set(_lags(worker, "kafka_consumer_lag", commands_topic))
        theirs = set(_lags(second, "kafka_consumer_lag", commands_topic))
        return bool(mine) and bool(theirs) and not mine & theirs \
            and mine | theirs == {0, 1, 2, 3}

    _wait(split, "the partitions to be split between the workers", second, timeout=90)
    reporters = [w for w in (worker, second)
                 if metric_samples(w, "payment_current_state_gauge")]
    assert len(reporters) <= 1
