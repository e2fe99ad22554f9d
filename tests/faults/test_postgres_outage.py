"""PostgreSQL stopped for ~20 s under load, with a worker killed in the middle of the
outage: payments keep moving on the survivor (PostgreSQL is a sink, not the source of
truth), and once the database is back it holds every payment exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.faults.servers import PrivatePostgres
from tests.faults.util import (
    HAPPY,
    count_in_state,
    created_items,
    db_rows,
    fetch,
    ids,
    produce_steady,
    read_to_end,
    states_via_api,
    wait_db_exact,
    wait_until,
)
from tests.kafka_util import produce
from tests.saga_util import metric, partition_of, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BEFORE = 1_500
DURING = 1_000
STOP_AFTER_TERMINAL = 500
OUTAGE = 20.0  # seconds the database is down (longer only if the survivor is behind)
OUTAGE_MAX = 30.0
PRODUCE_DURING = 10.0  # the outage payments go out over this long
KILL_AT = 8.0  # seconds into the outage
SAMPLE_PER_PARTITION = 2


async def diagnose(url: str, brokers: str, env: dict[str, str], survivor: WorkerProcess,
                   payment_ids: list[str]) -> str:
    """Where each payment PostgreSQL lacks got to: the survivor's API, its records on every
    topic of this test (input, commands, changelog, state changes, dead letters), and each
    group's committed offsets against the end offsets (which stage lost it)."""
    states, history = await db_rows(url, payment_ids)
    wrong = [p for p in payment_ids if p not in states or len(history.get(p, [])) != 5][:5]
    answers = await states_via_api(survivor, wrong)
    lines = []
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics()
                        if t.startswith((env["TOPIC_PREFIX"], env["APP_ID"])))
        for topic in topics:
            records = await read_to_end(brokers, topic)
            ends: dict[int, int] = {}
            for r in records:
                ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
            lines.append(f"{topic}: {len(records)} records, ends {sorted(ends.items())}")
            for pid in wrong:
                found = [(r.partition, r.offset, (r.value or b"")[:120]) for r in records
                         if r.key is not None and pid.encode() in r.key]
                if found:
                    lines.append(f"{pid} on {topic}: {found}")
        for group in (env["APP_ID"], f"{env['APP_ID']}-sink"):
            offsets = await admin.list_consumer_group_offsets(group)
            lines.append(f"group {group} committed: " + ", ".join(
                f"{tp.topic}[{tp.partition}]={meta.offset}"
                for tp, meta in sorted(offsets.items())))
    finally:
        await admin.close()
    for pid in wrong:
        status, body = answers[pid]
        lines.append(f"{pid} (partition {partition_of(pid)}) via the survivor's API: {status} "
                     f"{body.get('current_state')} v{body.get('version')}")
    return "\n".join(lines) + f"\nsurvivor log:\n{survivor.log_tail(40)}"


def completions(worker: WorkerProcess) -> float:
    return metric(worker, "payment_state_transitions_total", from_state="PROCESSING",
                  to_state="COMPLETED")


