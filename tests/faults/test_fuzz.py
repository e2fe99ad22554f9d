"""Fuzzing through the real servers (hypothesis: derandomized, a fixed number of examples,
no deadline): payment.created values, NATS fraud / processor replies, and command API
bodies. The worker must stay alive and ready; every input ends somewhere defined: a good
payment in its final state and in PostgreSQL, a bad one on the dead-letter topic (exactly
once, with where it came from), a bad reply in a defined state, a bad body in a 4xx."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from orchestrator_app.dev import simulator as sim_rules
from orchestrator_app.domain import codec
from tests.faults import fuzzing as fz
from tests.faults.servers import PrivateNats
from tests.faults.util import (
    created_items,
    db_rows,
    decoded_metadata,
    produce_positions,
    read_to_end,
    states_via_api,
    wait_db_matches_api,
)
from tests.kafka_util import read_until
from tests.saga_util import created_event, metric_samples, partition_of, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CREATED_CASES = 300
KNOWN_GOOD = 40
FRAUD_CASES = 80
PROCESS_CASES = 50
REVIEW_CASES = 250
TOKEN = "fuzz-token-0123456789abcdef"
TERMINAL = {"COMPLETED", "REJECTED", "MANUAL_REVIEW", "COMPENSATED"}
DLQ_FIELDS = {"stage", "reason_code", "reason", "source_topic", "source_partition",
              "source_offset", "failed_at", "payload_base64", "payload_text"}
REASON_CODES = {"malformed_json", "not_an_object", "missing_field", "invalid_type",
                "invalid_amount", "invalid_currency", "invalid_status", "invalid_timestamp",
                "invalid_id", "too_large", "conflict"}
REVIEW_ANSWERS = {202, 400, 409, 413, 422, 429}


def _event(amount: str, currency: str = "USD", **overrides: str) -> bytes:
    fields = {"payment_id": '"{pid}"', "amount": amount, "currency": json.dumps(currency),
              "customer_id": '"c-1"', "merchant_id": '"m-1"', "status": '"NEW"',
              "created_at": '"2026-11-27T10:00:00Z"', **overrides}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


#: The brief's near-valid inputs, always included (pid is filled in). The oracle's verdict
#: on each is pinned here, so a change of the oracle cannot silently drop one.
EXPLICIT_CREATED: list[tuple[str, bytes, str]] = [
    ("huge exponent", _event("1e99999999999999999999999"), fz.BAD),
    ("tiny exponent", _event("1e-1000027"), fz.BAD),
    ("32 decimal places", _event("1." + "0" * 31 + "1"), fz.BAD),
    ("NaN", _event("NaN"), fz.BAD),
    ("negative", _event("-10.00"), fz.BAD),
    ("amount as string", _event('"10.00"'), fz.BAD),
    ("nested object", _event('{"value": {"amount": 10}}'), fz.BAD),
    ("U+0000 in payment_id", _event("10.00", payment_id='"x\\u0000{pid}"'), fz.BAD),
    ("lone surrogate in customer_id", _event("10.00", customer_id='"c\\ud800"'), fz.BAD),
    ("JPY 100.5", _event("100.5", "JPY"), fz.BAD),
    ("JPY 100.0 (trailing zero)", _event("100.0", "JPY"), fz.GOOD),
    ("USD 100.500 (trailing zeros)", _event("100.500"), fz.GOOD),
    ("KWD 1.234", _event("1.234", "KWD"), fz.GOOD),
    ("U+0000 in an ignored field", _event("10.00", note='"\\u0000"'), fz.GOOD),
    ("lone surrogate in an ignored field", _event("10.00", note='"\\udc00"'), fz.GOOD),
    ("too large", _event("10.00", note=json.dumps("x" * 70_000)), fz.BAD),
    ("empty", b"", fz.BAD),
    ("not UTF-8", b'{"payment_id": "\xff\xfe"}', fz.BAD),
    ("null", b"null", fz.BAD),
    ("array", b"[]", fz.BAD),
    ("deep nesting", b"[" * 60_000, fz.BAD),
]


def crashes(worker: WorkerProcess) -> float:
    return sum(metric_samples(worker, "payment_agent_crashes_total").values())


def assert_alive(worker: WorkerProcess) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail(40)
    status, body = worker.get("/ready")
    assert status == 200, body
    assert crashes(worker) == 0, worker.log_tail(40)


async def wait_settled(worker: WorkerProcess, pids: list[str], timeout: float,
                       settled: set[str] = TERMINAL) -> dict[str, dict[str, Any]]:
    """Poll the state API until every payment is in one of `settled`; the bodies."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    while True:
        answers = await states_via_api(worker, [p for p in pids if p not in done])
        for pid, (status, body) in answers.items():
            if status == 200 and body.get("current_state") in settled:
                done[pid] = body
            else:
                last[pid] = (status, body.get("current_state", body))
        if len(done) == len(pids):
            return done
        assert time.monotonic() < deadline, (
            f"{len(pids) - len(done)} payments not settled after {timeout:.0f}s, e.g. "
            f"{list(last.items())[:5]}\n{worker.log_tail(30)}")
        await asyncio.sleep(0.3)


