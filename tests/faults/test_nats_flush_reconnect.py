"""The NATS client's held flush survives reconnects: nats-py starts a new flusher task on
every (re)connect over the same queue, and each must not add another hold."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from orchestrator_app.clients.nats import NatsClient
from tests.faults.servers import PrivateNats

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def holds(queue: asyncio.Queue[object]) -> int:
    """How many holds wrap the queue's ``get``."""
    get, count = queue.get, 0
    while not inspect.ismethod(get):
        count += 1
        get = inspect.getclosurevars(get).nonlocals["take"]
    assert get.__func__ is asyncio.Queue.get
    return count


async def test_reconnects_keep_one_hold(private_nats: PrivateNats) -> None:
    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    async def ask(payload: bytes) -> bytes:
        responder = Client()
        await responder.connect(servers=[private_nats.url], allow_reconnect=False)
        await responder.subscribe("echo", cb=echo)
        await responder.flush()
        try:
            return await client.request("echo", payload, 5.0)
        finally:
            await responder.close()

    client = NatsClient(private_nats.url, flush_delay=0.02)
    await client.start()
    try:
        async with asyncio.timeout(30):
            while client._nc is None:
                await asyncio.sleep(0.05)
        assert await ask(b"before") == b"before"
        nc = client._nc
        assert holds(nc._flush_queue) == 1
        for round_no in range(2):
            await asyncio.to_thread(private_nats.stop)
            async with asyncio.timeout(30):
                while nc.is_connected:
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(private_nats.start)
            async with asyncio.timeout(30):
                while not nc.is_connected:
                    await asyncio.sleep(0.1)
            assert await ask(f"after-{round_no}".encode()) == f"after-{round_no}".encode()
            assert holds(nc._flush_queue) == 1  # one hold, whatever the reconnects
    finally:
        await client.stop()
