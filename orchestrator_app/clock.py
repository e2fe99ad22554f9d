"""The wall clock, in the one timestamp form every contract uses (the domain stays pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator_app.domain.saga import format_timestamp

__all__ = ["now"]


def now() -> str:
    """Now, as ISO 8601 UTC with milliseconds and a ``Z``."""
    return format_timestamp(datetime.now(UTC))
