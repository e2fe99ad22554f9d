"""Timer agent: turns due timers (retry backoffs, deadlines) into TIMER commands.

A Faust timer on every worker looks at the in-memory due index (kept current by the saga
agent) and, every `RESCAN_SECONDS`, rebuilds it from the local active partitions of the
``timers`` table — that is how timers recovered after a restart or a rebalance are found.
Sending is at-least-once: a due timer is sent again if the saga has not cleared it after
`RESEND_AFTER`; the command id (``<payment_id>:timer:<seq>``) makes repeats harmless.
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
from tables.timers import due_index, timers

__all__ = ["RESCAN_SECONDS", "TICK_SECONDS", "fire_due_timers", "timer_command"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
RESCAN_SECONDS = 5.0
#: Resend a due timer that is still pending after this long (the first send was lost).
RESEND_AFTER = 10.0

_sent: dict[tuple[str, int], float] = {}
_last_rescan = 0.0


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
    global _last_rescan
    if clock - _last_rescan >= RESCAN_SECONDS:
        due_index.rebuild([timer for _, timer in timers.items()])
        _last_rescan = clock
        for ident in [i for i in _sent if clock - _sent[i] > 2 * RESEND_AFTER]:
            del _sent[ident]
    fired = 0
    now = format_timestamp(datetime.fromtimestamp(clock, UTC))
    for timer in due_index.due(clock):
        ident = (timer.payment_id, timer.seq)
        sent_at = _sent.get(ident)
        if sent_at is not None and clock - sent_at < RESEND_AFTER:
            continue
        commands.send_soon(key=timer.payment_id, value=timer_command(timer, now))
        metrics.timers_fired.labels(kind=timer.kind).inc()
        _sent[ident] = clock
        fired += 1
    return fired


@app.timer(interval=TICK_SECONDS)
async def timer_tick() -> None:
    try:
        fire_due_timers(time.time())
    except Exception:  # a bad tick must not stop the timers; the next tick retries
        log.exception("timer tick failed")
