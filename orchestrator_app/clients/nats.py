"""NATS request/reply client as a Faust service (connect on start, drain on stop).

Why a wrapper: agents must see exactly three outcomes of a request — a reply, a timeout, or
"nobody can answer" — and never a NATS-specific exception type.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import nats
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

__all__ = ["NatsClient", "RequestTimeout", "ServiceUnavailable"]

log = logging.getLogger(__name__)


class RequestTimeout(Exception):
    """No reply within the timeout: the other side may still act on the request."""


class ServiceUnavailable(Exception):
    """No responder, or no connection: the request certainly was not handled."""


class NatsClient(faust.Service):
    """One NATS connection per worker, reconnecting forever once established."""

    def __init__(self, url: str, name: str = "payment-orchestrator", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._servers = [u.strip() for u in url.split(",") if u.strip()]
        self._name = name
        self._nc: Client | None = None
        self._connecting = asyncio.Lock()
        self._connect_task: asyncio.Future[Client] | None = None
        self._last_error_log = 0.0

    async def on_start(self) -> None:
        # In the background: a NATS that is down must not keep the worker from starting
        # (the state API still answers). Requests wait for the connection meanwhile, so
        # fraud checks and processing queue up instead of failing.
        self._connect_task = asyncio.ensure_future(self.connect())

    async def connect(self) -> Client:
        """Connect once; agents may call before Faust starts this service (it starts late)."""
        async with self._connecting:
            if self._nc is None:
                self._nc = await self._connect()
        return self._nc

    async def _connect(self) -> Client:
        nc = await nats.connect(
            servers=self._servers,
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=5,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        log.info("connected to NATS")
        return nc

    async def _on_error(self, exc: Exception) -> None:
        """One line, at most every 10 s (nats-py would log a traceback per attempt)."""
        now = time.monotonic()
        if now - self._last_error_log >= 10:
            self._last_error_log = now
            log.warning("NATS: %s: %s", exc.__class__.__name__, exc)

    async def _on_disconnected(self) -> None:
        log.warning("NATS disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected")

    async def on_stop(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except NatsError:  # closing anyway
                await self._nc.close()

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """Send `payload`, return the reply body, or raise one of our two exceptions."""
        nc = self._nc or await self.connect()
        try:
            message = await nc.request(subject, payload, timeout=timeout)
        except NoRespondersError:
            raise ServiceUnavailable(f"no responder on {subject}") from None
        except NatsTimeout:
            raise RequestTimeout(f"no reply on {subject} within {timeout}s") from None
        except (ConnectionClosedError, NoServersError, OSError) as exc:
            raise ServiceUnavailable(f"NATS connection problem: {exc.__class__.__name__}") from None
        return message.data
