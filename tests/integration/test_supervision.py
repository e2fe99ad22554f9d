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
    garbage = {
        "orchestrator-commands": b"\xff\xfe not a command",
        "orchestrator-fraud-requests": b'{"payment_id": 1',
        "orchestrator-processor-requests": b"[]]",
    }
    for topic, value in garbage.items():
        await produce(kafka_brokers, prefix + topic, [(f"junk-{run}".encode(), value)])
    good = [f"after-junk-{run}-{i}" for i in range(5)]
    await produce(kafka_brokers, prefix + "payment.created",
                  [(p.encode(), created_event(p, "10.00")) for p in good])
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(good, "COMPLETED"), 60.0)

    letters = await read_until(kafka_brokers, prefix + "orchestrator-dead-letters",
                               lambda rs: len(rs) >= len(garbage), 30)
    assert len(letters) == len(garbage)
    by_topic = {}
    for record in letters:
        letter = codec.loads(record.value)
        by_topic[letter["source_topic"]] = letter
        assert letter["stage"] == f"decode:{letter['source_topic']}"
        assert letter["reason_code"] == "processing_error"
        assert isinstance(letter["source_partition"], int)
        assert isinstance(letter["source_offset"], int)
    assert {t.removeprefix(prefix) for t in by_topic} == set(garbage)
    for topic, value in garbage.items():  # the exact bytes, for whoever replays them
        assert base64.b64decode(by_topic[prefix + topic]["payload_base64"]) == value
    assert worker.get("/ready")[0] == 200
    assert worker.get("/health")[0] == 200
    assert sum(metric_samples(worker, "payment_agent_crashes_total").values()) == 0
    stages = metric_samples(worker, "payment_agent_dead_letters_total")
    assert sum(stages.values()) == len(garbage)
