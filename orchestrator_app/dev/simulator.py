"""Reference responders for ``fraud.check``, ``payment.process`` and ``payment.refund``.

Real NATS services with documented, deterministic rules, used by tests, demos and
benchmarks. The rules look at id prefixes so a test can pick every path on purpose:

fraud.check
  * customer_id ``fraud-…``     → rejected, risk_score 0.95
  * amount ≥ 10000              → rejected, risk_score 0.90
  * customer_id ``noreply-…``   → no reply at all (the orchestrator times out → MANUAL_REVIEW)
  * customer_id ``slow-…``      → reply held for ``hold_seconds`` (default 3 s), then approved
  * anything else               → approved, risk_score = 0.05 + amount/20000 (4 places)
payment.process
  * merchant_id ``fail-…``      → declined, error_code ``card_declined``, not retryable
  * merchant_id ``flaky-…``     → attempt 1 fails retryable (``processor_unavailable``), later
                                   attempts succeed
  * merchant_id ``down-…``      → every attempt fails retryably (``processor_unavailable``)
  * merchant_id ``noreply-…``   → no reply (processor timeout)
  * ``failure_rate`` r          → a deterministic share r of attempts fails retryable
  * anything else               → success, confirmation_id ``conf-<hash>``
payment.refund
  * merchant_id ``refund-fail-…`` → refund refused, error_code ``refund_declined``
  * anything else               → success, refund_id ``ref-<hash>``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind

from orchestrator_app import telemetry
from orchestrator_app.config import ConfigError, load_settings
from orchestrator_app.domain import codec

__all__ = ["Rules", "Simulator", "fraud_reply", "process_reply", "refund_reply"]

log = logging.getLogger(__name__)

QUEUE_GROUP = "payment-simulator"


@dataclass(frozen=True)
class Rules:
    hold_seconds: float = 3.0
    latency: float = 0.0
    failure_rate: float = 0.0


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def fraud_reply(request: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to a fraud check, or None for 'do not answer'."""
    customer = str(request.get("customer_id", ""))
    amount = Decimal(request.get("amount", 0))
    reply = {"payment_id": request.get("payment_id")}
    if customer.startswith("noreply-"):
        return None
    if customer.startswith("fraud-"):
        return {**reply, "approved": False, "risk_score": Decimal("0.95"),
                "reason": "Customer on watch list"}
    if amount >= 10000:
        return {**reply, "approved": False, "risk_score": Decimal("0.90"),
                "reason": "Amount above automatic approval limit"}
    score = (Decimal("0.05") + amount / 20000).quantize(Decimal("0.0001"))
    return {**reply, "approved": True, "risk_score": score, "reason": "Low risk transaction"}


def process_reply(request: dict[str, Any], rules: Rules) -> dict[str, Any] | None:
    merchant = str(request.get("merchant_id", ""))
    payment_id = request.get("payment_id")
    attempt = int(request.get("attempt", 1))
    failed = {"payment_id": payment_id, "success": False, "confirmation_id": None}
    if merchant.startswith("noreply-"):
        return None
    if merchant.startswith("fail-"):
        return {**failed, "error_code": "card_declined",
                "error_message": "Card declined by issuer", "retryable": False}
    flaky = merchant.startswith("down-") or (merchant.startswith("flaky-") and attempt == 1)
    unlucky = rules.failure_rate > 0 and (
        int(_digest(payment_id, attempt)[:8], 16) / 0xFFFFFFFF < rules.failure_rate
    )
    if flaky or unlucky:
        return {**failed, "error_code": "processor_unavailable",
                "error_message": "Processor temporarily unavailable", "retryable": True}
    return {"payment_id": payment_id, "success": True,
            "confirmation_id": f"conf-{_digest(payment_id, attempt)[:12]}",
            "error_code": None, "error_message": None, "retryable": False}


def refund_reply(request: dict[str, Any]) -> dict[str, Any]:
    merchant = str(request.get("merchant_id", ""))
    payment_id = request.get("payment_id")
    if merchant.startswith("refund-fail-"):
        return {"payment_id": payment_id, "success": False, "refund_id": None,
                "error_code": "refund_declined", "error_message": "Refund refused",
                "retryable": False}
    return {"payment_id": payment_id, "success": True,
            "refund_id": f"ref-{_digest('refund', payment_id)[:12]}",
            "error_code": None, "error_message": None, "retryable": False}


