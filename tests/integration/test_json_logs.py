"""Structured logs (issue 9, item 4): a whole end-to-end run of a real worker on Kafka,
PostgreSQL, Redis and NATS, captured from its start to its SIGTERM: every line is one JSON
object with the fields, Faust's own lines included, and no line names a payment's amount,
customer id or merchant id."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator_app.domain.records import Command, CommandKind
from tests.kafka_util import produce
from tests.saga_util import created_event, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

FIELDS = {"ts", "level", "logger", "message", "payment_id", "state", "trace_id", "pid"}
TOKEN = "json-logs-test-token-0123456789"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every span batch (tracing on: lines get trace ids)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _post(worker: WorkerProcess, path: str, body: bytes) -> int:
    request = urllib.request.Request(worker.url(path), data=body, method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_worker_logs_are_json_lines_without_payment_data(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], otlp_endpoint: str,
) -> None:
    env = worker_env(kafka_brokers, API_TOKEN=TOKEN, JAEGER_ENDPOINT=otlp_endpoint)
    env.pop("LOG_FORMAT", None)  # JSON is the worker's default
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()

    run = uuid.uuid4().hex[:6]
    # (customer prefix, merchant prefix, final state): the simulator's rules
    paths = [("", "", "COMPLETED"), ("fraud-", "", "REJECTED"), ("", "fail-", "COMPENSATED"),
             ("", "flaky-", "COMPLETED")] * 3
    payments: dict[str, tuple[Decimal, str, str]] = {}
    expected: dict[str, str] = {}
    for i, (cust, merch, final) in enumerate(paths):
        pid = f"log-{run}-{i}"
        amount = Decimal(f"{4000 + 111 * i}.{37 + i}")
        payments[pid] = (amount, f"{cust}cust-s3cr3t-{run}-{i}", f"{merch}merch-s3cr3t-{run}-{i}")
        expected[pid] = final
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    await produce(kafka_brokers, topic, [
        (pid.encode(), created_event(pid, amount, customer, merchant))
        for pid, (amount, customer, merchant) in payments.items()])
    await asyncio.to_thread(wait_for_states, worker, expected, 90.0)

    # A command through the API: an INFO line about one payment, in its state.
    refunded = next(pid for pid, state in expected.items() if state == "COMPLETED")
    assert await asyncio.to_thread(
        _post, worker, f"/payments/{refunded}/refund", b'{"reason": "asked"}') == 202
    await asyncio.to_thread(wait_for_states, worker, {refunded: "REFUNDED"}, 30.0)
    # A command the saga refuses (a review of a REFUNDED payment): its line, in a span.
    review = Command(kind=CommandKind.REVIEW.value, payment_id=refunded,
                     command_id=f"{refunded}:test:review", issued_at="2026-12-01T00:00:00Z",
                     decision="approve", reason="late")
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}orchestrator-commands",
                  [(refunded.encode(), review.dumps())])
    deadline = asyncio.get_running_loop().time() + 30
    while "command review refused" not in worker.log_path.read_text():
        assert asyncio.get_running_loop().time() < deadline, worker.log_tail()
        await asyncio.sleep(0.2)
    worker.stop()  # SIGTERM: the shutdown lines too
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail()

    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    assert len(lines) > 50
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict) and set(record) >= FIELDS, line
        parsed.append(record)
    loggers = {r["logger"] for r in parsed}
    assert any(name.startswith(("faust", "mode")) for name in loggers), loggers  # Faust's own
    assert any(r["message"].startswith("[^Worker]: Ready") for r in parsed)
    # The payment's id and state in the lines about it.
    assert any(r["payment_id"] == refunded and r["state"] == "COMPLETED"
               and r["logger"].startswith("orchestrator_app") for r in parsed), [
        r for r in parsed if r["payment_id"]]
    (refused,) = [r for r in parsed if r["message"].startswith("command review refused")]
    assert (refused["payment_id"], refused["state"]) == (refunded, "REFUNDED")
    assert refused["logger"] == "agents.saga" and len(refused["trace_id"]) == 32
    # Nothing sensitive at INFO or above (the whole log is INFO and above).
    assert {r["level"] for r in parsed} <= {"INFO", "WARNING", "ERROR", "CRITICAL"}
    secrets = {str(a) for a, _, _ in payments.values()}
    secrets |= {c for _, c, _ in payments.values()} | {m for _, _, m in payments.values()}
    secrets |= {f"s3cr3t-{run}"}
    for line in lines:
        leaked = [s for s in secrets if s in line]
        assert not leaked, (leaked, line)
