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

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from orchestrator_app.config import Settings

__all__ = ["changelog_topics", "ensure_topics", "partition_count"]

log = logging.getLogger(__name__)

#: Tables of the app; their changelog topics are compacted.
TABLES = ("payments",)


def changelog_topics(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


async def ensure_topics(settings: Settings, timeout: float = 60.0) -> list[str]:
    """Create the missing topics; return those created. Raises TimeoutError."""
    wanted = {name: {} for name in settings.topics.all()}
    wanted.update({name: {"cleanup.policy": "compact"} for name in changelog_topics(settings)})
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
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica was quicker
                await admin.create_topics([NewTopic(
                    name, num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                    topic_configs=wanted[name],
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
