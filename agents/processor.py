"""Processing and refund attempts: NATS ``payment.process`` / ``payment.refund``, turned
into a command.

Started by the saga worker as background tasks (`agents.outbound`). The request carries
``attempt``; ``payment_id`` is the idempotency key a processor must use, since a request can
be sent again after a crash or a rebalance. While the processor breaker is open, nothing is
sent: the payment fails retryably with ``retry_after`` and the saga waits that long,
without spending its retry budget.
"""

from __future__ import annotations

import logging
import time

from orchestrator_app import clock, metrics
from orchestrator_app.app import settings
from orchestrator_app.breakers import processor_breaker
from orchestrator_app.clients.nats import RequestTimeout, ServiceUnavailable
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Command, Operation, ProcessRequest
from orchestrator_app.domain.replies import process_failure, process_result, process_wire_body
from orchestrator_app.resources import nats_client

__all__ = ["PROCESS_SUBJECT", "REFUND_SUBJECT", "process_payment"]

PROCESS_SUBJECT = "payment.process"
REFUND_SUBJECT = "payment.refund"

log = logging.getLogger(__name__)


async def process_payment(request: ProcessRequest) -> Command:
    """The attempt's outcome as a command; never waits longer than the request timeout.

    Once the breaker let the call through, exactly one of success / failure is recorded on
    every path (a cancelled or crashed call too): a half-open trial is always released.
    """
    refund = request.operation == Operation.REFUND
    subject, timeout = (
        (REFUND_SUBJECT, settings.refund_timeout) if refund
        else (PROCESS_SUBJECT, settings.processor_timeout)
    )
    if not processor_breaker.allow():
        return process_failure(request, "circuit_open", "processor circuit breaker is open",
                               True, clock.now(), retry_after=processor_breaker.retry_after())
    settled = False
    started = time.perf_counter()
    try:
        body = codec.dumps(process_wire_body(request))
        try:
            reply = await nats_client.request(subject, body, timeout)
        except RequestTimeout:
            processor_breaker.failure()
            settled = True
            return process_failure(request, "timeout", "processor did not answer in time",
                                   True, clock.now())
        except ServiceUnavailable as exc:
            processor_breaker.failure()
            settled = True
            return process_failure(request, "connection_error", str(exc), True, clock.now())
        command = process_result(request, reply, clock.now())
        if command.error_code == "invalid_reply":
            processor_breaker.failure()
        else:  # an answer, even a decline, means the processor works
            processor_breaker.success()
        settled = True
        return command
    finally:
        if not settled:
            processor_breaker.failure()
        metrics.processor_duration.observe(time.perf_counter() - started)
