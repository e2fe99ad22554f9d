"""The fraud check: one NATS ``fraud.check`` call per payment, turned into a command.

Started by the saga worker as a background task (`agents.outbound`); its outcome goes back
on the commands topic (the result's id dedupes a repeated check). While the fraud breaker is
open, payments go to MANUAL_REVIEW at once instead of waiting for timeouts.
"""

from __future__ import annotations

import logging
import time

from orchestrator_app import clock, metrics
from orchestrator_app.app import settings
from orchestrator_app.breakers import fraud_breaker
from orchestrator_app.clients.nats import RequestTimeout, ServiceUnavailable
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Command, CommandKind, FraudCheckRequest
from orchestrator_app.domain.replies import fraud_result, fraud_unavailable, fraud_wire_body
from orchestrator_app.resources import nats_client

__all__ = ["FRAUD_SUBJECT", "check_fraud"]

FRAUD_SUBJECT = "fraud.check"

log = logging.getLogger(__name__)


async def check_fraud(request: FraudCheckRequest) -> Command:
    """The check's outcome as a command; never waits longer than the fraud timeout.

    Once the breaker let the call through, exactly one of success / failure is recorded on
    every path (a cancelled or crashed call too): a half-open trial is always released.
    """
    if not fraud_breaker.allow():
        metrics.fraud_unavailable.inc()
        return fraud_unavailable(
            request.payment_id, "fraud service unavailable (circuit breaker open)", clock.now())
    settled = False
    started = time.perf_counter()
    try:
        body = codec.dumps(fraud_wire_body(request))
        try:
            reply = await nats_client.request(FRAUD_SUBJECT, body, settings.fraud_timeout)
        except RequestTimeout:
            fraud_breaker.failure()
            settled = True
            metrics.fraud_timeouts.inc()
            return fraud_unavailable(request.payment_id, "fraud check timed out", clock.now())
        except ServiceUnavailable:
            fraud_breaker.failure()
            settled = True
            metrics.fraud_unavailable.inc()
            return fraud_unavailable(request.payment_id, "fraud service unavailable",
                                     clock.now())
        command = fraud_result(request.payment_id, reply, clock.now())
        if command.kind == CommandKind.FRAUD_RESULT:
            fraud_breaker.success()
        else:  # an unreadable reply: the service is not working properly
            fraud_breaker.failure()
        settled = True
        return command
    finally:
        if not settled:
            fraud_breaker.failure()
        metrics.fraud_duration.observe(time.perf_counter() - started)
