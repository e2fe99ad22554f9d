"""Timer agent: turns due timers (retry backoffs, deadlines) into TIMER commands.

A Faust timer on every worker scans the local, active partitions of the small ``timers``
table. Sending is at-least-once: a timer is sent again if the saga has not consumed it
after a while; the command id (``<payment_id>:timer:<seq>``) makes repeats harmless.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from orchestrator_app import metrics
from orchestrator_app.app import app
from orchestrator_app.domain.records import Command, CommandKind, Timer
from orchestrator_app.domain.saga import format_timestamp
from orchestrator_app.topics import commands
from tables.timers import timers

__all__ = ["TICK_SECONDS", "fire_due_timers", "timer_command"]

TICK_SECONDS = 0.25
#: Resend a due timer that is still pending after this long (the first send was lost).
RESEND_AFTER = 10.0

log = logging.getLogger(__name__)

_sent: dict[tuple[str, int], float] = {}


def timer_command(timer: Timer, now: str) -> Command:
    return Command(
        kind=CommandKind.TIMER.value,
        payment_id=timer.payment_id,
        command_id=f"{timer.payment_id}:timer:{timer.seq}",
        issued_at=now,
        attempt=timer.seq,
        reason=timer.kind,
    )


def fire_due_timers(clock: float) -> int:
    """Send a TIMER command for every due timer not sent recently; return how many."""
    fired = 0
    pending: set[tuple[str, int]] = set()
    now = format_timestamp(datetime.fromtimestamp(clock, UTC))
    for payment_id, timer in list(timers.items()):
        ident = (payment_id, timer.seq)
        pending.add(ident)
        if timer.due > clock:
            continue
        sent_at = _sent.get(ident)
        if sent_at is not None and clock - sent_at < RESEND_AFTER:
            continue
        commands.send_soon(key=payment_id, value=timer_command(timer, now))
        metrics.timers_fired.labels(kind=timer.kind).inc()
        _sent[ident] = clock
        fired += 1
    for ident in list(_sent):
        if ident not in pending:
            del _sent[ident]
    return fired


@app.timer(interval=TICK_SECONDS)
async def timer_tick() -> None:
    try:
        fire_due_timers(time.time())
    except Exception:  # a bad tick must not stop the timers; the next tick retries
        log.exception("timer tick failed")
