"""The dashboard's pure parts: percentiles like ``histogram_quantile``, merging workers."""

from __future__ import annotations

import pytest

from orchestrator_app.web.dashboard import group_view, percentile


def test_percentile_interpolates_within_a_bucket() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert percentile(buckets, 0.5) == pytest.approx(0.1)
    assert percentile(buckets, 0.7) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert percentile(buckets, 0.99) == pytest.approx(0.5 + 0.5 * 9 / 10)


def test_percentile_in_the_infinite_bucket_is_the_last_bound() -> None:
    assert percentile([(1.0, 1.0), (float("inf"), 10.0)], 0.9) == 1.0
    assert percentile([], 0.5) is None
    assert percentile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None


def _snap(worker: str, partitions: list[int], completed: float, census: bool) -> dict:
    return {
        "worker": worker, "taken_at": 1.0,
        "lag": [{"topic": "c", "partition": p, "records": p, "seconds": 0.0}
                for p in partitions],
        "processed": {"c": 10.0}, "entered": {"NEW": completed, "COMPLETED": completed},
        "histograms": {"saga_step": [("0.1", 1.0), ("+Inf", 2.0)]},
        "breakers": {"fraud": 0.0}, "sink_lag": {"0": 1.0}, "nats_in_flight": {},
        "census": {"states": {}, "success_rate": 0.9} if census else None,
    }


def test_group_view_merges_every_worker() -> None:
    view = group_view([_snap("a", [0, 1], 3.0, False), _snap("b", [2, 3], 4.0, True)],
                      {"c": "not reachable (ClientError)"}, "a", 5.0)
    assert [r["partition"] for r in view["lag"]] == [0, 1, 2, 3]
    assert view["funnel"]["created"] == 7.0 and view["funnel"]["completed"] == 7.0
    assert view["processed"] == {"c": 20.0}
    assert view["latency"]["saga_step"]["count"] == 4.0
    assert view["census"]["success_rate"] == 0.9
    assert view["sink_lag_records"] == 2.0
    assert [w["ok"] for w in view["workers"]] == [True, True, False]
    assert len(view["breakers"]) == 2
