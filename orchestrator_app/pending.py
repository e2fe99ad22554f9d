"""Outcomes of API commands, awaited by the HTTP handler that sent them.

The replica that answers a command request owns the payment's partition, so the saga agent
that applies the command runs in the same process. The handler registers the command id,
sends the command, and waits briefly for the saga's verdict: 202 only for a command that
was applied, 409 for one the saga refused (e.g. it raced another command).
"""

from __future__ import annotations

import asyncio

__all__ = ["Verdict", "register", "resolve"]

#: (applied, reason)
Verdict = tuple[bool, str]

_waiting: dict[str, asyncio.Future[Verdict]] = {}


def register(command_id: str) -> asyncio.Future[Verdict]:
    future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    _waiting[command_id] = future
    future.add_done_callback(lambda _: _waiting.pop(command_id, None))
    return future


def resolve(command_id: str, applied: bool, reason: str) -> None:
    """Called by the saga agent for every command; cheap when nobody waits."""
    future = _waiting.pop(command_id, None)
    if future is not None and not future.done():
        future.set_result((applied, reason))