async def test_database_outage_with_a_worker_killed_during_it(
    private_postgres: PrivatePostgres, kafka_brokers: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    pg = private_postgres
    env = worker_env(kafka_brokers, DATABASE_URL=pg.url)
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator()
    survivor = spawn_worker(env, name="survivor")
    victim = spawn_worker(env, name="victim")
    survivor.wait_healthy()
    victim.wait_healthy()
    run = uuid.uuid4().hex[:6]
    warm = ids(run, 8, "warm")
    await produce(kafka_brokers, topic, created_items(warm, "1"))
    await asyncio.to_thread(wait_for_states, survivor, dict.fromkeys(warm, "COMPLETED"), 60)

    before = ids(run, BEFORE, "pre")
    during = ids(run, DURING, "out")
    everything = warm + before + during
    started = time.monotonic()
    await produce(kafka_brokers, topic, created_items(before, "7.25"))

    async def enough() -> int:
        n = await count_in_state(pg.url, before, "COMPLETED")
        return n if n >= STOP_AFTER_TERMINAL else 0

    in_db = await wait_until(enough, 120, f"{STOP_AFTER_TERMINAL} COMPLETED rows", 0.2)
    pg.stop()
    stopped_at = time.monotonic()
    survivor_done_at_stop = completions(survivor)
    print(f"\nPostgreSQL stopped {stopped_at - started:.1f}s after producing {BEFORE} "
          f"payments ({in_db} COMPLETED rows written)")

    sent_at: dict[bytes, float] = {}
    producing = asyncio.ensure_future(produce_steady(
        kafka_brokers, topic, created_items(during, "8.75"), DURING / PRODUCE_DURING, sent_at))
    await asyncio.sleep(max(0.0, stopped_at + KILL_AT - time.monotonic()))
    assert not pg.is_running()
    victim.kill()
    killed_at = time.monotonic()
    print(f"killed the victim worker {killed_at - stopped_at:.1f}s into the outage")
    await asyncio.sleep(2.0)

    # Outage payments produced after the kill, on every partition: the survivor must own
    # the victim's partitions and finish them while the database is still down.
    sample: dict[int, list[str]] = {p: [] for p in range(4)}
    for pid in during:
        t = sent_at.get(pid.encode())
        if t is not None and t >= killed_at and len(sample[partition_of(pid)]) < \
                SAMPLE_PER_PARTITION:
            sample[partition_of(pid)].append(pid)
    sample_ids = [pid for pids in sample.values() for pid in pids]
    assert len(sample_ids) == 4 * SAMPLE_PER_PARTITION, sample

    completed_during_outage: dict[str, float] = {}
    while time.monotonic() < stopped_at + OUTAGE_MAX:
        answers = await states_via_api(
            survivor, [p for p in sample_ids if p not in completed_during_outage])
        for pid, (status, body) in answers.items():
            if status == 200 and body.get("current_state") == "COMPLETED":
                completed_during_outage[pid] = time.monotonic() - stopped_at
        if len(completed_during_outage) == len(sample_ids) and \
                time.monotonic() >= stopped_at + OUTAGE:
            break
        await asyncio.sleep(0.3)
    assert not pg.is_running()
    survivor_done_during = completions(survivor) - survivor_done_at_stop
    await producing
    pg.start()
    restarted_at = time.monotonic()
    outage = restarted_at - stopped_at
    print(f"PostgreSQL restarted after {outage:.1f}s down; during the outage the survivor "
          f"completed {survivor_done_during:.0f} payments; {len(completed_during_outage)}/"
          f"{len(sample_ids)} sampled post-kill payments (every partition) COMPLETED via "
          f"its API before the restart, the last "
          f"{max(completed_during_outage.values(), default=float('nan')):.1f}s into the outage")

    try:
        caught_up = await wait_db_exact(pg.url, dict.fromkeys(everything, HAPPY), 180)
    except AssertionError as exc:
        where = await diagnose(pg.url, kafka_brokers, env, survivor, everything)
        raise AssertionError(f"{exc}\n{where}") from None
    print(f"catch-up: PostgreSQL held all {len(everything)} payments exactly "
          f"{caught_up:.1f}s after the restart ({time.monotonic() - started:.1f}s in all)")
    rows = await fetch(pg.url, "SELECT count(*) AS n FROM payment_state_history")
    assert rows[0]["n"] == 5 * len(everything)
    rows = await fetch(pg.url, "SELECT count(*) AS n, min(version) AS lo, max(version) AS hi "
                               "FROM payment_states")
    assert (rows[0]["n"], rows[0]["lo"], rows[0]["hi"]) == (len(everything), 5, 5)

    missing = sorted(set(sample_ids) - set(completed_during_outage))
    assert not missing, (
        f"payments produced during the outage (after the kill) did not COMPLETE on the "
        f"survivor while PostgreSQL was down: {missing}\n{survivor.log_tail(40)}")
    assert survivor_done_during > 0
