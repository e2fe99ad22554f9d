"""Our own subcommands of the ``payment-orchestrator`` CLI (Faust's CLI hosts them)."""

from __future__ import annotations

from typing import Any

from faust.cli import AppCommand

from orchestrator_app.app import app, settings
from orchestrator_app.schema import migrate as run_migrations

__all__ = ["migrate"]


@app.command()
async def migrate(self: AppCommand) -> Any:
    """Apply pending database migrations (safe to run from several replicas at once)."""
    applied = await run_migrations(settings.database_url)
    if applied:
        for name in applied:
            self.say(f"applied {name}")
    else:
        self.say("database schema is up to date")
