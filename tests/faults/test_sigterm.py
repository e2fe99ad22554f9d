"""SIGTERM under load: the worker shuts down gracefully within 5 s with exit code 0, and a
restarted worker finishes every payment with an exact history."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.util import HAPPY, count_in_state, created_items, ids, wait_db_exact, wait_until
from tests.kafka_util import produce
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAYMENTS = 1_500
SIGTERM_AFTER_TERMINAL = 300
GRACE_SECONDS = 5.0  # the spec: graceful shutdown within 5 s


async def test_sigterm_under_load_then_restart_finishes_everything(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], tmp_path: Path,
) -> None:
    db = migrated_database_url
    env = worker_env(kafka_brokers, DATA_DIR=str(tmp_path / "rocks"))
    spawn_simulator()
    worker = spawn_worker(env, name="before-sigterm")
    worker.wait_healthy()
    pids = ids(uuid.uuid4().hex[:6], PAYMENTS, "term")
    started = time.monotonic()
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                  created_items(pids, "3.30"))

    async def enough() -> int:
        n = await count_in_state(db, pids, "COMPLETED")
        return n if n >= SIGTERM_AFTER_TERMINAL else 0

    at_signal = await wait_until(enough, 120, f"{SIGTERM_AFTER_TERMINAL} COMPLETED", 0.2)
    assert at_signal < PAYMENTS, "no payment left in flight: the test needs load"
    assert worker.proc is not None
    os.killpg(worker.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = await asyncio.to_thread(worker.proc.wait, 30)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError("worker still running 30s after SIGTERM\n"
                             + worker.log_tail(40)) from None
    exit_seconds = time.monotonic() - signalled
    print(f"\nSIGTERM with {at_signal}/{PAYMENTS} COMPLETED in PostgreSQL: exited in "
          f"{exit_seconds:.2f}s with code {code}")
    assert code == 0, f"exit code {code}\n{worker.log_tail(40)}"
    assert exit_seconds <= GRACE_SECONDS, worker.log_tail(40)

    restarted = spawn_worker(env, name="after-sigterm")
    restarted.wait_healthy()
    restart_ready = time.monotonic() - signalled
    took = await wait_db_exact(db, dict.fromkeys(pids, HAPPY), 180)
    assert await count_in_state(db, pids, "COMPLETED") == PAYMENTS
    print(f"restarted worker ready {restart_ready:.1f}s after SIGTERM; every payment "
          f"COMPLETED with exact history {took:.1f}s later "
          f"({time.monotonic() - started:.1f}s in all)")
