"""The saga's decoded rows of in-flight payments (no broker: the table is never read here)."""

from __future__ import annotations

from orchestrator_app.domain.records import Payment
from tables.payments import LiveRows

from .test_saga_properties import Clock, completed, create_command, fraud_ok, run


def in_flight(pid: str) -> Payment:
    p, _ = run(create_command(), fraud_ok(), clock=Clock())
    assert p.timer_kind is not None  # PROCESSING: waits for the processor
    return Payment(**{**p.asdict(), "payment_id": pid})


def test_rows_waiting_for_something_are_kept_and_finished_ones_dropped() -> None:
    rows = LiveRows()
    waiting = in_flight("a")
    rows.stored(waiting)
    assert rows.get("a") is waiting
    done = completed()
    assert done.timer_kind is None
    rows.stored(Payment(**{**done.asdict(), "payment_id": "a"}))
    assert len(rows) == 0  # read back from the table next time


def test_bounded_oldest_first_and_cleared_at_revocation() -> None:
    rows = LiveRows(limit=3)
    for pid in "abcd":
        rows.stored(in_flight(pid))
    assert len(rows) == 3 and rows.get("d") is not None and "a" not in rows._rows
    rows.clear()
    assert len(rows) == 0
