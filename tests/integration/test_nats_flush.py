"""The NATS client's held flush (``NATS_FLUSH_DELAY_MS``) on a real server: requests made
while others await replies leave in one write; a lone request is never held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from orchestrator_app.clients.nats import CoalescingClient, NatsClient

pytestmark = pytest.mark.integration

HELD = 30.0  # far longer than any test waits: a held write would show as a timeout


@pytest.fixture
async def silent_responder(nats_url: str) -> AsyncIterator[Client]:
    """Subscribed to ``flush.silent`` and never answering: requests stay outstanding."""
    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    nc = Client()
    await nc.connect(servers=[nats_url])
    await nc.subscribe("flush.silent")
    await nc.subscribe("flush.echo", cb=echo)
    await nc.flush()
    try:
        yield nc
    finally:
        await nc.close()


async def test_requests_made_while_others_wait_share_one_write(
        nats_url: str, silent_responder: Client) -> None:
    client = CoalescingClient()
    client.flush_delay = 0.5
    await client.connect(servers=[nats_url])
    writes: list[bytes] = []
    try:
        transport = client._transport
        assert transport is not None
        original = transport.writelines

        def record(payload: list[bytes]) -> None:
            writes.append(b"".join(payload))
            original(payload)

        transport.writelines = record  # type: ignore[method-assign]
        first = asyncio.ensure_future(client.request("flush.silent", b"first", timeout=5))
        for _ in range(3):
            await asyncio.sleep(0)  # loop turns: unheld, the first request is written now
        assert any(b"first" in w for w in writes)  # alone: not held

        later = [asyncio.ensure_future(client.request("flush.silent", f"later-{i}".encode(),
                                                      timeout=5)) for i in range(3)]
        for i in range(3):  # in three loop turns: unheld, each would be its own write
            await asyncio.sleep(0)
            later.append(asyncio.ensure_future(
                client.request("flush.silent", f"turn-{i}".encode(), timeout=5)))
        async with asyncio.timeout(5):
            while not any(b"turn-2" in w for w in writes):
                await asyncio.sleep(0.05)
        carrying = [w for w in writes if b"later-" in w or b"turn-" in w]
        assert len(carrying) == 1, [w[:60] for w in carrying]  # all six in one write
        assert all(f"later-{i}".encode() in carrying[0] for i in range(3))
        assert all(f"turn-{i}".encode() in carrying[0] for i in range(3))
        for task in [first, *later]:
            task.cancel()
        await asyncio.gather(first, *later, return_exceptions=True)
    finally:
        await client.close()


async def test_a_lone_request_is_answered_without_waiting(
        nats_url: str, silent_responder: Client) -> None:
    client = NatsClient(nats_url, flush_delay=HELD)
    await client.start()
    try:
        # Held for 30 s, a 5 s request would time out: alone, it is written at once.
        for i in range(3):
            assert await client.request("flush.echo", f"ping-{i}".encode(), 5.0) == \
                f"ping-{i}".encode()
    finally:
        await client.stop()
