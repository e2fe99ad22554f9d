"""`orchestrator_app.continuity`: which input offsets an agent was not handed."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from hypothesis import given
from hypothesis import strategies as st

from orchestrator_app.continuity import Continuity, Skipped


def committed_at(offset: int | None) -> Callable[[Hashable], int | None]:
    def committed(_: Hashable) -> int | None:
        return offset
    return committed


def test_in_order_offsets_skip_nothing() -> None:
    c = Continuity()
    assert [c.seen("p0", o, 1, committed_at(10)) for o in range(10, 15)] == [None] * 5


def test_the_record_at_the_committed_offset_is_reported_when_the_next_comes_first() -> None:
    # The fault seen: taken over at committed 635, the stream began at 636.
    c = Continuity()
    assert c.seen("p1", 636, 3, committed_at(635)) == Skipped(635, 636)
    assert c.seen("p1", 637, 3, committed_at(635)) is None


def test_a_jump_reports_the_offsets_in_between() -> None:
    c = Continuity()
    c.seen("p0", 5, 1, committed_at(5))
    skipped = c.seen("p0", 9, 1, committed_at(5))
    assert skipped == Skipped(6, 9) and len(skipped) == 3


def test_partitions_are_independent() -> None:
    c = Continuity()
    assert c.seen("a", 0, 1, committed_at(0)) is None
    assert c.seen("b", 7, 1, committed_at(7)) is None
    assert c.seen("a", 1, 1, committed_at(0)) is None
    assert c.seen("b", 9, 1, committed_at(7)) == Skipped(8, 9)


def test_reading_again_from_an_earlier_offset_is_not_a_skip() -> None:
    c = Continuity()
    for o in range(20, 30):
        c.seen("p", o, 1, committed_at(20))
    assert c.seen("p", 20, 1, committed_at(20)) is None  # sought back: re-read
    assert c.seen("p", 21, 1, committed_at(20)) is None


def test_a_new_generation_starts_from_the_committed_offset() -> None:
    c = Continuity()
    for o in range(0, 50):
        c.seen("p", o, 1, committed_at(0))
    # Rebalanced: the group committed 40; the stream restarts there.
    assert c.seen("p", 40, 2, committed_at(40)) is None
    assert c.seen("q", 12, 2, committed_at(10)) == Skipped(10, 12)


def test_a_partition_never_committed_has_no_start_to_compare() -> None:
    c = Continuity()
    assert c.seen("p", 3, 1, committed_at(None)) is None
    assert c.seen("p", 5, 1, committed_at(None)) == Skipped(4, 5)


def test_the_committed_offset_is_asked_once_per_partition_and_generation() -> None:
    asked: list[Hashable] = []

    def committed(tp: Hashable) -> int | None:
        asked.append(tp)
        return 0

    c = Continuity()
    for o in range(100):
        c.seen("p", o, 1, committed)
    c.seen("p", 100, 2, committed)
    assert asked == ["p", "p"]


@given(committed=st.integers(0, 50), log_end=st.integers(0, 200), data=st.data())
def test_every_offset_is_delivered_or_reported(committed: int, log_end: int,
                                               data: st.DataObject) -> None:
    """Whatever a consumer drops (and whatever it reads twice after seeking back), each
    offset from the committed one up to the last delivered is delivered or reported."""
    end = committed + log_end
    c = Continuity()
    covered: set[int] = set()
    position, last, seeks = committed, None, 0
    while position < end:
        if data.draw(st.booleans()):  # delivered
            skipped = c.seen("p", position, 1, committed_at(committed))
            if skipped is not None:
                covered.update(range(skipped.start, skipped.end))
            covered.add(position)
            last = position
        if last is not None and seeks < 3 and data.draw(st.integers(0, 9)) == 0:
            seeks += 1  # sought back, and read again from there
            position = data.draw(st.integers(committed, last))
        position += 1
    if last is not None:
        assert set(range(committed, last + 1)) <= covered
