"""Fraud agent: one NATS ``fraud.check`` request per payment, many in flight at once.

`concurrency` actors share the request stream, so a slow reply holds one actor, not the
partition; an event is acked only after its outcome is on the commands topic, so a worker
that dies mid-call re-issues the check after restart (the result's id dedupes it). While
the fraud breaker is open, payments go to MANUAL_REVIEW at once instead of waiting for
timeouts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from orchestrator_app import clock, metrics
from orchestrator_app.app import app, settings
from orchestrator_app.breakers import fraud_breaker
from orchestrator_app.clients.nats import RequestTimeout, ServiceUnavailable
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Command, CommandKind, FraudCheckRequest
from orchestrator_app.domain.replies import fraud_result, fraud_unavailable, fraud_wire_body
from orchestrator_app.resources import nats_client
from orchestrator_app.telemetry import tracer
from orchestrator_app.topics import commands, fraud_requests

__all__ = ["FRAUD_SUBJECT", "check_fraud", "fraud_check"]

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


@app.agent(fraud_requests, concurrency=settings.fraud_concurrency)
async def fraud_check(stream: Any) -> None:
    async for request in stream:
        try:
            with tracer.start_as_current_span("nats fraud.check") as span:
                span.set_attribute("payment.id", request.payment_id)
                command = await check_fraud(request)
                span.set_attribute("command.kind", command.kind)
        except Exception:  # a bug: the payment still moves on (to MANUAL_REVIEW)
            log.exception("fraud check failed unexpectedly")
            metrics.agent_dead_letters.labels(stage="fraud").inc()
            command = fraud_unavailable(request.payment_id, "fraud check failed (internal "
                                        "error)", clock.now())
        commands.send_soon(key=command.payment_id, value=command)
