"""Spans reach an OTLP/HTTP collector at JAEGER_ENDPOINT (a real HTTP receiver, real worker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestrator_app.devstack import free_port
from tests.kafka_util import produce
from tests.saga_util import created_event, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration


async def test_spans_are_exported_over_otlp(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    spans: list[tuple[str, dict[str, object]]] = []

    async def receive(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value
                                  for a in span.attributes}
                    spans.append((span.name, {**attributes, **service}))
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(collector)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        env = worker_env(kafka_brokers, JAEGER_ENDPOINT=f"http://127.0.0.1:{port}")
        spawn_simulator()
        worker = spawn_worker(env)
        worker.wait_healthy()
        pid = f"traced-{uuid.uuid4().hex[:8]}"
        await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                      [(pid.encode(), created_event(pid, "12.5"))])
        await asyncio.to_thread(wait_for_states, worker, {pid: "COMPLETED"}, 30.0)
        deadline = time.monotonic() + 20  # the batch processor exports every 5 s
        wanted = {"saga.apply", "nats fraud.check", "nats payment.payment"}
        while time.monotonic() < deadline:
            names = {name for name, attrs in spans if attrs.get("payment.id") == pid}
            if wanted <= names:
                break
            await asyncio.sleep(0.5)
        names = {name for name, attrs in spans if attrs.get("payment.id") == pid}
        assert wanted <= names, names
        assert all(attrs.get("service.name") == "payment-orchestrator" for _, attrs in spans)
    finally:
        await runner.cleanup()
