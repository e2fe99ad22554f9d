"""Shared fixtures. Servers come from `tests.stack_plugin` (started only when a test asks)."""

from __future__ import annotations

from orchestrator_app.domain import records

pytest_plugins = ["tests.stack_plugin", "tests.workers"]

# Every record the tests' own process builds with `trusted` is built by the coercing
# constructor too and must come out the same (the saga property tests drive every path).
records.CHECK_TRUSTED = True
