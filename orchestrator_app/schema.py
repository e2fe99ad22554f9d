"""Schema migrations: apply ``migrations/NNN_*.sql`` in order, once, safely in parallel.

Why our own small runner and not a framework: the schema is a handful of plain SQL files
that DBAs review as SQL; we need ordering, a record of what ran, a checksum so an edited
applied file is caught, and an advisory lock so two replicas starting together do not race.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationError", "discover", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: Arbitrary constant naming "the migration lock" for pg_advisory_lock.
_LOCK_ID = 0x5041594D454E54  # "PAYMENT"
_FILE = re.compile(r"^(\d{3,})_[A-Za-z0-9_]+\.sql$")

_TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations on disk and in the database disagree, or a file is misnamed."""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} not found")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: name must look like 001_description.sql")
        found.append(Migration(match.group(1), path, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the file names applied (empty when up to date)."""
    migrations = discover(directory)
    conn = await asyncpg.connect(database_url)
    try:
        # Session-level lock: a second runner waits here, then finds nothing to do.
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(_TRACKING_TABLE)
            rows = await conn.fetch("SELECT version, filename, checksum FROM schema_migrations")
            applied = {row["version"]: row for row in rows}
            done: list[str] = []
            for migration in migrations:
                row = applied.get(migration.version)
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} changed after it was applied "
                            f"(as {row['filename']}); add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, filename, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.path.name,
                        migration.checksum,
                    )
                done.append(migration.path.name)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()
