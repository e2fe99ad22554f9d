"""Table state survives losing the local store: (a) a worker whose DATA_DIR is deleted
rebuilds every payment from the changelog, identical, and keeps applying commands; (b) with
a standby replica, the survivor of a kill -9 serves every payment's state."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rocksdict

from tests.faults.util import (
    HAPPY,
    created_items,
    ids,
    read_to_end,
    states_via_api,
    wait_db_exact,
)
from tests.kafka_util import produce
from tests.saga_util import metric, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "recovery-token-0123456789abcdef"


def post(worker: WorkerProcess, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        worker.url(path), data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def persisted_offsets(data_dir: Path) -> dict[int, int]:
    """Per partition database of the payments table: the changelog offset it persisted."""
    options = rocksdict.Options(raw_mode=True)
    found: dict[int, int] = {}
    for path in data_dir.rglob("payments-*.db"):
        db = rocksdict.Rdict(str(path), options=options,
                             access_type=rocksdict.AccessType.read_only())
        try:
            offset = db.get(b"__faust\0offset__")
        finally:
            db.close()
        if offset is not None:
            found[int(path.name.removesuffix(".db").rsplit("-", 1)[1])] = int(offset)
    return found


async def all_answered(worker: WorkerProcess, expected: dict[str, tuple[int, Any]],
                       timeout: float) -> float:
    """Seconds until the worker answers for every payment exactly as `expected`."""
    t0 = time.monotonic()
    pending = dict(expected)
    last: dict[str, Any] = {}
    while pending:
        got = await states_via_api(worker, list(pending))
        for pid, answer in got.items():
            if answer == pending[pid]:
                del pending[pid]
            else:
                last[pid] = answer
        if pending:
            assert time.monotonic() - t0 < timeout, (
                f"{len(pending)} payments not served as before after {timeout:.0f}s, e.g. "
                f"{[(pid, last.get(pid)) for pid in list(pending)[:3]]}\n{worker.log_tail(30)}")
            await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def test_worker_rebuilds_a_deleted_store_from_the_changelog(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], tmp_path: Path,
) -> None:
    data_dir = tmp_path / "rocks"
    env = worker_env(kafka_brokers, DATA_DIR=str(data_dir), API_TOKEN=TOKEN)
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator()
    worker = spawn_worker(env, name="before")
    worker.wait_healthy()
    pids = ids(uuid.uuid4().hex[:6], 500, "rec")
    await produce(kafka_brokers, topic, created_items(pids, "19.99"))
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(pids, "COMPLETED"), 120)
    before = await states_via_api(worker, pids)
    assert all(status == 200 for status, _ in before.values())

    worker.stop()  # SIGTERM
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail(30)
    # Each partition database recorded the last changelog offset it holds (what a restart
    # with the store in place resumes recovery after).
    changelog = await read_to_end(kafka_brokers, f"{env['APP_ID']}-payments-changelog")
    last: dict[int, int] = {}
    for record in changelog:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    assert last and persisted_offsets(data_dir) == last
    size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    shutil.rmtree(data_dir)
    restarted = spawn_worker(env, name="after")
    ready = restarted.wait_healthy(timeout=120)
    served = await all_answered(restarted, before, 60)
    print(f"\nstore deleted ({size / 1e6:.1f} MB); restarted worker ready in {ready:.1f}s, "
          f"served all {len(pids)} payments identical to before {served:.1f}s later")

    # Commands still apply to the rebuilt state: identical duplicates change nothing, a new
    # payment completes, a refund (checked against the recovered version) is applied.
    dupes = pids[:25]
    await produce(kafka_brokers, topic, created_items(dupes, "19.99"))
    deadline = time.monotonic() + 30
    while metric(restarted, "payment_duplicate_commands_total") < len(dupes):
        assert time.monotonic() < deadline, "duplicates were not seen by the saga"
        await asyncio.sleep(0.2)
    fresh = ids(uuid.uuid4().hex[:6], 4, "new")
    await produce(kafka_brokers, topic, created_items(fresh, "1.50"))
    await asyncio.to_thread(wait_for_states, restarted, dict.fromkeys(fresh, "COMPLETED"), 30)
    status, body = await asyncio.to_thread(post, restarted, f"/payments/{pids[-1]}/refund",
                                           {"reason": "recovery check"})
    assert status == 202, body
    await asyncio.to_thread(wait_for_states, restarted, {pids[-1]: "REFUNDED"}, 30)
    after = await states_via_api(restarted, pids[:-1])
    assert after == {pid: before[pid] for pid in pids[:-1]}, "a duplicate changed a payment"
    dlq = await read_to_end(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created.dlq")
    assert dlq == [], [r.value[:200] for r in dlq]
    expected = dict.fromkeys(pids[:-1] + fresh, HAPPY)
    expected[pids[-1]] = [*HAPPY, "REFUNDED"]
    await wait_db_exact(migrated_database_url, expected, 60)
    print(f"{len(dupes)} duplicate payment.created ignored (no change, no dead letter); "
          f"{len(fresh)} new payments COMPLETED; a refund applied on recovered state")


async def test_survivor_with_standby_serves_every_payment_after_a_kill(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers, TABLE_STANDBY_REPLICAS="1")
    spawn_simulator()
    survivor = spawn_worker(env, name="survivor")
    victim = spawn_worker(env, name="victim")
    survivor.wait_healthy()
    victim.wait_healthy()
    pids = ids(uuid.uuid4().hex[:6], 400, "stby")
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                  created_items(pids, "6.06"))
    await asyncio.to_thread(wait_for_states, survivor, dict.fromkeys(pids, "COMPLETED"), 120)
    before = await states_via_api(survivor, pids)
    assert all(status == 200 for status, _ in before.values())
    victim_work = metric(victim, "payment_state_transitions_total", from_state="NEW",
                         to_state="FRAUD_CHECK")
    assert victim_work > 0, "the victim owned no partition"
    victim.kill()
    served = await all_answered(survivor, before, 90)
    print(f"\nkill -9 of one of two workers (TABLE_STANDBY_REPLICAS=1; it had created "
          f"{victim_work:.0f} of {len(pids)} payments): the survivor answered for all "
          f"{len(pids)} payments, identical, {served:.1f}s after the kill")
    status, _ = survivor.get("/ready")
    assert status == 200