async def test_fuzzed_payment_created(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers, FRAUD_CHECK_TIMEOUT_SECONDS="1",
                     PROCESSOR_TIMEOUT_SECONDS="1", RETRY_INITIAL_DELAY_SECONDS="0.2",
                     RETRY_MAX_DELAY_SECONDS="0.5")
    topic = f"{env['TOPIC_PREFIX']}payment.created"
    spawn_simulator()
    worker = spawn_worker(env)
    run = uuid.uuid4().hex[:6]

    # Inputs: (key, raw bytes, verdict, expected payment or None).
    inputs: list[tuple[bytes, bytes, str, dict[str, Any] | None]] = []
    good_ids: set[str] = set()
    skipped: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    def add(raw: bytes, label: str) -> str | None:
        verdict, payment = fz.classify_created(raw)
        if verdict == fz.AMBIGUOUS:
            skipped["ambiguous under the README"] += 1
            return None
        if payment is not None:
            if payment["payment_id"] in good_ids:
                skipped["valid, reusing another input's payment_id"] += 1
                return None
            good_ids.add(payment["payment_id"])
        kinds[f"{label}:{verdict}"] += 1
        inputs.append((f"in-{len(inputs)}".encode(), raw, verdict, payment))
        return verdict

    cases = fz.collect(fz.created_cases, CREATED_CASES)
    for i, case in enumerate(cases):
        add(case.materialize(f"fz-{run}-{i:04d}"), f"fuzz-{case.kind}")
    for i, (name, template, pinned) in enumerate(EXPLICIT_CREATED):
        raw = template.replace(b"{pid}", f"ex-{run}-{i:02d}".encode())
        assert add(raw, "explicit") == pinned, f"oracle disagrees with the brief on {name}"
    currencies = [("USD", "10.50"), ("EUR", "100.5"), ("JPY", "1000"), ("KWD", "1.234")]
    for i in range(KNOWN_GOOD):
        cur, amount = currencies[i % 4]
        assert add(created_event(f"kg-{run}-{i:02d}", amount, currency=cur), "known") == fz.GOOD
    random.Random(20261127).shuffle(inputs)
    # One bad marker per partition, last: once all four are dead-lettered, every input
    # before them has been through the ingest agent.
    markers = []
    for p in range(4):
        key = next(f"marker-{p}-{i}" for i in range(1000) if partition_of(f"marker-{p}-{i}") == p)
        markers.append((key.encode(), b"\x00marker", fz.BAD, None))
    inputs.extend(markers)

    worker.wait_healthy()
    positions = await produce_positions(kafka_brokers, topic,
                                        [(key, raw) for key, raw, _, _ in inputs])
    at = {(m.partition, m.offset): item for m, item in zip(positions, inputs, strict=True)}
    bad = {pos for pos, item in at.items() if item[2] == fz.BAD}
    good = {item[3]["payment_id"]: item[3] for item in at.values() if item[3] is not None}
    print(f"\npayment.created: {len(cases)} hypothesis cases + {len(EXPLICIT_CREATED)} explicit"
          f" + {KNOWN_GOOD} known good + 4 markers → {len(good)} good, {len(bad)} bad "
          f"({dict(kinds)}); skipped {dict(skipped)}")

    expected = {pid: fz.expected_final(p) for pid, p in good.items()}
    bodies = await asyncio.to_thread(wait_for_states, worker, expected, 120.0)

    marker_pos = {(m.partition, m.offset) for m, item in zip(positions, inputs, strict=True)
                  if item in markers}

    def markers_in(records: list[Any]) -> bool:
        seen = set()
        for r in records:
            letter = json.loads(r.value)
            seen.add((letter.get("source_partition"), letter.get("source_offset")))
        return marker_pos <= seen

    dlq_topic = f"{topic}.dlq"
    await read_until(kafka_brokers, dlq_topic, markers_in, 60)
    letters = await read_to_end(kafka_brokers, dlq_topic)
    counts: Counter[tuple[int, int]] = Counter()
    reasons: Counter[str] = Counter()
    for record in letters:
        letter = json.loads(record.value)
        assert set(letter) >= DLQ_FIELDS, letter
        pos = (letter["source_partition"], letter["source_offset"])
        assert pos in at, f"a dead letter for no input of ours: {letter}"
        key, raw, verdict, _ = at[pos]
        assert verdict == fz.BAD, f"a good input was dead-lettered: {raw[:300]!r} → {letter}"
        assert letter["stage"] == "ingest" and letter["source_topic"] == topic, letter
        assert letter["reason_code"] in REASON_CODES, letter
        assert base64.b64decode(letter["payload_base64"]) == raw
        assert record.key == key
        counts[pos] += 1
        reasons[letter["reason_code"]] += 1
    lost = [at[pos][1][:200] for pos in bad if pos not in counts]
    assert not lost, f"{len(lost)} bad inputs not dead-lettered, e.g. {lost[:5]}"
    twice = {pos: n for pos, n in counts.items() if n > 1}
    assert not twice, f"dead-lettered more than once: {twice}"
    assert len(letters) == len(bad)
    print(f"dead letters: exactly {len(letters)} = the bad inputs; reason codes "
          f"{dict(reasons)}")

    took = await wait_db_matches_api(migrated_database_url, bodies, 60)
    states, _ = await db_rows(migrated_database_url, list(good))
    for pid, payment in good.items():
        assert states[pid]["amount"] == payment["amount"], (pid, states[pid]["amount"])
    for extra in ("payment.state.changed.dlq", "orchestrator-dead-letters"):
        others = await read_to_end(kafka_brokers, f"{env['TOPIC_PREFIX']}{extra}")
        assert others == [], [r.value[:300] for r in others]
    assert_alive(worker)
    print(f"every good payment in its final state ({dict(Counter(expected.values()))}) and in "
          f"PostgreSQL ({took:.1f}s after the API); worker alive and ready, no agent crash")


