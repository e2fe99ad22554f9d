"""What the worker creates on the broker, and when it refuses to start (no broker needed)."""

from __future__ import annotations

import pytest

from orchestrator_app.config import Settings, load_settings
from orchestrator_app.kafka_admin import TooFewBrokers, check_brokers, wanted_topics


def settings(**env: str) -> Settings:
    return load_settings(environ={"APP_ID": "po", "TOPIC_PREFIX": "x.", **env}, required=())


def test_every_topic_gets_min_insync_changelogs_and_the_leader_topic_included() -> None:
    wanted = wanted_topics(settings(TOPIC_MIN_INSYNC_REPLICAS="2"))
    assert wanted["po-payments-changelog"] == (
        4, {"min.insync.replicas": "2", "cleanup.policy": "compact"})
    assert wanted["po-__assignor-__leader"] == (1, {"min.insync.replicas": "2"})
    assert wanted["x.orchestrator-commands"] == (4, {"min.insync.replicas": "2"})
    assert all(configs["min.insync.replicas"] == "2" for _, configs in wanted.values())
    assert len(wanted) == 7 + 2  # the named topics, the changelog, Faust's leader topic


def test_enough_brokers_says_nothing() -> None:
    assert check_brokers(settings(), 3, ["a"]) is None
    assert check_brokers(settings(TOPIC_REPLICATION_FACTOR="1",
                                  TOPIC_MIN_INSYNC_REPLICAS="1"), 1, ["a"]) is None


def test_too_few_brokers_to_create_topics_is_one_clear_line() -> None:
    with pytest.raises(TooFewBrokers) as info:
        check_brokers(settings(), 1, ["x.payment.created", "x.orchestrator-commands"])
    line = str(info.value)
    assert "\n" not in line
    assert "1 live broker," in line and "TOPIC_REPLICATION_FACTOR=3" in line
    assert "at most 1" in line


def test_existing_topics_with_a_broker_down_only_warn() -> None:
    # A rolling restart or one broker lost: a worker must still (re)start.
    warning = check_brokers(settings(), 2, [])
    assert warning and "under-replicated" in warning
    warning = check_brokers(settings(), 1, [])
    assert warning and "TOPIC_MIN_INSYNC_REPLICAS=2" in warning
