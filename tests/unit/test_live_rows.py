"""The saga's write-behind rows (no broker: the writer is a list here)."""

from __future__ import annotations

from orchestrator_app.domain.records import Payment
from tables.payments import LiveRows

from .test_saga_properties import Clock, completed, create_command, fraud_ok, run


def with_id(p: Payment, pid: str, version: int | None = None) -> Payment:
    return Payment(**{**p.asdict(), "payment_id": pid,
                      **({"version": version} if version else {})})


def in_flight(pid: str, version: int | None = None) -> Payment:
    p, _ = run(create_command(), fraud_ok(), clock=Clock())
    assert p.timer_kind is not None  # PROCESSING: waits for the processor
    return with_id(p, pid, version)


def test_a_row_is_written_only_after_its_effects_and_every_earlier_version() -> None:
    written: list[tuple[str, int]] = []
    rows = LiveRows(write=lambda p: written.append((p.payment_id, p.version)))
    v3 = in_flight("a", 3)
    ack3 = rows.applied(v3, effects=2)
    v4 = in_flight("a", 4)
    ack4 = rows.applied(v4, effects=1)
    assert rows.get("a") is v4 and written == []  # read at once, written later
    ack4(None)
    assert written == []  # v3's effects are not all on the broker yet
    ack3(None)
    assert written == []
    ack3(None)
    assert written == [("a", 4)]  # both ready: the newest row only
    assert rows.pending() == 0 and rows.get("a") is v4  # still in flight: kept


def test_no_effects_written_at_once_and_finished_rows_dropped_once_written() -> None:
    written: list[str] = []
    rows = LiveRows(write=lambda p: written.append(p.payment_id))
    rows.applied(in_flight("b"), effects=0)
    assert written == ["b"]
    done = with_id(completed(), "c")
    assert done.timer_kind is None
    ack = rows.applied(done, effects=1)
    assert len(rows) == 2
    ack(None)
    assert written == ["b", "c"] and len(rows) == 1  # c: the table has it now


def test_bounded_but_never_losing_an_unwritten_row_and_cleared_at_revocation() -> None:
    rows = LiveRows(limit=2, write=lambda p: None)
    unwritten = rows.applied(in_flight("x"), effects=1)
    for pid in "abcd":
        rows.applied(in_flight(pid), effects=0)
    assert "x" in rows._rows and len(rows) <= 3  # the unwritten one is never evicted
    unwritten(None)
    rows.clear()
    assert len(rows) == 0 and rows.pending() == 0


def test_the_latest_unwritten_rows_of_owned_partitions_are_listed_for_the_timer_rebuild() -> None:
    from tables.keyed import partition_of

    rows = LiveRows(write=lambda p: None)
    unwritten = in_flight("r-1")
    rows.applied(unwritten, effects=1)  # not in the table yet: the rebuild must see it
    mine = partition_of("r-1")
    assert rows.rows_in({mine}) == [unwritten]
    assert rows.rows_in(set(range(64)) - {mine}) == []
