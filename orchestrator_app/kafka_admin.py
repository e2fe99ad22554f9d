"""Create every topic before the worker subscribes, and wait until the broker shows them.

Why not leave it to Faust: it declares topics concurrently with subscribing and does not
wait for them to appear in the cluster metadata; a topic created a moment too late is
"ignored" by the consumer, and its agent silently consumes nothing (seen with a fresh
topic prefix on Apache Kafka). Talks Kafka protocol only (Apache Kafka or Tansu).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from orchestrator_app.config import Settings

__all__ = [
    "TooFewBrokers",
    "changelog_topics",
    "check_brokers",
    "ensure_topics",
    "leader_topic",
    "partition_count",
    "wanted_topics",
]

log = logging.getLogger(__name__)

#: Tables of the app; their changelog topics are compacted.
TABLES = ("payments",)


class TooFewBrokers(Exception):
    """The cluster has fewer live brokers than TOPIC_REPLICATION_FACTOR and topics are
    missing: they cannot be created (a misconfiguration, or a cluster too small)."""


def changelog_topics(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def leader_topic(settings: Settings) -> str:
    """Faust's group-leader topic (one partition, nothing written to it). Created here so
    that it gets our replication factor and ``min.insync.replicas`` like every other."""
    return f"{settings.app_id}-__assignor-__leader"


def wanted_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic the worker needs: name -> (partitions, topic configs)."""
    base = settings.topic_config
    wanted = {name: (settings.topic_partitions, dict(base)) for name in settings.topics.all()}
    wanted.update({name: (settings.topic_partitions, {**base, "cleanup.policy": "compact"})
                   for name in changelog_topics(settings)})
    wanted[leader_topic(settings)] = (1, dict(base))
    return wanted


def check_brokers(settings: Settings, live: int, missing: list[str]) -> str | None:
    """Raise `TooFewBrokers` when missing topics cannot get their replicas; return a warning
    when the topics exist but fewer brokers than their replicas are up (a broker down, a
    rolling restart: the worker starts, and writes need TOPIC_MIN_INSYNC_REPLICAS up)."""
    rf, isr = settings.topic_replication_factor, settings.topic_min_insync_replicas
    if live >= rf:
        return None
    if missing:
        raise TooFewBrokers(
            f"Kafka has {live} live broker{'s' if live != 1 else ''}, fewer than "
            f"TOPIC_REPLICATION_FACTOR={rf}: cannot create {len(missing)} topics; set "
            f"TOPIC_REPLICATION_FACTOR and TOPIC_MIN_INSYNC_REPLICAS to at most {live} "
            "(1 and 1 for a one-broker dev cluster) or start more brokers")
    if live < isr:
        return (f"Kafka has {live} live brokers, fewer than TOPIC_MIN_INSYNC_REPLICAS={isr}: "
                "writes are refused until brokers return")
    return (f"Kafka has {live} live brokers, fewer than TOPIC_REPLICATION_FACTOR={rf}: "
            "topics run under-replicated until the others return")


async def ensure_topics(settings: Settings, timeout: float = 60.0,
                        warn: Callable[[str], None] | None = None) -> list[str]:
    """Create the missing topics; return those created. Raises TimeoutError, TooFewBrokers.
    `warn` gets a line when fewer brokers than the replication factor are up."""
    wanted = wanted_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(settings.kafka_brokers), request_timeout_ms=10_000
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception as exc:  # aiokafka raises several kinds here
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka not reachable: {exc}") from exc
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        live = len((await admin.describe_cluster()).get("brokers") or [])
        warning = check_brokers(settings, live, missing)
        if warning:
            (warn or log.warning)(warning)
        for name in missing:
            partitions, configs = wanted[name]
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica was quicker
                await admin.create_topics([NewTopic(
                    name, num_partitions=partitions,
                    replication_factor=settings.topic_replication_factor,
                    topic_configs=configs,
                )])
        while True:
            existing = set(await admin.list_topics())
            if all(name in existing for name in wanted):
                break
            if time.monotonic() > deadline:
                absent = sorted(set(wanted) - existing)
                raise TimeoutError(f"topics not visible after {timeout}s: {absent}")
            await asyncio.sleep(0.2)
        if missing:
            log.info("created topics: %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def partition_count(settings: Settings, topic: str) -> int | None:
    """How many partitions `topic` has (None if it does not exist)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=list(settings.kafka_brokers), request_timeout_ms=10_000
    )
    await admin.start()
    try:
        for described in await admin.describe_topics([topic]):
            if described.get("topic") == topic and not described.get("error_code"):
                return len(described.get("partitions") or [])
        return None
    finally:
        await admin.close()
