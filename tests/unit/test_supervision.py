"""What a crashed agent does to its worker (the hook Faust calls), without a broker."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from orchestrator_app import metrics, supervision


async def test_a_crashed_agent_makes_the_worker_unhealthy_and_exit_non_zero(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    exited = asyncio.Event()
    monkeypatch.setattr(supervision, "_exit", exited.set)
    monkeypatch.setattr(supervision, "EXIT_DELAY", 0.01)
    monkeypatch.setattr(supervision, "crashed", {})
    before = metrics.agent_crashes.labels(agent="agents.test.boom")._value.get()
    assert supervision.problems() == []

    with caplog.at_level(logging.ERROR, logger="orchestrator_app.supervision"):
        await supervision.on_agent_error(SimpleNamespace(name="agents.test.boom"),
                                         RuntimeError("kaput"))
    assert supervision.problems() == ["agent agents.test.boom crashed: RuntimeError: kaput"]
    assert metrics.agent_crashes.labels(agent="agents.test.boom")._value.get() == before + 1
    assert any(r.levelno == logging.ERROR and "agents.test.boom" in r.getMessage()
               for r in caplog.records)
    await asyncio.wait_for(exited.wait(), 2)  # the worker exits (status EXIT_AGENT_CRASHED)
    assert supervision.EXIT_AGENT_CRASHED != 0


def test_a_failing_liveness_check_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "crashed", {})
    monkeypatch.setattr(supervision, "checks", {"the postgres sink": lambda: False})
    assert supervision.problems() == ["the postgres sink is not running"]
