"""Child processes and server probes shared by the dev stack, ``make run``, tests and benchmarks.

Every child runs in its own process group (``start_new_session=True``), so stopping it also
stops whatever it forked; a group is signalled only while its leader is ours and unreaped,
because only then is its pid (the group id) surely not recycled for a stranger. Nothing is
ever signalled by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

__all__ = [
    "exited_unreaped",
    "free_port",
    "nats_answers",
    "port_free",
    "redis_answers",
    "signal_group",
    "stop_group",
    "stop_groups",
    "tcp_reachable",
]

Proc = subprocess.Popen[bytes]


def signal_group(proc: Proc, sig: int) -> None:
    """Signal the group `proc` leads, if its leader is still ours (not reaped)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def exited_unreaped(proc: Proc, timeout: float) -> bool:
    """Wait up to `timeout` for `proc` to exit WITHOUT reaping it (True: it exited).

    While an exited leader is not reaped its pid, and so its group id, cannot go to another
    process: SIGKILL to the group then reaches only what the leader left behind.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_groups(procs: Sequence[Proc], grace: float, sig: int | Sequence[int] = signal.SIGTERM,
                on_slow: Callable[[int], None] | None = None) -> None:
    """Send `sig` to every group, then SIGKILL each group after `grace` seconds in all.

    SIGKILL goes to every group, also one whose leader exited in time, so nothing it forked
    outlives it; `on_slow(i)` is told about each process that needed it. Idempotent.
    """
    sigs = [sig] * len(procs) if isinstance(sig, int) else list(sig)
    for proc, s in zip(procs, sigs, strict=True):
        signal_group(proc, s)
    deadline = time.monotonic() + grace
    for i, proc in enumerate(procs):
        if proc.returncode is not None:
            continue
        if not exited_unreaped(proc, max(0.0, deadline - time.monotonic())) and on_slow:
            on_slow(i)
        signal_group(proc, signal.SIGKILL)
        proc.wait()


def stop_group(proc: Proc, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """`stop_groups` for one process."""
    stop_groups([proc], timeout, sig)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_line(s: socket.socket) -> bytes:
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 1.0) -> bool:
    """A Redis usable without credentials: PING answers +PONG (not -NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            return _read_line(s).startswith(b"+PONG")
    except OSError:
        return False


def nats_answers(host: str = "127.0.0.1", port: int = 4222, timeout: float = 1.0) -> bool:
    """A NATS usable without credentials: INFO, then CONNECT + PING answers PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            if not _read_line(s).startswith(b"INFO "):
                return False
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            return _read_line(s).startswith(b"PONG")
    except OSError:
        return False
