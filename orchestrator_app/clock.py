"""The wall clock, in the one timestamp form every contract uses (the domain stays pure)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from orchestrator_app.domain.saga import format_timestamp

__all__ = ["now"]

#: The last millisecond formatted, and its text: a busy worker asks several times per
#: payment, mostly within the same millisecond (~1 % of its CPU went to formatting).
_last: tuple[int, str] = (-1, "")


def now() -> str:
    """Now, as ISO 8601 UTC with milliseconds and a ``Z``."""
    global _last
    milliseconds = time.time_ns() // 1_000_000
    if milliseconds != _last[0]:
        seconds, millis = divmod(milliseconds, 1000)
        moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
        _last = (milliseconds, format_timestamp(moment))
    return _last[1]
