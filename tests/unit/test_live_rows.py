"""The saga's write-behind rows (no broker: the writer is a list here)."""

from __future__ import annotations

import asyncio

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


def test_released_versions_wait_for_the_delay_and_only_the_newest_is_written() -> None:
    async def scenario() -> None:
        written: list[tuple[str, int]] = []
        rows = LiveRows(write=lambda p: written.append((p.payment_id, p.version)), delay=0.05)
        rows.applied(in_flight("d", 2), effects=1)(None)
        rows.applied(in_flight("d", 3), effects=0)
        done = with_id(completed(), "d")
        rows.applied(done, effects=1)(None)
        assert written == [] and rows.released() == 1  # three versions, one waiting row
        assert rows.get("d") is done  # read at once all the same
        await asyncio.sleep(0.12)
        assert written == [("d", done.version)] and rows.released() == 0
        assert len(rows) == 0  # finished and written: the table has it

        rows.applied(in_flight("e", 2), effects=0)
        rows.write_released()  # the flush does not wait for the delay
        assert written[-1] == ("e", 2) and rows.released() == 0
        rows.applied(in_flight("f", 2), effects=0)
        rows.clear()  # revoked: the next owner writes it
        await asyncio.sleep(0.08)
        assert written[-1] == ("e", 2) and rows.released() == 0

    asyncio.run(scenario())


def test_an_unwritten_released_row_is_never_evicted() -> None:
    async def scenario() -> None:
        rows = LiveRows(limit=1, write=lambda p: None, delay=60)
        for pid in "abc":
            rows.applied(in_flight(pid), effects=0)
        rows.write_released()
        assert len(rows) == 1  # written rows beyond the bound are read back from the table
        waiting = in_flight("w")
        rows.applied(waiting, effects=0)  # released, waiting for the delay
        unacknowledged = in_flight("x")
        rows.applied(unacknowledged, effects=1)
        rows._evict()
        assert rows.get("w") is waiting and rows.get("x") is unacknowledged
        rows.clear()

    asyncio.run(scenario())
