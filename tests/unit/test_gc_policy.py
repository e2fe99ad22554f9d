"""The worker's garbage-collector policy (`orchestrator_app.app.freeze_and_tune_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator_app.app import freeze_and_tune_gc


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