class FuzzResponder:
    """`fraud.check` and `payment.process` answered with planned bytes (the first attempt
    of a payment with a plan), else as the reference simulator would."""

    def __init__(self, url: str, fraud: dict[str, bytes], process: dict[str, bytes]) -> None:
        self.url, self.fraud, self.process = url, fraud, process
        self.answered: Counter[str] = Counter()
        self.nc: Any = None

    async def start(self) -> None:
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1)
        await self.nc.subscribe("fraud.check", cb=self._on_fraud)
        await self.nc.subscribe("payment.process", cb=self._on_process)
        await self.nc.flush()

    async def stop(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def _on_fraud(self, msg: Msg) -> None:
        request = codec.loads(msg.data)
        raw = self.fraud.get(request["payment_id"])
        self.answered["fraud fuzzed" if raw is not None else "fraud normal"] += 1
        if raw is None:
            raw = codec.dumps(sim_rules.fraud_reply(request))
        await msg.respond(raw)

    async def _on_process(self, msg: Msg) -> None:
        request = codec.loads(msg.data)
        raw = self.process.get(request["payment_id"]) if request["attempt"] == 1 else None
        self.answered["process fuzzed" if raw is not None else "process normal"] += 1
        if raw is None:
            raw = codec.dumps(sim_rules.process_reply(request, sim_rules.Rules()))
        await msg.respond(raw)


EXPLICIT_FRAUD: list[tuple[str, bytes]] = [
    ("NUL in reason", b'{"payment_id":"{pid}","approved":true,"risk_score":0.12,'
                      b'"reason":"ok\\u0000then"}'),
    ("lone surrogate in reason", b'{"payment_id":"{pid}","approved":true,"risk_score":0.12,'
                                 b'"reason":"x\\ud800y"}'),
    ("huge score", b'{"payment_id":"{pid}","approved":true,'
                   b'"risk_score":1e99999999999999999999999,"reason":"r"}'),
    ("tiny score", b'{"payment_id":"{pid}","approved":false,"risk_score":1e-1000027,'
                   b'"reason":"r"}'),
    ("32 places", b'{"payment_id":"{pid}","approved":true,'
                  b'"risk_score":0.12345678901234567890123456789012,"reason":"r"}'),
    ("approved as text", b'{"payment_id":"{pid}","approved":"true","risk_score":0.1,'
                         b'"reason":"r"}'),
    ("not JSON", b"\xff\x00garbage"),
]
EXPLICIT_PROCESS: list[tuple[str, bytes]] = [
    ("NUL in confirmation", b'{"payment_id":"{pid}","success":true,'
                            b'"confirmation_id":"c\\u0000d"}'),
    ("NUL in error", b'{"payment_id":"{pid}","success":false,"error_code":"e\\u0000",'
                     b'"error_message":"m\\u0000","retryable":false}'),
    ("huge number", b'{"payment_id":"{pid}","success":false,"retryable":true,'
                    b'"error_code":1e99999999999999999999999}'),
    ("not JSON", b"\x00\x01"),
]


async def test_fuzzed_nats_replies(
    private_nats: PrivateNats, kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    env = worker_env(kafka_brokers, NATS_URL=private_nats.url,
                     FRAUD_CHECK_TIMEOUT_SECONDS="2", PROCESSOR_TIMEOUT_SECONDS="2",
                     RETRY_INITIAL_DELAY_SECONDS="0.2", RETRY_MAX_DELAY_SECONDS="0.5",
                     BREAKER_FAILURE_THRESHOLD="1000000")
    run = uuid.uuid4().hex[:6]
    fraud_plan: dict[str, bytes] = {}
    process_plan: dict[str, bytes] = {}
    fraud_cases = fz.collect(fz.reply_cases(fz.FRAUD_FRAGMENTS), FRAUD_CASES)
    for i, case in enumerate(fraud_cases):
        pid = f"fr-{run}-{i:03d}"
        fraud_plan[pid] = case.materialize(pid, fz.fraud_base)
    for i, (_, template) in enumerate(EXPLICIT_FRAUD):
        pid = f"frx-{run}-{i:02d}"
        fraud_plan[pid] = template.replace(b"{pid}", pid.encode())
    process_cases = fz.collect(fz.reply_cases(fz.PROCESS_FRAGMENTS), PROCESS_CASES)
    for i, case in enumerate(process_cases):
        pid = f"pr-{run}-{i:03d}"
        process_plan[pid] = case.materialize(pid, fz.process_base)
    for i, (_, template) in enumerate(EXPLICIT_PROCESS):
        pid = f"prx-{run}-{i:02d}"
        process_plan[pid] = template.replace(b"{pid}", pid.encode())

    responder = FuzzResponder(private_nats.url, fraud_plan, process_plan)
    await responder.start()
    try:
        worker = spawn_worker(env)
        await asyncio.to_thread(worker.wait_healthy)
        pids = [*fraud_plan, *process_plan]
        await produce_positions(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                                created_items(pids, "12.50"))
        bodies = await wait_settled(worker, pids, 120)
    finally:
        await responder.stop()

    wrong = []
    outcomes: Counter[str] = Counter()
    for pid, raw in fraud_plan.items():
        state = bodies[pid]["current_state"]
        outcomes[f"fraud→{state}"] += 1
        if state not in fz.fraud_outcomes(raw, pid):
            wrong.append((pid, raw[:200], state, sorted(fz.fraud_outcomes(raw, pid))))
    for pid, raw in process_plan.items():
        got = (bodies[pid]["current_state"], len(bodies[pid]["history"]))
        outcomes[f"process→{got[0]}"] += 1
        if got not in fz.process_outcomes(raw, pid):
            wrong.append((pid, raw[:200], got, sorted(fz.process_outcomes(raw, pid))))
    print(f"\nNATS replies: {len(fraud_cases)} + {len(EXPLICIT_FRAUD)} fraud, "
          f"{len(process_cases)} + {len(EXPLICIT_PROCESS)} processor; responder "
          f"{dict(responder.answered)}; outcomes {dict(outcomes)}")
    assert not wrong, f"{len(wrong)} payments in an undefined state: {wrong[:8]}"
    nul_reason = f"frx-{run}-00"
    assert bodies[nul_reason]["current_state"] == "COMPLETED", bodies[nul_reason]

    took = await wait_db_matches_api(migrated_database_url, bodies, 60)
    _, history = await db_rows(migrated_database_url, pids)
    for pid in pids:
        for row in history[pid]:
            assert "\x00" not in json.dumps(decoded_metadata(row["metadata"])), (pid, row)
    approved = next(r for r in history[nul_reason] if r["state"] == "APPROVED")
    stored = decoded_metadata(approved["metadata"])["fraud_reason"]
    assert isinstance(stored, str) and "\x00" not in stored and stored.startswith("ok")
    sink_dlq = await read_to_end(kafka_brokers,
                                 f"{env['TOPIC_PREFIX']}payment.state.changed.dlq")
    assert sink_dlq == [], [r.value[:300] for r in sink_dlq]
    assert_alive(worker)
    print(f"every payment in a defined state and in PostgreSQL ({took:.1f}s after the API); "
          f"NUL reason stored as {stored!r}")


def post_review(worker: WorkerProcess, pid: str, body: bytes, key: str | None
                ) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(worker.url(f"/payments/{pid}/review"), data=body,
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_fuzzed_review_bodies(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers, API_TOKEN=TOKEN, FRAUD_CHECK_TIMEOUT_SECONDS="1")
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:6]
    review = [f"rv-{run}-{i:02d}" for i in range(12)]
    await produce_positions(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created",
                            created_items(review, "9.99", customer_id="noreply-c"))
    await asyncio.to_thread(wait_for_states, worker, dict.fromkeys(review, "MANUAL_REVIEW"),
                            60.0)

    # A reason with U+0000 cannot be stored: refused before anything changes.
    status, body = await asyncio.to_thread(
        post_review, worker, review[0], b'{"decision":"approve","reason":"ok\\u0000then"}',
        None)
    assert status == 400, (status, body)
    status, body = await asyncio.to_thread(post_review, worker, review[0],
                                           b"{" + b" " * 17_000 + b"}", None)
    assert status == 413, (status, body)

    cases = fz.collect(fz.review_cases, REVIEW_CASES)
    answers: Counter[int] = Counter()
    unexpected = []
    for case in cases:
        status, body = await asyncio.to_thread(post_review, worker, review[case.target],
                                               case.body, case.idempotency_key)
        answers[status] += 1
        if status not in REVIEW_ANSWERS:
            unexpected.append((status, case.body[:200], case.idempotency_key, body[:200]))
    print(f"\nPOST /payments/{{id}}/review: {len(cases)} hypothesis bodies + 2 explicit; "
          f"answers {dict(sorted(answers.items()))}")
    assert not unexpected, f"{len(unexpected)} answers outside {sorted(REVIEW_ANSWERS)}: " \
                           f"{unexpected[:8]}\n{worker.log_tail(30)}"
    bodies = await wait_settled(worker, review, 60, {"MANUAL_REVIEW", "COMPLETED", "REJECTED"})
    await wait_db_matches_api(migrated_database_url, bodies, 60)
    assert_alive(worker)
    print(f"review payments afterwards: "
          f"{dict(Counter(b['current_state'] for b in bodies.values()))}; PostgreSQL matches")
