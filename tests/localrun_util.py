"""Helpers for the tests that run ``python -m orchestrator_app.dev.localrun`` (``make run``):
read its output without filling the pipe, ask a payment's state, wait for states, stop it
with Ctrl-C and check that every process group is gone."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request


class Output:
    """The runner's stdout, read by a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        for line in self.lines:
            if m := re.search(pattern, line):
                return m
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            print(f"  | {line}", flush=True)
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r} in the runner's output:\n"
                             + "\n".join(self.lines[-40:]))

    def drain(self, timeout: float = 5.0) -> str:
        with contextlib.suppress(AssertionError):
            self.wait_for(r"(?!)", timeout)  # matches nothing: read until EOF
        return "\n".join(self.lines)


def payment_state(port: int, pid: str) -> str | None:
    """``current_state`` of a payment from the runner's worker, None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/payments/{pid}/state",
                                    timeout=2) as response:
            return str(json.loads(response.read())["current_state"])
    except (OSError, ValueError, KeyError):
        return None


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for_states(proc: subprocess.Popen[str], out: Output, port: int,
                    expected: dict[str, str], timeout: float) -> None:
    """Poll the state API until every payment is in its expected state (the runner alive)."""
    seen: dict[str, str | None] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {pid: payment_state(port, pid) for pid in expected}
        if seen == expected:
            return
        assert proc.poll() is None, out.drain()
        time.sleep(0.5)
    assert seen == expected, f"states {seen}, expected {expected}"


def interrupt_and_check_stopped(proc: subprocess.Popen[str], out: Output, pids: list[int],
                                timeout: float) -> None:
    """Ctrl-C the runner: it exits 0, cleanly, and every process group it reported is gone."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=timeout) == 0, out.drain()
    output = out.drain()
    assert "Traceback" not in output, output
    assert "run: stopped" in output, output
    left = [p for p in pids if not group_gone(p)]
    assert not left, f"still running after Ctrl-C: {left}"


def stop_runner(proc: subprocess.Popen[str], pids: list[int]) -> None:
    """After a failed test: let the runner clean up (SIGTERM), else kill what it reported."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        for pgid in pids:  # only process groups this runner reported starting
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
