"""The timer agent's in-memory due index (pure data structure; no broker)."""

from __future__ import annotations

from orchestrator_app.domain.records import Timer
from tables.timers import DueIndex


def timer(pid: str, due: float, seq: int = 1) -> Timer:
    return Timer(payment_id=pid, kind="retry", due=due, seq=seq)


def test_due_timers_stay_until_cleared_and_stale_ones_are_skipped() -> None:
    index = DueIndex()
    index.set(timer("a", 10))
    index.set(timer("b", 20))
    index.set(timer("a", 15, seq=2))  # replaces a's first timer
    assert index.due(12) == []  # a@10 is stale (seq 1)
    assert [t.payment_id for t in index.due(16)] == ["a"]
    assert [t.payment_id for t in index.due(16)] == ["a"]  # kept until the saga clears it
    index.discard("a")
    assert [t.payment_id for t in index.due(25)] == ["b"]
    assert len(index) == 1


def test_keep_drops_the_timers_of_revoked_partitions() -> None:
    index = DueIndex()
    for i in range(10):
        index.set(timer(f"p{i}", i))
    index.keep(lambda t: int(t.payment_id[1:]) % 2 == 0)  # "partitions" of odd ids revoked
    assert sorted(t.payment_id for t in index.due(100)) == ["p0", "p2", "p4", "p6", "p8"]
    index.rebuild([timer("x", 1)])
    assert [t.payment_id for t in index.due(100)] == ["x"]


def test_stale_entries_are_compacted_and_repeats_add_nothing() -> None:
    index = DueIndex()
    for i in range(5000):
        index.set(timer(f"p{i}", 1000 + i))
        index.set(timer(f"p{i}", 1000 + i))  # a redelivered command re-arms the same timer
        index.set(timer(f"p{i}", 2000 + i, seq=2))
        index.discard(f"p{i}")
    index.set(timer("last", 5))
    assert len(index) == 1
    assert len(index._heap) <= 2 * len(index) + 1024
    assert [t.payment_id for t in index.due(10_000)] == ["last"]
