"""Fixtures of the fault-injection suite: private, restartable servers (never the session's
servers, which other tests share: these tests stop theirs mid-test)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_app.schema import migrate
from tests.faults.servers import PrivateNats, PrivatePostgres


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL of this test only; the test may stop and start it."""
    pg = PrivatePostgres(tmp_path)
    try:
        pg.start()
        asyncio.run(migrate(pg.url))
        yield pg
    finally:
        pg.close()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A nats-server of this test only; the test may stop and start it (same port)."""
    server = PrivateNats(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.close()
