"""Production topology on a real cluster: three Apache Kafka brokers (KRaft, this machine),
two workers with replication factor 3, min.insync.replicas 2 and acks=all; kill -9 the
broker leading the most partitions in the middle of 3,000 payments. Every payment reaches
its terminal state with its exact history, and payment.state.changed holds every version
exactly once after deduplication by (payment_id, version). Prints the stall the leader
election caused (broker side: fencing and new leaders; client side: the longest pause in
terminal transitions and in acknowledged produces)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from orchestrator_app.dev.stack import KafkaCluster
from tests.faults.servers import PrivatePostgres
from tests.faults.util import all_versions_seen, fetch, wait_db_exact
from tests.kafka_util import read_until
from tests.saga_util import created_event
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(420)]

PAYMENTS = 3_000
KILL_AFTER_TERMINAL = 1_000
RATE = 50.0  # payments a second: production goes on through the broker's death
TERMINAL = ("COMPLETED", "REJECTED", "COMPENSATED")
HAPPY = ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
#: kind -> (customer prefix, merchant prefix, history): the simulator's rules.
PATHS = {
    "completed": ("cust", "m", HAPPY),
    "rejected": ("fraud-cust", "m", ["NEW", "FRAUD_CHECK", "REJECTED"]),
    "compensated": ("cust", "fail-m",
                    ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED", "COMPENSATED"]),
    # attempt 1 fails retryably, the retry (after 1 s) completes
    "retried": ("cust", "flaky-m", ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "FAILED",
                                    "RETRY", "PROCESSING", "COMPLETED"]),
}


def longest_pause(times: list[float]) -> tuple[float, float]:
    """The longest gap between successive times at or after 0 (the kill), and its start;
    the gap that spans the kill counts from the last time before it."""
    times = sorted(times)
    around = [t for t in times if t < 0][-1:] + [t for t in times if t >= 0]
    if len(around) < 2:
        return 0.0, 0.0
    return max((b - a, a) for a, b in pairwise(around))


def kind_of(i: int) -> str:
    """Mostly normal payments; 5 % each rejected, compensated, retried."""
    return {0: "rejected", 1: "compensated", 2: "retried"}.get(i % 20, "completed")


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    """Three brokers of this test only. Requested before `spawn_worker`, so the workers are
    stopped first at teardown (a worker shutting down wants its brokers)."""
    cluster = KafkaCluster(tmp_path / "kafka-cluster", 3, min_insync=2, heap_mb=384)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_kill_one_of_three_brokers_under_load(
    kafka_cluster: KafkaCluster, private_postgres: PrivatePostgres,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    cluster, db = kafka_cluster, private_postgres.url
    settings = cluster.env()
    assert settings["TOPIC_REPLICATION_FACTOR"] == "3"
    env = worker_env(settings.pop("KAFKA_BROKERS"), DATABASE_URL=db, **settings,
                     FRAUD_CHECK_TIMEOUT_SECONDS="5")
    prefix, brokers = env["TOPIC_PREFIX"], env["KAFKA_BROKERS"]
    topic = f"{prefix}payment.created"
    spawn_simulator()
    workers = [spawn_worker(env, name=f"worker-{n}") for n in "ab"]
    for worker in workers:
        worker.wait_healthy(timeout=120)
    ours = [f"{prefix}{t}" for t in ("payment.created", "orchestrator-commands",
                                     "payment.state.changed", "payment.notifications")]
    ours.append(f"{env['APP_ID']}-payments-changelog")
    replicas = cluster.metadata(ours)
    assert replicas is not None and all(len(p) == 4 for p in replicas.leaders.values()), \
        replicas

    run = uuid.uuid4().hex[:6]
    expected: dict[str, list[str]] = {}
    items: list[tuple[bytes, bytes]] = []
    for i in range(PAYMENTS + 20):
        customer, merchant, path = PATHS[kind_of(i)]
        pid = f"{'warm' if i >= PAYMENTS else 'kb'}-{run}-{i:05d}"
        expected[pid] = path
        items.append((pid.encode(), created_event(pid, Decimal("42.10"), f"{customer}-{i}",
                                                  f"{merchant}-{i}")))
    warm, items = items[PAYMENTS:], items[:PAYMENTS]
    warm_ids = [k.decode() for k, _ in warm]
    pids = [k.decode() for k, _ in items]

    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=2)
    tasks: list[asyncio.Task[object]] = []
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=k) for k, v in warm])
        await wait_db_exact(db, {p: expected[p] for p in warm_ids}, 90)

        acked_at: list[float] = []
        started = time.monotonic()
        # A downstream consumer of payment.state.changed, live: when each event arrived.
        all_seen = all_versions_seen({p: len(expected[p]) for p in pids})
        arrived: list[float] = []

        def done(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
            arrived.extend([time.monotonic()] * (len(records) - len(arrived)))
            return bool(all_seen(records))

        watching = asyncio.create_task(
            read_until(brokers, f"{prefix}payment.state.changed", done, 300))
        tasks.append(watching)  # type: ignore[arg-type]

        async def produce() -> None:
            """At RATE, acks=all; every acknowledgement's time (the producer's stall)."""
            pending = []
            for i, (key, value) in enumerate(items):
                delay = started + i / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                future = await producer.send(topic, value, key=key)
                future.add_done_callback(lambda _f: acked_at.append(time.monotonic()))
                pending.append(future)
            await asyncio.gather(*pending)

        producing = asyncio.create_task(produce())
        tasks.append(producing)  # type: ignore[arg-type]
        samples: list[tuple[float, int]] = []  # (monotonic, terminal payments in PostgreSQL)
        killed_at: float | None = None
        victim = -1
        failover: asyncio.Future[dict[str, float]] | None = None
        deadline = started + 240
        while True:
            assert time.monotonic() < deadline, f"not every payment terminal: {samples[-1:]}"
            assert all(w.proc is not None and w.proc.poll() is None for w in workers), \
                "a worker exited:\n" + "\n".join(w.log_tail(30) for w in workers)
            rows = await fetch(db, "SELECT count(*) AS n FROM payment_states WHERE payment_id "
                                   "= ANY($1::varchar[]) AND current_state = ANY($2::text[])",
                               pids, list(TERMINAL))
            samples.append((time.monotonic(), int(rows[0]["n"])))
            if killed_at is None and samples[-1][1] >= KILL_AFTER_TERMINAL:
                led = Counter(leader for parts in cluster.leaders(ours).values()
                              for leader in parts.values())
                victim = led.most_common(1)[0][0]
                killed_at = cluster.kill(victim)
                failover = asyncio.ensure_future(
                    asyncio.to_thread(cluster.wait_failover, victim, ours, 90))
                print(f"\nkilled broker {victim} (leader of {led[victim]} of "
                      f"{sum(led.values())} partitions of our topics; leaders {dict(led)}) "
                      f"{killed_at - started:.1f}s after the first payment, "
                      f"{samples[-1][1]} payments terminal in PostgreSQL")
            if samples[-1][1] == PAYMENTS:
                break
            await asyncio.sleep(0.2)
        await producing
        records = await watching
    finally:
        for task in tasks:  # on a failure: stop the watcher's consumer and the producing
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
    assert killed_at is not None and failover is not None
    broker_side = await failover
    total = time.monotonic() - started

    # 1. PostgreSQL: every payment terminal, exact history (versions 1..n, no gap, no dup).
    await wait_db_exact(db, {p: expected[p] for p in pids}, 60)
    want_rows = sum(len(expected[p]) for p in pids)
    rows = await fetch(db, "SELECT count(*) AS n, count(DISTINCT payment_id) AS p "
                           "FROM payment_state_history WHERE payment_id = ANY($1::varchar[])",
                       pids)
    assert (rows[0]["n"], rows[0]["p"]) == (want_rows, PAYMENTS)
    finals = Counter(expected[p][-1] for p in pids)

    # 2. payment.state.changed: deduplicated by (payment_id, version), exactly every
    #    transition; a duplicate (a send retried across the failover) says the same thing.
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    terminal_arrivals: list[float] = []  # first copy of each terminal event
    wanted = set(pids)
    mine = 0
    for record, at in zip(records, arrived, strict=True):
        event = json.loads(record.value, parse_float=Decimal)
        if event["payment_id"] not in wanted:
            continue
        mine += 1
        key = (event["payment_id"], event["version"])
        if not seen[key] and event["current_state"] in TERMINAL:
            terminal_arrivals.append(at - killed_at)
        seen[key].add(event["current_state"])
    assert len(seen) == want_rows
    assert all(v <= len(expected[p]) for p, v in seen), "a version beyond the expected path"
    assert all(states == {expected[p][v - 1]} for (p, v), states in seen.items())
    assert len(terminal_arrivals) == PAYMENTS

    # 3. The stall, seen from outside (seconds from the kill).
    print(f"broker side: node {victim} fenced after {broker_side['fenced_s']:.1f}s, every "
          f"partition of our topics led by a survivor after {broker_side['leaders_s']:.1f}s")
    stall, stall_from = longest_pause(terminal_arrivals)
    pg_stall, pg_from = longest_pause(
        [t - killed_at for (t, n), (_, m) in pairwise(samples) if m > n])
    acks = sorted(t - killed_at for t in acked_at)
    ack_stall, ack_from = longest_pause(acks) if acks and acks[-1] > 0 else (0.0, 0.0)
    print(f"client side: longest pause in terminal events reaching a consumer {stall:.1f}s "
          f"(from {stall_from:+.1f}s); in PostgreSQL (sink) {pg_stall:.1f}s (from "
          f"{pg_from:+.1f}s); in acks=all produce acknowledgements {ack_stall:.1f}s (from "
          f"{ack_from:+.1f}s; last produce acknowledged at {acks[-1]:+.1f}s)")
    bins = Counter(int((t + 6) // 2) for t in terminal_arrivals if -6 <= t < 30)
    print("terminal events per 2 s around the kill (t=0): " + " ".join(
        f"{2 * b - 6:+d}:{bins[b]}" for b in range(18)))
    print(f"all {PAYMENTS} payments terminal with exact history ({dict(finals)}) "
          f"{total:.1f}s after the first; payment.state.changed: {want_rows} transitions, "
          f"{mine - want_rows} duplicates (same version, same state)")
    for worker in workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail(30)
