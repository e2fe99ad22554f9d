"""Group-wide gauges: payments per state, stuck payments, the success rate, dead-letter depth.

These describe the whole consumer group, not one worker, so exactly one worker reports them:
the one that owns partition 0 of the commands topic (the *reporter*; it moves with the
partition at a rebalance). Summing a gauge over workers therefore gives the group's value.
Every ``CENSUS_SECONDS`` the reporter asks PostgreSQL (the sink's copy, which trails the live
state by the sink lag, `payment_sink_lag_records`) and the broker (dead-letter topics'
offsets); scrapes read the last answer, never the database.

* ``payment_current_state_gauge{state}``: payments in each state (every state, 0 included);
* ``payment_waiting_oldest_seconds{state}``: for the states a payment passes through (not
  COMPLETED, REFUNDED, REJECTED, COMPENSATED), how long the oldest one has been there;
* ``payment_stuck{state}``: payments in such a state unchanged for ``STUCK_SECONDS``;
* ``payment_success_rate``: of the payments created in the last ``SUCCESS_WINDOW_SECONDS``
  that are settled (COMPLETED, REFUNDED, REJECTED, COMPENSATED), the share that succeeded
  (COMPLETED or REFUNDED); absent while none is settled;
* ``payment_dead_letter_topic_depth{topic}``: records on each dead-letter topic (end -
  beginning offsets, summed over partitions; ListOffsets, so on Tansu it can read a few
  records short — DESIGN §7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP
from prometheus_client.core import GaugeMetricFamily

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.clients.postgres import CONNECTION_ERRORS
from orchestrator_app.domain.state_machine import State
from orchestrator_app.resources import payment_store
from orchestrator_app.topics import commands

__all__ = [
    "CENSUS_SECONDS",
    "FINAL_STATES",
    "STUCK_SECONDS",
    "SUCCESS_WINDOW_SECONDS",
    "Census",
    "census_from_rows",
    "is_reporter",
    "latest",
]

log = logging.getLogger(__name__)

CENSUS_SECONDS = 5.0
DEAD_LETTER_SECONDS = 10.0
#: A payment waiting this long without a change counts as stuck.
STUCK_SECONDS = 60.0
SUCCESS_WINDOW_SECONDS = 15 * 60.0
#: States a payment normally stays in (COMPLETED can still be refunded, but does not wait).
FINAL_STATES = frozenset({"COMPLETED", "REFUNDED", "REJECTED", "COMPENSATED"})
SUCCEEDED = frozenset({"COMPLETED", "REFUNDED"})
#: Census answers older than this are not reported (the reporter lost the database).
MAX_AGE = 6 * CENSUS_SECONDS


@dataclass(frozen=True)
class Census:
    """One answer of the reporter: plain numbers (the dashboard's JSON uses it as is)."""

    taken_at: float
    states: dict[str, int]
    oldest_seconds: dict[str, float]
    stuck: dict[str, int]
    success_rate: float | None
    dead_letters: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at, "states": self.states,
            "oldest_seconds": self.oldest_seconds, "stuck": self.stuck,
            "success_rate": self.success_rate, "dead_letters": self.dead_letters,
        }


def census_from_rows(rows: Sequence[Any], taken_at: float,
                     dead_letters: dict[str, int]) -> Census:
    """Shape the database's census rows (pure)."""
    states = {state.value: 0 for state in State}
    oldest: dict[str, float] = {}
    stuck: dict[str, int] = {}
    succeeded = settled = 0
    for row in rows:
        state = row["current_state"]
        states[state] = int(row["payments"])
        if state in FINAL_STATES:
            settled += int(row["recent"])
            if state in SUCCEEDED:
                succeeded += int(row["recent"])
        else:
            oldest[state] = round(max(0.0, float(row["oldest_age_seconds"])), 3)
            stuck[state] = int(row["stale"])
    for state in states:
        if state not in FINAL_STATES:
            stuck.setdefault(state, 0)
    rate = round(succeeded / settled, 6) if settled else None
    return Census(taken_at, states, oldest, stuck, rate, dead_letters)


_latest: Census | None = None


def latest() -> Census | None:
    """The reporter's last census, if this worker is the reporter and it is fresh."""
    if _latest is None or not is_reporter() or time.time() - _latest.taken_at > MAX_AGE:
        return None
    return _latest


def is_reporter() -> bool:
    try:
        actives = app.assignor.assigned_actives()
    except (AttributeError, KeyError):
        return False
    return TP(commands.get_topic_name(), 0) in actives


def _dead_letter_topics() -> list[str]:
    names = settings.topics
    return [names.payment_created_dlq, names.dead_letters, names.sink_dlq]


async def _dead_letter_depths() -> dict[str, int]:
    tps = [TP(topic, partition) for topic in _dead_letter_topics()
           for partition in range(app.consumer.topic_partitions(topic)
                                  or settings.topic_partitions)]
    ends = await app.consumer.highwaters(*tps)
    starts = await app.consumer.earliest_offsets(*tps)
    depths = dict.fromkeys(_dead_letter_topics(), 0)
    for tp in tps:
        depths[tp.topic] += max(0, (ends.get(tp) or 0) - (starts.get(tp) or 0))
    return depths


@app.timer(interval=CENSUS_SECONDS)
async def take_census() -> None:
    global _latest
    if not is_reporter():
        _latest = None
        return
    try:
        rows = await payment_store.state_census(STUCK_SECONDS, SUCCESS_WINDOW_SECONDS)
    except CONNECTION_ERRORS as exc:
        log.warning("census: the payment database is not reachable (%s)",
                    exc.__class__.__name__)
        await payment_store.reset()
        return
    _latest = census_from_rows(rows, time.time(), _depths)


_depths: dict[str, int] = {}


@app.timer(interval=DEAD_LETTER_SECONDS)
async def count_dead_letters() -> None:
    """Dead-letter topic depths, on their own (slower) clock: offset requests for topics
    the consumer does not read can take seconds."""
    global _depths
    if not is_reporter():
        _depths = {}
        return
    try:
        _depths = await _dead_letter_depths()
    except Exception as exc:  # optional: keep the last answer
        log.warning("census: dead-letter offsets unavailable (%s)", exc.__class__.__name__)


class CensusCollector:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        census = latest()
        states = GaugeMetricFamily(
            "payment_current_state_gauge",
            "Payments in each state, group-wide (reported by one worker; from PostgreSQL).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "payment_waiting_oldest_seconds",
            "Age of the oldest payment waiting in each non-final state, group-wide.",
            labels=["state"],
        )
        stuck = GaugeMetricFamily(
            "payment_stuck",
            f"Payments in a non-final state unchanged for {STUCK_SECONDS:.0f} s, group-wide.",
            labels=["state"],
        )
        rate = GaugeMetricFamily(
            "payment_success_rate",
            "Share of the settled payments created in the last 15 minutes that succeeded "
            "(COMPLETED or REFUNDED), group-wide.",
        )
        depth = GaugeMetricFamily(
            "payment_dead_letter_topic_depth",
            "Records on each dead-letter topic, group-wide.",
            labels=["topic"],
        )
        if census is not None:
            for name, value in census.states.items():
                states.add_metric([name], value)
            for name, age in census.oldest_seconds.items():
                oldest.add_metric([name], age)
            for name, value in census.stuck.items():
                stuck.add_metric([name], value)
            if census.success_rate is not None:
                rate.add_metric([], census.success_rate)
            for topic, value in _depths.items():
                depth.add_metric([topic], value)
        yield from (states, oldest, stuck, rate, depth)


metrics.REGISTRY.register(CensusCollector())  # type: ignore[arg-type]
