"""One trace per payment, across the worker and the simulator, exported over OTLP/HTTP to a
real HTTP receiver (real worker, real simulator, real Kafka, NATS and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestrator_app.dev.procs import free_port
from tests.kafka_util import read_until
from tests.saga_util import created_event, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration


@dataclass
class Span:
    name: str
    trace_id: str
    service: str
    kind: int
    attributes: dict[str, Any]
    links: list[str] = field(default_factory=list)


async def collector(spans: list[Span]) -> tuple[web.AppRunner, str]:
    async def receive(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value
                       for a in resource_spans.resource.attributes}["service.name"]
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value
                                  or a.value.bool_value for a in span.attributes}
                    spans.append(Span(span.name, span.trace_id.hex(), service, span.kind,
                                      attributes, [link.trace_id.hex() for link in span.links]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_one_trace_per_payment_across_worker_and_simulator(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans: list[Span] = []
    runner, endpoint = await collector(spans)
    try:
        # The simulator through the standard variable, the worker through JAEGER_ENDPOINT;
        # the worker's batch processor waits 10 min, so its spans arrive only through the
        # flush at shutdown.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        spawn_simulator()
        env = worker_env(kafka_brokers, JAEGER_ENDPOINT=endpoint,
                         OTEL_BSP_SCHEDULE_DELAY="600000")
        worker = spawn_worker(env)
        worker.wait_healthy()

        run = uuid.uuid4().hex[:8]
        given, derived = f"traced-{run}-given", f"traced-{run}-derived"
        given_trace = uuid.uuid4().hex
        traceparent = f"00-{given_trace}-{uuid.uuid4().hex[:16]}-01"
        derived_trace = hashlib.sha256(b"payment-trace:" + derived.encode()).hexdigest()[:32]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_brokers)
        await producer.start()
        try:
            topic = f"{env['TOPIC_PREFIX']}payment.created"
            await producer.send_and_wait(
                topic, created_event(given, "12.5", customer_id=f"cust-{run}",
                                     merchant_id=f"merch-{run}"),
                key=given.encode(), headers=[("traceparent", traceparent.encode())])
            await producer.send_and_wait(topic, created_event(derived, "7.25"),
                                         key=derived.encode())
        finally:
            await producer.stop()
        await asyncio.to_thread(wait_for_states, worker,
                                {given: "COMPLETED", derived: "COMPLETED"}, 30.0)

        # payment.state.changed records carry the payment's trace.
        expected = {given: given_trace, derived: derived_trace}
        changed = await read_until(
            kafka_brokers, f"{env['TOPIC_PREFIX']}payment.state.changed",
            lambda rs: sum(r.key in (given.encode(), derived.encode()) for r in rs) >= 8)
        for record in changed:
            pid = record.key.decode()
            if pid in expected:
                headers = dict(record.headers)
                assert headers["traceparent"].decode().split("-")[1] == expected[pid], pid

        await asyncio.sleep(1.5)  # let the sink write the last rows
        worker.stop()  # SIGTERM: the worker's spans are exported now
        deadline = time.monotonic() + 20  # the simulator's processor exports every 5 s
        wanted = {("payment-orchestrator", "saga.apply"),
                  ("payment-orchestrator", "nats fraud.check"),
                  ("payment-orchestrator", "nats payment.process"),
                  ("payment-simulator", "simulate fraud.check"),
                  ("payment-simulator", "simulate payment.process")}

        def of(pid: str) -> list[Span]:
            return [s for s in spans if s.attributes.get("payment.id") == pid]

        while time.monotonic() < deadline:
            if all(wanted <= {(s.service, s.name) for s in of(p)} for p in expected):
                break
            await asyncio.sleep(0.5)
        for pid, trace_id in expected.items():
            mine = of(pid)
            assert wanted <= {(s.service, s.name) for s in mine}, (pid, mine)
            assert {s.trace_id for s in mine} == {trace_id}, pid
            # One saga.apply per command: CREATE, fraud result, process result at least.
            assert sum(s.name == "saga.apply" for s in mine) >= 3
            ingest = next(s for s in mine if s.name == "saga.apply"
                          and str(s.attributes.get("messaging.destination.name", "")
                                  ).endswith("payment.created"))
            assert ingest.attributes["messaging.system"] == "kafka"
            assert ingest.attributes["messaging.kafka.message.key"] == pid
            assert "messaging.kafka.destination.partition" in ingest.attributes
            for s in mine:
                if s.name.startswith(("nats ", "simulate ")):
                    assert s.attributes["messaging.system"] == "nats"
                    assert s.attributes["messaging.destination.name"] in (
                        "fraud.check", "payment.process")
        # The sink batches that wrote these payments belong to (or link to) their traces.
        sunk = [s for s in spans if s.name == "postgres.sink batch"]
        for trace_id in expected.values():
            assert any(s.trace_id == trace_id or trace_id in s.links for s in sunk), sunk
        # No payment data in any span: no amount, customer or merchant id.
        for s in spans:
            for key, value in s.attributes.items():
                assert not any(w in key for w in ("amount", "customer", "merchant")), key
                assert str(value) not in ("12.5", "7.25", f"cust-{run}", f"merch-{run}")
    finally:
        await runner.cleanup()
