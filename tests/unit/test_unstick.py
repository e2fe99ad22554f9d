"""The stall guard's signature (`agents.unstick.undelivered`): fetched past what Faust
delivered. The guard itself runs in the worker; the kill fault test is where it matters."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from agents.unstick import undelivered
from orchestrator_app.app import settings

CREATED = settings.topics.payment_created
COMMANDS = settings.topics.commands


def _consumer(positions: dict[TP, int | None], read: dict[TP, int | None]) -> Any:
    def state_value(tp: TP) -> Any:
        position = positions[tp]
        return SimpleNamespace(has_valid_position=position is not None, position=position)

    assignment = SimpleNamespace(state_value=state_value)
    aio = SimpleNamespace(_subscription=SimpleNamespace(
        subscription=SimpleNamespace(assignment=assignment)))
    return SimpleNamespace(_thread=SimpleNamespace(_consumer=aio),
                           assignment=lambda: set(positions),
                           _read_offset=read, _committed_offset={})


def test_fetched_but_never_delivered_is_reported() -> None:
    stuck, fresh = TP(CREATED, 1), TP(CREATED, 3)
    consumer = _consumer({stuck: 1235, fresh: 0}, {stuck: None, fresh: None})
    assert undelivered(consumer) == {stuck: (None, 1235)}


def test_delivered_up_to_the_position_is_not_reported() -> None:
    caught_up, behind = TP(COMMANDS, 0), TP(COMMANDS, 2)
    consumer = _consumer({caught_up: 501, behind: 900}, {caught_up: 500, behind: 500})
    assert undelivered(consumer) == {behind: (500, 900)}


def test_changelogs_and_positions_unknown_are_ignored() -> None:
    changelog, unknown = TP("x-payments-changelog", 0), TP(CREATED, 2)
    consumer = _consumer({changelog: 999, unknown: None}, {})
    assert undelivered(consumer) == {}


def test_no_consumer_thread_yet_reports_nothing() -> None:
    consumer = SimpleNamespace(_thread=None, assignment=lambda: set())
    assert undelivered(consumer) == {}
