"""Nothing dies quietly: per-event dead letters, and what a crashed agent does to the worker.

Faust acks the events of an agent that raises and leaves the worker running with the agent
gone, ``/health`` still green (DESIGN §3). So:

* every agent handles each event inside a guard; what it cannot process becomes a record on
  the dead-letter topic (stage, reason, source position, raw bytes) and the stream moves on;
* if an agent crashes anyway (a bug outside the guard), `on_agent_error` records it — ERROR
  log, ``payment_agent_crashes_total{agent}``, ``/ready`` and ``/health`` answer 503 — and
  the worker exits with `EXIT_AGENT_CRASHED` so its supervisor (systemd, Kubernetes, the
  compose restart policy) starts a fresh one, which resumes from the committed offsets.
  Restarting the agent in place was rejected: the crashed event is already acked, and a
  restarted actor has shown to consume nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from orchestrator_app import clock, metrics
from orchestrator_app.deadletter import dead_letter, position_of
from orchestrator_app.domain.records import SourceRef

__all__ = [
    "EXIT_AGENT_CRASHED",
    "EXIT_PRODUCE_FAILED",
    "crashed",
    "dead_letter_event",
    "guard_producer",
    "on_agent_error",
    "problems",
    "source_of",
]

log = logging.getLogger(__name__)

#: Exit status of a worker whose agent crashed (EX_SOFTWARE).
EXIT_AGENT_CRASHED = 70
#: Seconds between the crash and the exit: long enough for a scrape or probe to see it.
EXIT_DELAY = 2.0

#: agent name -> what killed it.
crashed: dict[str, str] = {}
#: Extra liveness checks (name -> callable returning True while healthy), e.g. the sink loop.
checks: dict[str, Any] = {}


def problems() -> list[str]:
    """Why this worker is not healthy (empty: healthy)."""
    found = [f"agent {name} crashed: {why}" for name, why in sorted(crashed.items())]
    found += [f"{name} is not running" for name, check in sorted(checks.items()) if not check()]
    return found


def source_of(event: Any) -> SourceRef | None:
    message = getattr(event, "message", None)
    return None if message is None else position_of(message)


def dead_letter_event(stage: str, event: Any, exc: BaseException) -> None:
    """Send the event's raw bytes to the dead-letter topic, with why; never raises."""
    from orchestrator_app.topics import dead_letters  # the app's topics: imported late

    metrics.agent_dead_letters.labels(stage=stage).inc()
    source = source_of(event)
    # The exception type and position only: its text may quote payment data.
    log.error("%s dead-lettered an input at %s: %s", stage,
              f"{source.topic}[{source.partition}]@{source.offset}" if source else "?",
              exc.__class__.__name__)
    message = getattr(event, "message", None)
    raw = getattr(message, "value", None)
    if not isinstance(raw, bytes):
        raw = b""
    try:
        dead_letters.send_soon(
            key=getattr(message, "key", None) if message is not None else None,
            value=dead_letter(raw, "processing_error",
                              f"{exc.__class__.__name__}: {str(exc)[:300]}", source,
                              clock.now(), stage),
        )
    except Exception:  # the dead letter itself failed: say so loudly, keep the stream alive
        log.exception("could not send a dead letter for %s", stage)


async def on_agent_error(agent: Any, exc: BaseException) -> None:
    """Faust's per-agent error hook: report, turn unhealthy, then exit non-zero."""
    name = str(getattr(agent, "name", agent))
    crashed[name] = f"{exc.__class__.__name__}: {str(exc)[:200]}"
    metrics.agent_crashes.labels(agent=name).inc()
    log.error("agent %s crashed (%s); the worker exits with status %d so that its "
              "supervisor restarts it", name, exc.__class__.__name__, EXIT_AGENT_CRASHED,
              exc_info=exc)
    asyncio.get_running_loop().call_later(EXIT_DELAY, _exit)


def _exit(status: int = EXIT_AGENT_CRASHED) -> None:
    logging.shutdown()
    sys.stderr.flush()
    os._exit(status)


#: Exit status of a worker whose record could not be produced (EX_IOERR).
EXIT_PRODUCE_FAILED = 74


def guard_producer(producer: Any) -> None:
    """Make a failed produce stop the worker before any offset is committed past it.

    Faust sends most records from a background buffer and commits offsets after a flush
    that does not look at the outcome: a record the broker refused (after the client's own
    retries) would be lost while its input's offset is committed. Here a failed delivery —
    or a send that raises — exits the process at once (the commit needs more loop turns than
    the callback), so the input is consumed again after the restart and its effects, being
    deterministic, are produced again.
    """
    original = producer.send

    async def send(*args: Any, **kwargs: Any) -> Any:
        try:
            future = await original(*args, **kwargs)
        except Exception as exc:
            produce_failed(exc)
            raise
        future.add_done_callback(_check_delivery)
        return future

    producer.send = send


def _check_delivery(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        produce_failed(exc)


def produce_failed(exc: BaseException) -> None:
    metrics.producer_errors.inc()
    log.critical("a record could not be produced (%s: %s); the worker exits with status %d "
                 "before committing past it", exc.__class__.__name__, str(exc)[:200],
                 EXIT_PRODUCE_FAILED)
    _exit(EXIT_PRODUCE_FAILED)
