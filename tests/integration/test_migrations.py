"""`payment-orchestrator migrate` against the real PostgreSQL, in a throwaway database."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from orchestrator_app.schema import MIGRATIONS_DIR, MigrationError, discover, migrate
from tests.workers import CLI

pytestmark = pytest.mark.integration

ALL = [m.path.name for m in discover()]


@pytest.fixture
async def fresh_db(database_url: str) -> AsyncIterator[str]:
    """An empty database per test: migrations must start from nothing."""
    name = f"mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )
    await admin.execute(f'DROP DATABASE "{name}"')
    await admin.close()


def _cli_migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BROKERS", "NATS_URL"}}
    env["DATABASE_URL"] = url
    return subprocess.run([CLI, "migrate"], env=env, capture_output=True, text=True,
                          timeout=120)


async def test_cli_applies_then_is_a_noop(fresh_db: str) -> None:
    first = _cli_migrate(fresh_db)
    assert first.returncode == 0, first.stderr
    for name in ALL:
        assert f"applied {name}" in first.stdout
    second = _cli_migrate(fresh_db)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout

    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch(
            "SELECT version, filename FROM schema_migrations ORDER BY version")
        assert [r["filename"] for r in rows] == ALL
        assert [r["version"] for r in rows] == [name[:3] for name in ALL]
        # The schema holds amounts exactly and enforces history (payment_id, version).
        await conn.execute(
            "INSERT INTO payment_states (payment_id, current_state, amount, currency,"
            " customer_id, merchant_id, version) VALUES ($1,'NEW',$2,'USD','c','m',1)",
            "p1", Decimal("99999999999.9999"),
        )
        assert await conn.fetchval("SELECT amount FROM payment_states") == Decimal(
            "99999999999.9999"
        )
        insert_history = (
            "INSERT INTO payment_state_history (payment_id, state, version, event_id)"
            " VALUES ('p1', 'NEW', 1, 'p1:1') ON CONFLICT (payment_id, version) DO NOTHING"
        )
        assert await conn.execute(insert_history) == "INSERT 0 1"
        assert await conn.execute(insert_history) == "INSERT 0 0"
        indexes = {r["indexname"] for r in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        assert {"idx_current_state", "idx_customer_id", "idx_updated_at",
                "idx_payment_id_history", "uq_history_payment_version"} <= indexes
    finally:
        await conn.close()


async def test_concurrent_runs_apply_once(fresh_db: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_db) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert applied == ALL
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(ALL)
    finally:
        await conn.close()


async def test_pending_files_apply_in_order_and_edits_are_caught(
    fresh_db: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    assert await migrate(fresh_db, directory) == ALL

    (directory / "900_add_note.sql").write_text(
        "ALTER TABLE payment_states ADD COLUMN note TEXT;"
    )
    (directory / "901_fill_note.sql").write_text("UPDATE payment_states SET note = 'x';")
    assert await migrate(fresh_db, directory) == ["900_add_note.sql", "901_fill_note.sql"]
    assert await migrate(fresh_db, directory) == []

    (directory / "900_add_note.sql").write_text("ALTER TABLE payment_states ADD COLUMN n2 INT;")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(fresh_db, directory)


async def test_failed_migration_leaves_nothing_half_applied(
    fresh_db: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_broken.sql").write_text(
        "CREATE TABLE t1 (id INT); CREATE TABLE t1 (id INT);"
    )
    with pytest.raises(asyncpg.DuplicateTableError):
        await migrate(fresh_db, directory)
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.t1')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()
