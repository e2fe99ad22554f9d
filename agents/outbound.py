"""Outbound NATS calls — fraud checks, processing and refund attempts — as bounded background
tasks of the worker that owns the payment.

Why not request topics with their own agents: every hop through Kafka costs a consumed Faust
event and a produced record (~0.6 ms of this machine each, DESIGN §7). The saga starts the
call here and moves on; the call's outcome is a command handed to `deliver` — which the saga
wires to its in-place apply (the commands topic when this worker no longer owns the
payment) — so a slow reply holds one task, never the partition.

What a hop gave for free and is rebuilt here:

* **Nothing is lost in a crash.** A call in flight when the worker dies is gone with it. On
  every assignment (start-up included), once the tables are recovered, the timer agent
  re-issues the call of every payment of the newly owned partitions that is still waiting
  for an answer (`reissue`): the requests are deterministic from the stored payment, and a
  second answer is deduplicated by its command id. The deadline watchdog stays as the last
  resort for an answer lost on the way back.
* **Backpressure.** At most `FRAUD_CONCURRENCY` / `PROCESSOR_CONCURRENCY` calls run at
  once; when a kind is full the saga agent waits (`room`) before applying its next command.
* **No double calls from one worker.** A call already in flight for the same payment and
  attempt is not started again (a redelivered command re-emits its effects).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from agents.fraud import check_fraud
from agents.processor import PROCESS_SUBJECT, REFUND_SUBJECT, process_payment
from orchestrator_app import clock, metrics, telemetry
from orchestrator_app.app import app, settings
from orchestrator_app.domain.records import (
    Command,
    FraudCheckRequest,
    Operation,
    ProcessRequest,
)
from orchestrator_app.domain.replies import fraud_unavailable, process_failure
from orchestrator_app.telemetry import tracer
from orchestrator_app.topics import send_command
from tables.payments import live_rows

__all__ = ["Outbound", "outbound"]

log = logging.getLogger(__name__)

CallKey = tuple[str, str, int]


@contextmanager
def _nats_span(subject: str, payment_id: str) -> Iterator[Span]:
    """The span of one NATS request: a child of the ``saga.apply`` that started it (the
    task copied its context), else — a call re-issued after a rebalance — of the payment's
    stored trace."""
    parent = None
    if not trace.get_current_span().get_span_context().is_valid:
        row = live_rows.get(payment_id)
        parent = telemetry.payment_parent(payment_id, row.traceparent if row else None)
    with tracer.start_as_current_span(f"nats {subject}", context=parent,
                                      kind=SpanKind.CLIENT) as span:
        span.set_attributes({
            "payment.id": payment_id, "messaging.system": "nats",
            "messaging.destination.name": subject, "messaging.operation": "request"})
        yield span


class _Lane:
    """Calls of one kind: a bound, and the calls in flight by key."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.inflight: dict[CallKey, asyncio.Task[None]] = {}
        self.freed = asyncio.Event()

    def full(self) -> bool:
        return len(self.inflight) >= self.limit


class Outbound:
    def __init__(self, fraud_limit: int, processor_limit: int) -> None:
        self.fraud = _Lane("fraud", fraud_limit)
        self.processor = _Lane("processor", processor_limit)
        #: Where outcomes go; `agents.saga` sets its own (apply here, else the topic).
        self.deliver: Callable[[Command], None] = send_command

    def __len__(self) -> int:
        return len(self.fraud.inflight) + len(self.processor.inflight)

    async def room(self) -> None:
        """Wait until both kinds have room for one more call (cheap when they have)."""
        for lane in (self.fraud, self.processor):
            while lane.full():
                lane.freed.clear()
                await lane.freed.wait()

    def start_fraud(self, request: FraudCheckRequest) -> None:
        self._start(self.fraud, ("fraud", request.payment_id, 0),
                    lambda: self._fraud(request))

    def start_process(self, request: ProcessRequest) -> None:
        self._start(self.processor, (request.operation, request.payment_id, request.attempt),
                    lambda: self._process(request))

    def start_all(self, fraud: Iterable[FraudCheckRequest],
                  process: Iterable[ProcessRequest]) -> None:
        for request in fraud:
            self.start_fraud(request)
        for call in process:
            self.start_process(call)

    def _start(self, lane: _Lane, key: CallKey, call: Callable[[], Awaitable[None]]) -> None:
        if key in lane.inflight:
            return
        task = asyncio.ensure_future(call())
        lane.inflight[key] = task
        gauge = metrics.child(metrics.outbound_inflight, lane.name)
        gauge.set(len(lane.inflight))

        def done(_: asyncio.Task[None]) -> None:
            lane.inflight.pop(key, None)
            gauge.set(len(lane.inflight))
            lane.freed.set()

        task.add_done_callback(done)

    async def _fraud(self, request: FraudCheckRequest) -> None:
        try:
            if telemetry.enabled():
                with _nats_span("fraud.check", request.payment_id) as span:
                    command = await check_fraud(request)
                    span.set_attribute("command.kind", command.kind)
            else:
                command = await check_fraud(request)
        except asyncio.CancelledError:
            raise  # stopping: the next owner re-issues the call
        except Exception:  # a bug: the payment still moves on (to MANUAL_REVIEW)
            log.exception("fraud check failed unexpectedly")
            metrics.agent_dead_letters.labels(stage="fraud").inc()
            command = fraud_unavailable(request.payment_id,
                                        "fraud check failed (internal error)", clock.now())
        self.deliver(command)

    async def _process(self, request: ProcessRequest) -> None:
        try:
            if telemetry.enabled():
                refund = request.operation == Operation.REFUND
                subject = REFUND_SUBJECT if refund else PROCESS_SUBJECT
                with _nats_span(subject, request.payment_id) as span:
                    span.set_attribute("payment.attempt", request.attempt)
                    command = await process_payment(request)
                    span.set_attribute("result.success", bool(command.success))
            else:
                command = await process_payment(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: a retryable failure, so the payment still moves on
            log.exception("processor call failed unexpectedly")
            metrics.agent_dead_letters.labels(stage="processor").inc()
            command = process_failure(request, "internal_error",
                                      "the orchestrator failed to call the processor", True,
                                      clock.now())
        self.deliver(command)

    async def stop(self, grace: float = 1.0) -> None:
        """Let the calls in flight finish for `grace` seconds (their outcomes are produced
        before the producer's final flush), then cancel the rest: their payments are
        re-issued by the next owner."""
        tasks = [*self.fraud.inflight.values(), *self.processor.inflight.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)


outbound = Outbound(settings.fraud_concurrency, settings.processor_concurrency)


@app.on_before_shutdown.connect
async def _finish_calls(app: object, **kwargs: object) -> None:
    await outbound.stop()
