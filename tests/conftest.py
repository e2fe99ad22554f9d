"""Shared fixtures. Servers come from `tests.stack_plugin` (started only when a test asks)."""

from __future__ import annotations

pytest_plugins = ["tests.stack_plugin", "tests.workers"]
