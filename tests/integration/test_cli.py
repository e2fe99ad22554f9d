"""The real `payment-orchestrator` command: configuration errors end it with exit code 2."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.workers import CLI

GOOD = {
    "KAFKA_BROKERS": "127.0.0.1:9092",
    "DATABASE_URL": "postgresql://u:secret-pw@127.0.0.1:5432/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "NATS_URL": "nats://127.0.0.1:4222",
}


def _run(env_changes: dict[str, str | None], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in GOOD and not k.startswith(("PORT", "TOPIC_", "RETRY_", "FRAUD_"))}
    env.update(GOOD)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"KAFKA_BROKERS": None}, "KAFKA_BROKERS"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"REDIS_URL": None}, "REDIS_URL"),
        ({"NATS_URL": None}, "NATS_URL"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"KAFKA_BROKERS": "no-port-here"}, "KAFKA_BROKERS"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"FRAUD_CHECK_TIMEOUT_SECONDS": "-5"}, "FRAUD_CHECK_TIMEOUT_SECONDS"),
        ({"RETRY_MAX_ATTEMPTS": "three"}, "RETRY_MAX_ATTEMPTS"),
        ({"AUTO_PROCESS": "sometimes"}, "AUTO_PROCESS"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    changes: dict[str, str | None], variable: str
) -> None:
    result = _run(changes, "worker")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "secret-pw" not in result.stderr
    assert result.stdout == ""


def test_migrate_needs_only_the_database() -> None:
    result = _run({"KAFKA_BROKERS": None, "NATS_URL": None, "REDIS_URL": None,
                   "DATABASE_URL": "not a url"}, "migrate")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_help_needs_no_configuration() -> None:
    result = _run({k: None for k in GOOD}, "--help")
    assert result.returncode == 0
    assert "worker" in result.stdout and "migrate" in result.stdout
