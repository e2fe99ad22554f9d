"""kill -9 one of two workers while 5,000 payments are in flight: nothing lost, nothing
applied twice, every version published."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from tests.faults.util import (
    HAPPY,
    all_versions_seen,
    count_in_state,
    created_items,
    fetch,
    ids,
    wait_db_exact,
    wait_until,
)
from tests.kafka_util import produce, read_until
from tests.saga_util import get_state, metric_samples, partition_of, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAYMENTS = 5_000
KILL_AFTER_TERMINAL = 1_000


def transitions(worker: WorkerProcess) -> float:
    return sum(metric_samples(worker, "payment_state_transitions_total").values())


def probes(run: str) -> list[str]:
    """Two payments per partition, to see which partitions a replica answers for."""
    found: dict[int, list[str]] = {p: [] for p in range(4)}
    for i in range(10_000):
        pid = f"probe-{run}-{i}"
        if len(found[partition_of(pid)]) < 2:
            found[partition_of(pid)].append(pid)
        if all(len(v) == 2 for v in found.values()):
            break
    return [pid for pids in found.values() for pid in pids]


async def test_kill_one_of_two_workers_under_load(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    db = migrated_database_url
    env = worker_env(kafka_brokers)
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator()
    first = spawn_worker(env, name="worker-a")
    second = spawn_worker(env, name="worker-b")
    first.wait_healthy()
    second.wait_healthy()
    run = uuid.uuid4().hex[:6]

    # Warm-up: payments on every partition, through both replicas' partitions.
    probe_ids = probes(run)
    await produce(kafka_brokers, topic, created_items(probe_ids, "1.00"))
    await asyncio.to_thread(wait_for_states, first, dict.fromkeys(probe_ids, "COMPLETED"), 60)

    pids = ids(run, PAYMENTS, "kill")
    partition = {pid: partition_of(pid) for pid in pids}
    started = time.monotonic()
    await produce(kafka_brokers, topic, created_items(pids, "25.50"))
    await wait_until(
        lambda: _at_least(db, pids, KILL_AFTER_TERMINAL), 120,
        f"{KILL_AFTER_TERMINAL} payments COMPLETED in PostgreSQL", interval=0.2)

    # Kill the one that has done work (both should have); the other survives.
    done_a, done_b = transitions(first), transitions(second)
    assert done_a > 0 and done_b > 0, f"both replicas should own partitions: {done_a} {done_b}"
    victim, survivor = second, first
    victim.kill()
    killed_at = time.monotonic()
    print(f"\nkilled worker-b (pid {victim.proc.pid if victim.proc else '?'}) "
          f"{killed_at - started:.1f}s after producing; worker-b had done "
          f"{done_b:.0f} transitions, worker-a {done_a:.0f}")

    # Takeover: the survivor answers (200, locally: the victim is dead) for a payment on
    # every partition and is ready; then completions resume on every partition.
    saw_unready = None
    answering_at = None
    deadline = killed_at + 90
    while answering_at is None:
        assert time.monotonic() < deadline, "survivor did not take over within 90s\n" + \
            survivor.log_tail(40)
        ready, _ = await asyncio.to_thread(survivor.get, "/ready", 2.0)
        if ready != 200 and saw_unready is None:
            saw_unready = time.monotonic() - killed_at
        answers = [await asyncio.to_thread(get_state, survivor, pid) for pid in probe_ids]
        if ready == 200 and all(s == 200 and b.get("current_state") == "COMPLETED"
                                for s, b in answers):
            answering_at = time.monotonic()
        else:
            await asyncio.sleep(0.2)
    base = await _completed_by_partition(db, pids, partition)
    resumed_at = None
    while resumed_at is None:
        assert time.monotonic() < deadline, (
            f"completions did not resume on every partition: {base} → "
            f"{await _completed_by_partition(db, pids, partition)}")
        now = await _completed_by_partition(db, pids, partition)
        if all(now[p] > base[p] or now[p] == sum(1 for q in partition.values() if q == p)
               for p in range(4)):
            resumed_at = time.monotonic()
        else:
            await asyncio.sleep(0.2)
    print(f"kill → survivor /ready 503 seen at {saw_unready and f'{saw_unready:.1f}s'}; "
          f"kill → survivor answers for every partition: {answering_at - killed_at:.1f}s; "
          f"kill → completions resumed on every partition: {resumed_at - killed_at:.1f}s")

    # 1. PostgreSQL: every payment COMPLETED, exactly versions 1..5, no gap, no duplicate.
    caught_up = await wait_db_exact(db, dict.fromkeys(pids, HAPPY), 240)
    total = time.monotonic() - started
    rows = await fetch(db, "SELECT count(*) AS n, count(DISTINCT payment_id) AS p "
                           "FROM payment_state_history WHERE payment_id = ANY($1::varchar[])",
                       pids)
    assert (rows[0]["n"], rows[0]["p"]) == (PAYMENTS * 5, PAYMENTS)
    assert await count_in_state(db, pids, "COMPLETED") == PAYMENTS
    print(f"all {PAYMENTS} payments COMPLETED with exact history in PostgreSQL "
          f"{total:.1f}s after producing ({caught_up:.1f}s after the takeover checks), "
          f"{PAYMENTS / total:.0f} payments/s overall")

    # 2. payment.state.changed: every version of every payment (duplicates allowed).
    done = all_versions_seen(dict.fromkeys(pids, 5))
    records = await read_until(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.state.changed",
                               done, 120)
    mine = [r for r in records if r.key is not None and r.key.decode() in partition]
    dupes = len(mine) - PAYMENTS * 5
    print(f"payment.state.changed: {len(mine)} events for {PAYMENTS} payments "
          f"({dupes} re-emitted duplicates after the kill)")
    assert survivor.proc is not None and survivor.proc.poll() is None


async def _at_least(db: str, pids: list[str], n: int) -> bool:
    return await count_in_state(db, pids, "COMPLETED") >= n


async def _completed_by_partition(db: str, pids: list[str],
                                  partition: dict[str, int]) -> Counter[int]:
    rows = await fetch(db, "SELECT payment_id FROM payment_states WHERE "
                           "payment_id = ANY($1::varchar[]) AND current_state = 'COMPLETED'",
                       pids)
    counts: Counter[int] = Counter({p: 0 for p in range(4)})
    counts.update(partition[r["payment_id"]] for r in rows)
    return counts
