"""Processor agent: NATS ``payment.process`` per processing attempt, many in flight.

The request carries ``attempt``: together with ``payment_id`` it is the idempotency key a
processor should use, since a redelivered request is sent again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.clients.nats import RequestTimeout, ServiceUnavailable
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Command, ProcessRequest
from orchestrator_app.domain.replies import process_failure, process_result, process_wire_body
from orchestrator_app.domain.saga import format_timestamp
from orchestrator_app.resources import nats_client
from orchestrator_app.topics import commands, processor_requests

__all__ = ["PROCESS_SUBJECT", "process_payment", "processor"]

PROCESS_SUBJECT = "payment.process"


async def process_payment(request: ProcessRequest) -> Command:
    body = codec.dumps(process_wire_body(request))
    started = time.perf_counter()
    try:
        reply = await nats_client.request(PROCESS_SUBJECT, body, settings.processor_timeout)
    except RequestTimeout:
        return process_failure(request, "timeout", "processor did not answer in time", True,
                               _now())
    except ServiceUnavailable as exc:
        return process_failure(request, "connection_error", str(exc), True, _now())
    finally:
        metrics.processor_duration.observe(time.perf_counter() - started)
    return process_result(request, reply, _now())


def _now() -> str:
    return format_timestamp(datetime.now(UTC))


@app.agent(processor_requests, concurrency=settings.processor_concurrency)
async def processor(stream: Any) -> None:
    async for request in stream:
        command = await process_payment(request)
        commands.send_soon(key=command.payment_id, value=command)
