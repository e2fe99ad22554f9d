"""NATS request/reply client as a Faust service (connect on start, drain on stop).

Why a wrapper: agents must see exactly three outcomes of a request — a reply, a timeout, or
"nobody can answer" — and never a NATS-specific exception type.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import faust
import nats.aio.client
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from orchestrator_app import telemetry

__all__ = ["CoalescingClient", "NatsClient", "RequestTimeout", "ServiceUnavailable"]

log = logging.getLogger(__name__)


class RequestTimeout(Exception):
    """No reply within the timeout: the other side may still act on the request."""


class ServiceUnavailable(Exception):
    """No responder, or no connection: the request certainly was not handled."""


def _token_hex(nbytes: int) -> str:
    """`secrets.token_hex` without the system call: what nats-py appends to a request's
    inbox after its NUID (already unique per request) needs no cryptographic strength, and
    reading ``/dev/urandom`` for two bytes per request cost ~1.5 % of a busy worker."""
    return f"{random.getrandbits(8 * nbytes):0{2 * nbytes}x}"


nats.aio.client.token_hex = _token_hex


class CoalescingClient(Client):  # type: ignore[misc]
    """nats-py's client, whose flusher waits `flush_delay` seconds before each write.

    Why: nats-py writes its pending commands as soon as its flusher task runs, and on a busy
    worker that is almost every loop turn, with one or two requests pending (strace at peak:
    a ``writev`` of two ``PUB``s). Every write wakes the NATS server, and every one it
    forwards wakes the responder: at peak the server and the simulator spent 2-4 times the
    CPU per payment they spent for the baselines, whose requests leave in bunches. Waiting a
    moment lets the requests of many payments share one write (at most `flush_delay` more
    per request). Only while other requests await their replies, as Nagle's algorithm holds
    data only while some is unacknowledged: a lone request (a quiet worker) goes at once.
    """

    flush_delay = 0.0
    _held_queue: object = None

    async def _flusher(self) -> None:
        # A new flusher task starts at every (re)connect, on the queue made at connect():
        # wrap each queue once, or every reconnect would add another hold.
        queue = self._flush_queue
        delay = self.flush_delay
        if queue is not None and delay > 0 and queue is not self._held_queue:
            self._held_queue = queue
            take = queue.get

            async def take_then_wait() -> asyncio.Future[None]:
                future = await take()
                if len(self._resp_map) > 1:  # others await replies: more requests coming
                    await asyncio.sleep(delay)
                return future

            queue.get = take_then_wait  # type: ignore[method-assign]
        await super()._flusher()


class NatsClient(faust.Service):
    """One NATS connection per worker, (re)connecting forever in the background.

    Every request is bounded by its timeout, whatever NATS does: down at start (the request
    waits for the connection only as long as its timeout allows), reconnecting, draining,
    closed. A worker never blocks on NATS, and callers see one of three outcomes.
    """

    def __init__(self, url: str, name: str = "payment-orchestrator", flush_delay: float = 0.0,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._flush_delay = flush_delay
        self._servers = [u.strip() for u in url.split(",") if u.strip()]
        self._name = name
        self._nc: Client | None = None
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Future[None] | None = None
        self._last_error_log = 0.0

    async def on_start(self) -> None:
        self._ensure_connecting()

    def _ensure_connecting(self) -> None:
        # In the background: a NATS that is down must not keep the worker from starting.
        if self._connect_task is None:
            self._connect_task = asyncio.ensure_future(self._connect_forever())

    async def _connect_forever(self) -> None:
        delay = 0.2
        while self._nc is None:
            try:
                client = CoalescingClient()
                client.flush_delay = self._flush_delay
                await client.connect(
                    servers=self._servers,
                    name=self._name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._nc = client
            except Exception as exc:  # nats-py raises several kinds while NATS is down
                await self._on_error(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._connected.set()
        log.info("connected to NATS")

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
                await asyncio.wait_for(self._nc.drain(), 2.0)
            except (NatsError, TimeoutError, OSError):  # closing anyway
                await self._nc.close()

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """Send `payload`, return the reply body, or raise one of our two exceptions.

        The whole call — waiting for a connection included — takes at most `timeout`.
        """
        self._ensure_connecting()
        deadline = time.monotonic() + timeout
        if self._nc is None:
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except TimeoutError:
                raise ServiceUnavailable("NATS not connected") from None
        nc = self._nc
        assert nc is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"no reply on {subject} within {timeout}s")
        try:
            # W3C trace context of the caller's span, when tracing is on (the responder
            # continues the payment's trace).
            headers = (telemetry.headers() or None) if telemetry.enabled() else None
            # A deadline on this task, not wait_for: that ran the request as a task of its
            # own, one more per call (two calls a payment).
            async with asyncio.timeout(remaining + 0.5):
                message = await nc.request(subject, payload, timeout=remaining,
                                           headers=headers)
        except NoRespondersError:
            raise ServiceUnavailable(f"no responder on {subject}") from None
        except (NatsTimeout, TimeoutError):
            raise RequestTimeout(f"no reply on {subject} within {timeout}s") from None
        except (ConnectionClosedError, NoServersError, OSError, NatsError) as exc:
            raise ServiceUnavailable(f"NATS connection problem: {exc.__class__.__name__}") from None
        return bytes(message.data)
