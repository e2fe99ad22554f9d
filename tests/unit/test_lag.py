"""The time-lag interpolation (`lag.LagHistory`) and the census shaping (pure)."""

from __future__ import annotations

import pytest

from orchestrator_app.census import census_from_rows
from orchestrator_app.lag import LagHistory


def test_nothing_pending_is_zero_seconds() -> None:
    history = LagHistory()
    history.add(100.0, 10)
    assert history.seconds_behind(10, 10, 200.0) == 0.0


def test_age_is_interpolated_between_samples() -> None:
    history = LagHistory()
    history.add(100.0, 10)  # offsets 0..9 exist at t=100
    history.add(110.0, 20)  # 10 more arrived by t=110: offset 10 at ~t=101
    assert history.seconds_behind(10, 20, 120.0) == pytest.approx(19.0)
    assert history.seconds_behind(15, 20, 120.0) == pytest.approx(14.0)


def test_age_grows_while_held_and_first_sample_bounds_it() -> None:
    history = LagHistory()
    history.add(50.0, 5)  # already behind at the first sample: at least that old
    assert history.seconds_behind(0, 5, 60.0) == pytest.approx(10.0)
    assert history.seconds_behind(0, 5, 70.0) == pytest.approx(20.0)


def test_prune_keeps_the_interpolation_bound() -> None:
    history = LagHistory()
    for t, end in [(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 10)]:
        history.add(t, end)
    history.prune(3)
    assert history.seconds_behind(3, 10, 5.0) == pytest.approx(5.0 - (3.0 + 1 / 7))


def test_truncated_topic_restarts_history() -> None:
    history = LagHistory()
    history.add(1.0, 100)
    history.add(2.0, 3)
    assert history.seconds_behind(0, 3, 5.0) == pytest.approx(3.0)


def test_census_shape() -> None:
    rows = [
        {"current_state": "COMPLETED", "payments": 8, "stale": 8, "recent": 6,
         "oldest_age_seconds": 500.0},
        {"current_state": "REJECTED", "payments": 2, "stale": 0, "recent": 2,
         "oldest_age_seconds": 1.0},
        {"current_state": "FRAUD_CHECK", "payments": 3, "stale": 1, "recent": 3,
         "oldest_age_seconds": 61.5},
    ]
    census = census_from_rows(rows, 1.0, {"dlq": 4})
    assert census.states["COMPLETED"] == 8 and census.states["NEW"] == 0
    assert census.oldest_seconds == {"FRAUD_CHECK": 61.5}
    assert census.stuck["FRAUD_CHECK"] == 1 and census.stuck["PROCESSING"] == 0
    assert "COMPLETED" not in census.stuck
    assert census.success_rate == 0.75
    assert census_from_rows([], 1.0, {}).success_rate is None
