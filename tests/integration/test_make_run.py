"""`make run`'s path keeps working: the local runner on Tansu brings everything up, its demo
payments reach their states, and Ctrl-C stops every process it started.

The runner starts its own servers here (the server URLs are removed from its environment;
a Redis or NATS already answering on its default port may be reused, which is fine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from orchestrator_app.dev.localrun import KINDS, MIX, OUTCOME, payment_id
from tests.localrun_util import (
    Output,
    interrupt_and_check_stopped,
    stop_runner,
    wait_for_states,
)

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

REPO_ROOT = Path(__file__).resolve().parents[2]
PAYMENTS = 10  # MIX[:10]: at least one of each kind, so every path of the saga is taken
DROPPED = ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL", "PORT", "DATA_DIR",
           "APP_ID", "WEB_BIND", "WEB_HOST")


def test_make_run_on_tansu_settles_demo_payments_and_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED and not k.startswith(("TOPIC_", "KAFKA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_app.dev.localrun", "--payments", str(PAYMENTS),
         "--rate", "5"],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out = Output(proc)
    pids: list[int] = []
    try:
        # tansu, postgres, [redis, nats: unless reused from their default ports], worker,
        # simulator: the process groups it must leave behind it on exit
        pids = [int(p) for p in out.wait_for(r"^pids: ([\d ]+)$", 120).group(1).split()]
        assert len(pids) >= 4, pids
        m = out.wait_for(r"state:\s+http://127\.0\.0\.1:(\d+)/payments/(demo-[0-9a-f]+)-000001/"
                         r"state", 120)
        port, tag = int(m.group(1)), m.group(2).removeprefix("demo-")
        dashboard = out.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/dashboard)$", 10)
        with urllib.request.urlopen(dashboard.group(1), timeout=10) as response:
            assert response.status == 200
            assert b"/dashboard/data.json" in response.read()
        expected = {payment_id(tag, n): OUTCOME[MIX[n - 1]] for n in range(1, PAYMENTS + 1)}
        assert set(MIX[:PAYMENTS]) == set(KINDS)
        assert sum(s == "COMPLETED" for s in expected.values()) >= 3

        wait_for_states(proc, out, port, expected, 90)
        interrupt_and_check_stopped(proc, out, pids, 90)
    finally:
        stop_runner(proc, pids)
