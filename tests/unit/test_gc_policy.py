"""The worker's garbage-collector policy (`orchestrator_app.app.freeze_and_tune_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator_app.app import freeze_and_tune_gc
from orchestrator_app.config import ALL_SERVICES, ConfigError, load_settings


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


def test_threshold_setting_defaults_and_validates() -> None:
    env = {"KAFKA_BROKERS": "localhost:9092", "DATABASE_URL": "postgres://u:p@h/db",
           "REDIS_URL": "redis://h", "NATS_URL": "nats://h:4222"}
    assert load_settings(environ=env, required=ALL_SERVICES).gc_gen0_threshold == 10000
    assert load_settings(environ={**env, "GC_GEN0_THRESHOLD": "700"},
                         required=ALL_SERVICES).gc_gen0_threshold == 700
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ConfigError, match="GC_GEN0_THRESHOLD"):
            load_settings(environ={**env, "GC_GEN0_THRESHOLD": bad}, required=ALL_SERVICES)
