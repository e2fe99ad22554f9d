"""Real worker processes for integration tests: started with the real CLI, stopped by PID.

A pytest plugin (loaded from conftest): `worker_env` gives the environment of a worker of
this test run (unique app id and topic prefix per test, so runs and tests never share a
consumer group or a topic), and `spawn_worker` starts `payment-orchestrator worker`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator_app.dev.procs import free_port, stop_group
from orchestrator_app.schema import migrate

CLI = str(Path(sys.executable).parent / "payment-orchestrator")
SIMULATOR = [sys.executable, "-m", "orchestrator_app.dev.simulator"]


class WorkerProcess:
    """One `payment-orchestrator worker` child process with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [CLI, "worker", "--loglevel", "info"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, timeout: float = 60.0, path: str = "/ready") -> float:
        """Seconds from start until `path` (default /ready: recovered, assigned) gave 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, _ = self.get(path, timeout=1.0)
                if status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not healthy after {timeout}s\n{self.log_tail()}")

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.proc.returncode}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop this worker (and only it: its own process group)."""
        if self.proc is not None:
            stop_group(self.proc, sig, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        self.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def migrated_database_url(test_database_url: str) -> str:
    """This run's database with the schema applied (through the real migration runner)."""
    asyncio.run(migrate(test_database_url))
    return test_database_url


@pytest.fixture
def worker_env(
    migrated_database_url: str, redis_url: str, nats_url: str, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """Build a worker environment for `brokers`; same test → same app id and topics."""
    run = uuid.uuid4().hex[:8]

    def make(brokers: str, **overrides: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "TOPIC_", "APP_ID", "DATA_DIR", "PORT"))
        }
        env.update(
            KAFKA_BROKERS=brokers,
            DATABASE_URL=migrated_database_url,
            REDIS_URL=redis_url,
            NATS_URL=nats_url,
            APP_ID=f"po-test-{run}",
            TOPIC_PREFIX=f"t{run}.",
            TOPIC_PARTITIONS="4",
            # The session's broker is one node (Kafka or Tansu); the cluster test overrides.
            TOPIC_REPLICATION_FACTOR="1",
            TOPIC_MIN_INSYNC_REPLICAS="1",
            WEB_HOST="127.0.0.1",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    return make


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers; every one still running is stopped when the test ends."""
    started: list[WorkerProcess] = []

    def spawn(env: dict[str, str], name: str = "worker") -> WorkerProcess:
        env = dict(env)
        env.setdefault("PORT", str(free_port()))
        env.setdefault("DATA_DIR", str(tmp_path / f"{name}-data"))
        worker = WorkerProcess(env, tmp_path / f"{name}.log")
        started.append(worker)
        return worker.start()

    yield spawn
    for worker in started:
        worker.stop()


class SimulatorProcess:
    """`python -m orchestrator_app.dev.simulator` as a child process (real NATS responders)."""

    def __init__(self, nats_url: str, log_path: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
        env["NATS_URL"] = nats_url
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*SIMULATOR, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"simulator exited: {self.log_path.read_text()}")
            if "simulator answering" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise AssertionError("simulator not ready")

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM, 10.0)


@pytest.fixture
def spawn_simulator(
    nats_url: str, tmp_path: Path
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start simulators (e.g. ``spawn_simulator("--hold-seconds", "3")``); stopped at the end."""
    started: list[SimulatorProcess] = []

    def spawn(*args: str) -> SimulatorProcess:
        sim = SimulatorProcess(nats_url, tmp_path / f"simulator-{len(started)}.log", *args)
        started.append(sim)
        sim.wait_ready()
        return sim

    yield spawn
    for sim in started:
        sim.stop()
