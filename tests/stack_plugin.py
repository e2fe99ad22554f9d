"""Pytest plugin: session fixtures backed by :class:`orchestrator_app.dev.stack.Stack`.

Loaded from tests/conftest.py with ``pytest_plugins = ["tests.stack_plugin"]``. Servers start
lazily, one fixture per server, so a test that needs only Postgres never pays for Kafka's JVM;
everything that was started is stopped at session end. Env overrides (KAFKA_BROKERS,
DATABASE_URL, REDIS_URL, NATS_URL) are honoured by the Stack itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from orchestrator_app.dev.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The session's Stack; starts nothing by itself."""
    with Stack() as s:
        yield s


@pytest.fixture(scope="session")
def kafka_brokers(stack: Stack) -> str:
    """Apache Kafka bootstrap servers (KAFKA_BROKERS if set, else a local KRaft node)."""
    return stack.broker("kafka")


@pytest.fixture(scope="session")
def tansu_brokers(stack: Stack) -> str:
    """Always a local Tansu: Tansu-specific tests must not run against another broker."""
    return stack.tansu()


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    """Admin URL (database ``postgres``); tests should use ``test_database_url``."""
    return stack.postgres()


@pytest.fixture(scope="session")
def redis_url(stack: Stack) -> str:
    return stack.redis()


@pytest.fixture(scope="session")
def nats_url(stack: Stack) -> str:
    return stack.nats()


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    """Unique per run, so topics left on a shared broker never collide with this run's."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="session")
def test_database_url(database_url: str) -> Iterator[str]:
    """A throwaway database ``test_<8 hex>`` for this session, dropped at the end.

    Sync fixture with its own short event loops, so it does not depend on
    pytest-asyncio's loop scope.
    """
    import asyncpg

    name = f"test_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str, *args: object) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    u = urlsplit(database_url)
    yield urlunsplit(u._replace(path=f"/{name}"))
    asyncio.run(admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = $1 AND pid <> pg_backend_pid()", name))
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}"'))