def _server_span(msg: Msg, payment_id: object, answers: bool) -> Span:
    """The responder's span, continuing the trace of the request's ``traceparent`` header
    (ended once the reply is sent)."""
    span = telemetry.tracer.start_span(
        f"simulate {msg.subject}", context=telemetry.context_of_headers(msg.headers),
        kind=SpanKind.SERVER)
    span.set_attributes({"messaging.system": "nats", "messaging.destination.name": msg.subject,
                         "messaging.operation": "process", "simulator.answers": answers})
    if isinstance(payment_id, str):
        span.set_attribute("payment.id", payment_id)
    return span


class Simulator:
    """Subscribes the three responders (queue group: several simulators share the load)."""

    def __init__(self, nats_url: str, rules: Rules = Rules()) -> None:
        self.nats_url = nats_url
        self.rules = rules
        self.nc: Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.answered = 0

    async def start(self) -> None:
        self.nc = await nats.connect(
            servers=self.nats_url.split(","), name="payment-simulator",
            max_reconnect_attempts=-1,
        )
        await self.nc.subscribe("fraud.check", queue=QUEUE_GROUP, cb=self._on_fraud)
        await self.nc.subscribe("payment.process", queue=QUEUE_GROUP, cb=self._on_process)
        await self.nc.subscribe("payment.refund", queue=QUEUE_GROUP, cb=self._on_refund)
        await self.nc.flush()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            # close, not drain: a responder has nothing to flush, and nats-py's drain can
            # hang on a pending PONG at shutdown.
            await self.nc.close()

    def _later(self, msg: Msg, reply: dict[str, Any] | None, delay: float,
               payment_id: object = None) -> None:
        """Answer without blocking the subscription (callbacks run one at a time)."""
        span = _server_span(msg, payment_id, reply is not None) if telemetry.enabled() else None
        if reply is None:
            if span is not None:
                span.end()
            return
        if delay <= 0:
            task = asyncio.ensure_future(self._respond(msg, reply, span))
        else:
            task = asyncio.ensure_future(self._respond_after(msg, reply, delay, span))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond_after(self, msg: Msg, reply: dict[str, Any], delay: float,
                             span: Span | None = None) -> None:
        try:
            await asyncio.sleep(delay)
        except BaseException:
            if span is not None:
                span.end()
            raise
        await self._respond(msg, reply, span)

    async def _respond(self, msg: Msg, reply: dict[str, Any], span: Span | None = None) -> None:
        try:
            await msg.respond(codec.dumps(reply))
        finally:
            if span is not None:
                span.end()
        self.answered += 1

    @staticmethod
    def _decode(msg: Msg) -> dict[str, Any] | None:
        try:
            data = codec.loads(msg.data)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def _on_fraud(self, msg: Msg) -> None:
        request = self._decode(msg)
        if request is None:
            return
        delay = self.rules.latency
        if str(request.get("customer_id", "")).startswith("slow-"):
            delay += self.rules.hold_seconds
        self._later(msg, fraud_reply(request), delay, request.get("payment_id"))

    async def _on_process(self, msg: Msg) -> None:
        request = self._decode(msg)
        if request is not None:
            self._later(msg, process_reply(request, self.rules), self.rules.latency,
                        request.get("payment_id"))

    async def _on_refund(self, msg: Msg) -> None:
        request = self._decode(msg)
        if request is not None:
            self._later(msg, refund_reply(request), self.rules.latency,
                        request.get("payment_id"))


async def _serve(nats_url: str, rules: Rules, trace_endpoint: str | None) -> None:
    if trace_endpoint:
        telemetry.setup_tracing(trace_endpoint, service="payment-simulator")
    simulator = Simulator(nats_url, rules)
    await simulator.start()
    print(f"simulator answering fraud.check, payment.process, payment.refund on {nats_url}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        telemetry.shutdown_tracing()


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator_app.dev.simulator``: answer on NATS (``NATS_URL``) until stopped."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator_app.dev.simulator",
                                     description=main.__doc__)
    parser.add_argument("--hold-seconds", type=float, default=3.0,
                        help="how long fraud replies for customers 'slow-…' are held (3)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="delay added to every reply, in seconds (0)")
    parser.add_argument("--failure-rate", type=float, default=0.0,
                        help="share of processing attempts that fail retryably (0)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(required=("NATS_URL",))
    except ConfigError as exc:
        print(f"simulator: configuration error: {exc}", file=sys.stderr)
        return 2
    rules = Rules(args.hold_seconds, args.latency, args.failure_rate)
    asyncio.run(_serve(settings.nats_url, rules, settings.trace_endpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
