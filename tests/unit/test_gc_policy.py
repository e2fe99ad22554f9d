"""The worker's garbage-collector policy and pause timing (`orchestrator_app.gcpolicy`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from orchestrator_app.gcpolicy import PauseTimer, freeze_and_tune_gc, observe_pauses


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_freezes_what_exists_and_sets_only_generation_0(restore_gc: None) -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    survivor = [object()]  # alive now: moved to the permanent generation
    freeze_and_tune_gc(12345)
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (12345, gen1, gen2)
    assert survivor



def _histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("pause_seconds", "test", ["generation"], buckets=(0.01, 0.1),
                     registry=registry), registry


def test_times_each_collection_by_its_generation() -> None:
    histogram, registry = _histogram()
    ticks = iter([10.0, 10.004, 20.0, 20.2])
    timer = PauseTimer(histogram, clock=lambda: next(ticks))
    timer("start", {"generation": 0})
    timer("stop", {"generation": 0, "collected": 3, "uncollectable": 0})
    timer("start", {"generation": 2})
    timer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})

    def sample(name: str, generation: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"generation": generation, **labels})

    assert sample("pause_seconds_count", "0") == 1
    assert sample("pause_seconds_sum", "0") == pytest.approx(0.004)
    assert sample("pause_seconds_bucket", "0", le="0.01") == 1
    assert sample("pause_seconds_count", "1") == 0
    assert sample("pause_seconds_count", "2") == 1
    assert sample("pause_seconds_bucket", "2", le="0.1") == 0  # 200 ms: only +Inf
    assert sample("pause_seconds_bucket", "2", le="+Inf") == 1


def test_observes_real_collections_once_installed() -> None:
    before = list(gc.callbacks)
    try:
        timer = observe_pauses()
        assert observe_pauses() is timer  # installed once per process
        assert sum(isinstance(c, PauseTimer) for c in gc.callbacks) == 1
        histogram, registry = _histogram()
        gc.callbacks.append(PauseTimer(histogram))
        gc.collect()
        assert registry.get_sample_value("pause_seconds_count", {"generation": "2"}) == 1
    finally:
        gc.callbacks[:] = before
