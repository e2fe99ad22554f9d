"""Timer agent: turns due timers (retry backoffs, deadlines) into TIMER commands.

A Faust timer on every worker looks at the in-memory due index (kept current by the saga)
and, after every rebalance (start-up included), once the tables are recovered, rebuilds it
from the payments of the partitions it owns — that is how timers recovered after a restart
or a rebalance are found. Sending is at-least-once: a due timer is sent again if the saga
has not cleared it after `RESEND_AFTER`; the command id (``<payment_id>:timer:<seq>``)
makes repeats harmless.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from agents.outbound import outbound
from orchestrator_app import metrics
from orchestrator_app.app import app
from orchestrator_app.domain.records import Command, CommandKind, Timer
from orchestrator_app.domain.saga import TimerKind, format_timestamp, requests_for, timer_of
from orchestrator_app.topics import commands, send_command
from tables.keyed import owned_partitions, partition_of, recovering
from tables.payments import live_rows, pending_timers
from tables.timers import due_index

__all__ = ["TICK_SECONDS", "fire_due_timers", "rebuild", "timer_command"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
#: How often the record of recently sent timers is pruned.
PRUNE_SECONDS = 5.0
#: Resend a due timer that is still pending after this long (the first send was lost).
RESEND_AFTER = 10.0

#: Timers of payments waiting for a NATS answer (their call is re-issued on a new owner).
WAITING_FOR_ANSWER = frozenset({TimerKind.DEADLINE.value, TimerKind.REFUND_DEADLINE.value})

_sent: dict[tuple[str, int], float] = {}
_last_prune = 0.0
#: The active partitions the due index was last built for, and after which rebalance.
_built_for: frozenset[int] = frozenset()
_built_at = -1


def rebuild(owned: frozenset[int]) -> int:
    """Re-arm the due index from the table: only timers of partitions owned right now.

    For partitions that are new here (start-up, a rebalance), also re-issue the NATS call of
    every payment still waiting for an answer: a call in flight on the previous owner (or
    before a crash) is gone. Returns how many calls were re-issued.
    """
    global _built_for, _built_at
    new = owned - _built_for
    started = time.monotonic()
    found = {timer.payment_id: timer for timer in pending_timers(owned)}
    # The saga's newest rows may not be in the table yet (written once their effects are on
    # the broker): theirs are the timers that count.
    for row in live_rows.rows_in(owned):
        latest = timer_of(row)
        if latest is None:
            found.pop(row.payment_id, None)
        else:
            found[row.payment_id] = latest
    pending = list(found.values())
    due_index.rebuild(pending)
    _built_for, _built_at = owned, app.rebalancing_count
    log.info("due index rebuilt: %d pending timers on %d partitions in %.2f s",
             len(pending), len(owned), time.monotonic() - started)
    reissued = 0
    for timer in pending:
        if timer.kind in WAITING_FOR_ANSWER and partition_of(timer.payment_id) in new:
            payment = live_rows.get(timer.payment_id)
            if payment is not None:
                fraud, process = requests_for(payment)
                outbound.start_all(fraud, process)
                reissued += len(fraud) + len(process)
    if reissued:
        metrics.calls_reissued.inc(reissued)
        log.info("re-issued %d NATS calls of payments on newly owned partitions", reissued)
    return reissued


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
    """Send a TIMER command for every due timer not sent recently; return how many.

    Timers fire only for partitions this worker owns: the due index is rebuilt from the
    table once each rebalance is over (Faust revokes every partition at the start of one,
    and another worker may have changed the rows in between).
    """
    global _last_prune
    if recovering():
        return 0  # ownership is moving: re-arm from the table once it is recovered
    owned = owned_partitions()
    if owned != _built_for or app.rebalancing_count != _built_at:
        rebuild(owned)
    if clock - _last_prune >= PRUNE_SECONDS:
        _last_prune = clock
        for ident in [i for i in _sent if clock - _sent[i] > 2 * RESEND_AFTER]:
            del _sent[ident]
    fired = 0
    now = format_timestamp(datetime.fromtimestamp(clock, UTC))
    for timer in due_index.due(clock):
        ident = (timer.payment_id, timer.seq)
        sent_at = _sent.get(ident)
        if sent_at is not None and clock - sent_at < RESEND_AFTER:
            continue
        send_command(timer_command(timer, now))
        metrics.timers_fired.labels(kind=timer.kind).inc()
        _sent[ident] = clock
        fired += 1
    return fired


@app.on_partitions_revoked.connect
async def forget_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    """Timers of revoked partitions stop firing at revocation, not at the next rescan; the
    saga's decoded rows are forgotten (see `tables.payments.LiveRows`)."""
    gone = {tp.partition for tp in revoked if tp.topic == commands.get_topic_name()}
    if gone:
        due_index.keep(lambda timer: partition_of(timer.payment_id) not in gone)
        live_rows.clear()  # the next owner of a revoked partition writes its rows


@app.timer(interval=TICK_SECONDS)
async def timer_tick() -> None:
    try:
        fire_due_timers(time.time())
    except Exception:  # a bad tick must not stop the timers; the next tick retries
        log.exception("timer tick failed")
