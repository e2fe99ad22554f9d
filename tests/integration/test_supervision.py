"""Nothing dies quietly: garbage on the internal topics is dead-lettered, every agent stays
alive, and payments keep moving (real worker, real Apache Kafka)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable

import pytest

from orchestrator_app.domain import codec
from tests.kafka_util import produce, read_until
from tests.saga_util import created_event, metric_samples, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration


async def test_undecodable_records_on_internal_topics_are_dead_lettered(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    prefix = env["TOPIC_PREFIX"]
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:8]
    # Faust would throw each of these into the agent's stream and kill the agent.
    garbage = [b"\xff\xfe not a command", b'{"payment_id": 1', b"[]]",
               b'{"kind": "create", "payment_id": []}']
    topic = prefix + "orchestrator-commands"
    await produce(kafka_brokers, topic, [(f"junk-{run}-{i}".encode(), value)
                                         for i, value in enumerate(garbage)])
    good = [f"after-junk-{run}-{i}" for i in range(5)]
    await produce(kafka_brokers, prefix + "payment.created",
                  [(p.encode(), created_event(p, "10.00")) for p in good])
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(good, "COMPLETED"), 60.0)

    letters = await read_until(kafka_brokers, prefix + "orchestrator-dead-letters",
                               lambda rs: len(rs) >= len(garbage), 30)
    assert len(letters) == len(garbage)
    payloads = []
    for record in letters:
        letter = codec.loads(record.value)
        assert letter["source_topic"] == topic
        assert letter["stage"] in (f"decode:{topic}", "saga")
        assert letter["reason_code"] == "processing_error"
        assert isinstance(letter["source_partition"], int)
        assert isinstance(letter["source_offset"], int)
        payloads.append(base64.b64decode(letter["payload_base64"]))
    assert sorted(payloads) == sorted(garbage)  # the exact bytes, for whoever replays them
    assert worker.get("/ready")[0] == 200
    assert worker.get("/health")[0] == 200
    assert sum(metric_samples(worker, "payment_agent_crashes_total").values()) == 0
    stages = metric_samples(worker, "payment_agent_dead_letters_total")
    assert sum(stages.values()) == len(garbage)
