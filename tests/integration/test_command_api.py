"""The command API (refund, retry, review) against real servers and real worker processes:
bearer auth, the Redis rate limit and Idempotency-Key, the saga transitions each command
drives, and forwarding to the replica that owns the payment.

Tokens are unique per test: the rate-limit and idempotency records in Redis are keyed by
client (a hash of the token), and Redis is shared by the whole test session.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis

from tests.kafka_util import produce, read_to_end, read_until
from tests.saga_util import created_event, get_state, partition_of, states, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

ACTIONS = ("refund", "retry", "review", "process")
COMPLETED_PATH = ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
REVIEW_PATH = ["NEW", "FRAUD_CHECK", "MANUAL_REVIEW"]
APPROVE = {"decision": "approve", "reason": "documents checked"}


# --- helpers ------------------------------------------------------------------------------


def new_token() -> str:
    return f"tok-{uuid.uuid4().hex[:20]}"


def client_id(token: str) -> str:
    """The client id the API derives from a token (orchestrator_app.auth.authenticate)."""
    return "client-" + hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw, parse_float=Decimal)


def post(
    worker: WorkerProcess, payment_id: str, action: str, body: Any = None, *,
    token: str | None = None, key: str | None = None, raw: bytes | None = None,
    authorization: str | None = None,
) -> Reply:
    """POST /payments/{id}/{action}: `body` as JSON, or `raw` bytes as they are."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(
        worker.url(f"/payments/{payment_id}/{action}"), data=data, method="POST",
        headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def error_of(reply: Reply) -> str:
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply
    return str(reply.json["error"])


def start_worker(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess] | None, **overrides: str,
) -> tuple[WorkerProcess, dict[str, str]]:
    env = worker_env(kafka_brokers, **overrides)
    if spawn_simulator is not None:
        spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    return worker, env


async def create(
    kafka_brokers: str, env: dict[str, str], payments: dict[str, tuple[str, str]]
) -> None:
    """payment_id -> (customer_id, merchant_id) on payment.created (simulator prefixes)."""
    await produce(kafka_brokers, f"{env['TOPIC_PREFIX']}payment.created", [
        (pid.encode(), created_event(pid, "25.50", customer_id=c, merchant_id=m))
        for pid, (c, m) in payments.items()
    ])


def state_of(worker: WorkerProcess, payment_id: str) -> dict[str, Any]:
    status, body = get_state(worker, payment_id)
    assert status == 200, body
    return body


def api_counts(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    """payment_api_commands_total by (action, status) on this replica."""
    status, text = worker.get("/metrics")
    assert status == 200
    pattern = re.compile(
        r'^payment_api_commands_total\{action="(\w+)",status="(\d+)"\} ([0-9.e+]+)$', re.M)
    return {(a, s): float(v) for a, s, v in pattern.findall(text.decode())}


def fresh_rate_window(margin: float = 12.0) -> None:
    """Start a burst early in a minute: the limiter counts in fixed minute buckets."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# --- authentication -----------------------------------------------------------------------


async def test_api_disabled_without_token(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    worker, _ = start_worker(kafka_brokers, worker_env, spawn_worker, None, API_TOKEN="")
    for action in ACTIONS:
        for token in (None, new_token()):
            reply = post(worker, f"any-{action}", action, {}, token=token)
            assert reply.status == 503, (action, reply)
            assert error_of(reply) == "api_disabled"


async def test_bearer_authentication(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token_a, token_b = new_token(), new_token()
    worker, env = start_worker(kafka_brokers, worker_env, spawn_worker, spawn_simulator,
                               API_TOKEN=f"{token_a}, {token_b}")
    run = uuid.uuid4().hex[:6]
    pay_a, pay_b = f"auth-{run}-a", f"auth-{run}-b"
    await create(kafka_brokers, env, {pay_a: ("cust", "m"), pay_b: ("cust", "m")})
    wait_for_states(worker, {pay_a: "COMPLETED", pay_b: "COMPLETED"}, 60.0)

    for action in ACTIONS:
        # Authentication comes first: no answer says whether the payment exists.
        for pid in (pay_a, f"unknown-{run}"):
            reply = post(worker, pid, action, {})
            assert reply.status == 401, (action, reply)
            assert error_of(reply) == "unauthorized"
            assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    refused = {
        f"Bearer tok-{uuid.uuid4().hex[:20]}": 403,  # well-formed, not configured
        f"Bearer {token_a[:-1]}": 403,  # a prefix of a real token
        f"Bearer {token_a}x": 403,
        f"Bearer {token_a},{token_b}": 403,  # the whole setting is not a token
        f"Basic {token_a}": 401,
        f"Token {token_a}": 401,
        token_a: 401,  # no scheme at all
        "Bearer": 401,
        "Bearer   ": 401,
    }
    for authorization, expected in refused.items():
        reply = post(worker, pay_a, "refund", {}, authorization=authorization)
        assert reply.status == expected, (authorization, reply)
        assert error_of(reply) == ("forbidden" if expected == 403 else "unauthorized")
        if expected == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    assert state_of(worker, pay_a)["current_state"] == "COMPLETED"

    # Both configured tokens work; the scheme is case-insensitive (RFC 7235).
    reply = post(worker, f"unknown-{run}", "refund", {}, authorization=f"bearer {token_b}")
    assert reply.status == 404 and error_of(reply) == "not_found", reply
    for pid, token in ((pay_a, token_a), (pay_b, token_b)):
        reply = post(worker, pid, "refund", {"reason": "auth test"}, token=token)
        assert reply.status == 202, reply
        assert reply.json["status"] == "accepted"
    wait_for_states(worker, {pay_a: "REFUNDED", pay_b: "REFUNDED"}, 30.0)


# --- rate limit ---------------------------------------------------------------------------


async def test_rate_limit_per_client(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    # Two clients per attempt: a retried attempt must not inherit the first one's counts.
    tokens = [new_token() for _ in range(4)]
    worker, _ = start_worker(kafka_brokers, worker_env, spawn_worker, None,
                             API_TOKEN=",".join(tokens), API_RATE_LIMIT_PER_MINUTE="5")
    run = uuid.uuid4().hex[:6]
    for attempt in range(2):
        limited_client, other_client = tokens[2 * attempt], tokens[2 * attempt + 1]
        fresh_rate_window()
        minute = int(time.time() // 60)
        replies = [post(worker, f"rl-{run}-{attempt}-{i}", "refund", {}, token=limited_client)
                   for i in range(7)]
        other = post(worker, f"rl-{run}-other-{attempt}", "refund", {}, token=other_client)
        if int(time.time() // 60) == minute:
            break
        # The burst straddled a minute boundary (counts split over two buckets): once more.
    statuses = [r.status for r in replies]
    assert statuses == [404] * 5 + [429] * 2, statuses
    for limited in replies[5:]:
        assert error_of(limited) == "rate_limited"
        retry_after = limited.headers["Retry-After"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after
    # Another client has its own budget.
    assert other.status == 404, other
    # A refused token is not a client: it neither counts nor is limited as one.
    assert post(worker, f"rl-{run}", "refund", {}, token=new_token()).status == 403


# --- Idempotency-Key ----------------------------------------------------------------------


async def test_idempotency_key(
    kafka_brokers: str, redis_url: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token_a, token_b = new_token(), new_token()
    worker, env = start_worker(kafka_brokers, worker_env, spawn_worker, spawn_simulator,
                               API_TOKEN=f"{token_a},{token_b}",
                               FRAUD_CHECK_TIMEOUT_SECONDS="1")
    run = uuid.uuid4().hex[:6]
    pay_p, pay_q = f"idem-{run}-p", f"idem-{run}-q"
    await create(kafka_brokers, env, {pay_p: ("noreply-c", "m"), pay_q: ("noreply-c", "m")})
    wait_for_states(worker, {pay_p: "MANUAL_REVIEW", pay_q: "MANUAL_REVIEW"}, 60.0)
    key = f"review-{run}:1"

    first = post(worker, pay_p, "review", APPROVE, token=token_a, key=key)
    assert first.status == 202, first
    assert "Idempotent-Replayed" not in first.headers
    command_id = first.json["command_id"]
    # Same key, same request (key order and spacing do not matter): the first answer again.
    for raw in (json.dumps(APPROVE).encode(),
                b'{ "reason" : "documents checked", "decision": "approve" }'):
        again = post(worker, pay_p, "review", raw=raw, token=token_a, key=key)
        assert (again.status, again.json) == (202, first.json), again
        assert again.raw == first.raw
        assert again.headers.get("Idempotent-Replayed") == "true"
    # Same key, another request: 422, whatever differs.
    for pid, action, body in ((pay_p, "review", {**APPROVE, "reason": "other reason"}),
                              (pay_p, "review", {**APPROVE, "decision": "reject"}),
                              (pay_q, "review", APPROVE),
                              (pay_p, "refund", {})):
        reused = post(worker, pid, action, body, token=token_a, key=key)
        assert reused.status == 422, (pid, action, body, reused)
        assert error_of(reused) == "idempotency_key_reused"
    # The same key from another client is its own key.
    other = post(worker, pay_q, "review", APPROVE, token=token_b, key=key)
    assert other.status == 202, other
    assert "Idempotent-Replayed" not in other.headers
    assert other.json["command_id"] != command_id
    replayed = post(worker, pay_q, "review", APPROVE, token=token_b, key=key)
    assert replayed.raw == other.raw and replayed.headers.get("Idempotent-Replayed") == "true"
    # Malformed keys.
    for bad in ("has space", "slash/key", "x" * 256, "", "semi;colon"):
        reply = post(worker, pay_p, "review", APPROVE, token=token_a, key=bad)
        assert reply.status == 400, (bad, reply)
        assert error_of(reply) == "invalid_idempotency_key"
    assert post(worker, pay_p, "review", APPROVE, token=token_a, key="k" * 255).status == 409

    # Exactly one command applied: one review transition, one command on the topic.
    done = wait_for_states(worker, {pay_p: "COMPLETED", pay_q: "COMPLETED"}, 30.0)
    assert states(done[pay_p]["history"]) == [*REVIEW_PATH, *COMPLETED_PATH[2:]]
    assert done[pay_p]["metadata"]["confirmation_id"]

    # Both are COMPLETED, so every review command sent is on the topic by now.
    records = await read_to_end(kafka_brokers, f"{env['TOPIC_PREFIX']}orchestrator-commands")
    reviews = [json.loads(r.value) for r in records]
    reviews = [c for c in reviews if c["kind"] == "review"]
    assert [c["command_id"] for c in reviews if c["payment_id"] == pay_p] == [command_id]
    assert len([c for c in reviews if c["payment_id"] == pay_q]) == 1

    # Keys are kept 24 h (Stripe's rule), per client.
    redis = aioredis.Redis.from_url(redis_url)
    try:
        name = f"po:idem:{client_id(token_a)}:{key}"
        ttl = await redis.ttl(name)
        assert 86000 < ttl <= 86400, ttl
        stored = json.loads(await redis.get(name))
        assert stored["s"] == 202
        assert await redis.ttl(f"po:idem:{client_id(token_b)}:{key}") > 86000
    finally:
        await redis.aclose()


async def test_idempotency_key_expires(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token = new_token()
    worker, env = start_worker(kafka_brokers, worker_env, spawn_worker, spawn_simulator,
                               API_TOKEN=token, IDEMPOTENCY_TTL_SECONDS="2")
    run = uuid.uuid4().hex[:6]
    pid = f"exp-{run}"
    await create(kafka_brokers, env, {pid: ("cust", "m")})
    wait_for_states(worker, {pid: "COMPLETED"}, 60.0)
    key = f"exp-{run}"
    unknown = f"exp-unknown-{run}"
    first = post(worker, unknown, "refund", {}, token=token, key=key)
    assert first.status == 404
    time.sleep(3)
    # Expired: the same key is new again (here: for another request, which would be a 422).
    fresh = post(worker, pid, "refund", {}, token=token, key=key)
    assert fresh.status == 202, fresh
    assert "Idempotent-Replayed" not in fresh.headers


# --- review -------------------------------------------------------------------------------


async def test_review(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token = new_token()
    worker, env = start_worker(kafka_brokers, worker_env, spawn_worker, spawn_simulator,
                               API_TOKEN=token, FRAUD_CHECK_TIMEOUT_SECONDS="1")
    run = uuid.uuid4().hex[:6]
    approve, reject, done = f"rv-{run}-ok", f"rv-{run}-no", f"rv-{run}-done"
    await create(kafka_brokers, env, {approve: ("noreply-c", "m"), reject: ("noreply-c", "m"),
                                      done: ("cust", "m")})
    waiting = wait_for_states(
        worker, {approve: "MANUAL_REVIEW", reject: "MANUAL_REVIEW", done: "COMPLETED"}, 60.0)
    assert states(waiting[approve]["history"]) == REVIEW_PATH

    bad_bodies: list[tuple[bytes, str]] = [
        (b"", "invalid_body"),
        (b'{"reason": "no decision"}', "invalid_body"),
        (b'{"decision": "maybe", "reason": "unsure"}', "invalid_body"),
        (b'{"decision": "APPROVE", "reason": "wrong case"}', "invalid_body"),
        (b'{"decision": "approve"}', "invalid_body"),
        (b'{"decision": "approve", "reason": ""}', "invalid_body"),
        (b'{"decision": "approve", "reason": 42}', "invalid_body"),
        (json.dumps({"decision": "approve", "reason": "r" * 501}).encode(), "invalid_body"),
        (b'{"decision": "approve", "reason": "ok", "amount": 1}', "invalid_body"),
        (b'{"decision": "approve", "reason": "ok"', "invalid_json"),
        (b"approve", "invalid_json"),
        (b'["approve", "reason"]', "invalid_body"),
        (b'"approve"', "invalid_body"),
        (b"null", "invalid_body"),
    ]
    for raw, code in bad_bodies:
        reply = post(worker, approve, "review", raw=raw, token=token)
        assert reply.status == 400, (raw, reply)
        assert error_of(reply) == code, (raw, reply.json)
    assert state_of(worker, approve)["current_state"] == "MANUAL_REVIEW"

    # Not reviewable: 409 with the current state; unknown: 404.
    conflict = post(worker, done, "review", APPROVE, token=token)
    assert conflict.status == 409, conflict
    assert conflict.json["error"] == "invalid_transition"
    assert conflict.json["current_state"] == "COMPLETED"
    missing = post(worker, f"rv-{run}-missing", "review", APPROVE, token=token)
    assert missing.status == 404 and error_of(missing) == "not_found"

    accepted = post(worker, approve, "review", APPROVE, token=token)
    assert accepted.status == 202, accepted
    assert accepted.json["current_state"] == "MANUAL_REVIEW"
    assert accepted.headers["Location"] == f"/payments/{approve}/state"
    refused = post(worker, reject, "review",
                   {"decision": "reject", "reason": "stolen card reported"}, token=token)
    assert refused.status == 202, refused
    final = wait_for_states(worker, {approve: "COMPLETED", reject: "REJECTED"}, 30.0)
    assert states(final[approve]["history"]) == [
        *REVIEW_PATH, "APPROVED", "PROCESSING", "COMPLETED"]
    assert states(final[reject]["history"]) == [*REVIEW_PATH, "REJECTED"]
    assert final[reject]["metadata"]["rejection_reason"] == "stolen card reported"
    assert final[reject]["metadata"]["reviewed_by"] == client_id(token)
    # A second decision is too late.
    late = post(worker, reject, "review", APPROVE, token=token)
    assert late.status == 409 and late.json["current_state"] == "REJECTED", late


# --- refund -------------------------------------------------------------------------------


async def test_refund(
    kafka_brokers: str, nats_url: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token = new_token()
    env = worker_env(kafka_brokers, API_TOKEN=token, FRAUD_CHECK_TIMEOUT_SECONDS="1",
                     RETRY_MAX_ATTEMPTS="5")
    prefix = env["TOPIC_PREFIX"]
    simulator = spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:6]
    ok, declined = f"rf-{run}-ok", f"rf-{run}-declined"
    rejected, review = f"rf-{run}-rejected", f"rf-{run}-review"
    twice = [f"rf-{run}-twice-{i}" for i in range(4)]
    await create(kafka_brokers, env, {
        ok: ("cust", "m"), declined: ("cust", "refund-fail-m"),
        rejected: ("fraud-c", "m"), review: ("noreply-c", "m"),
        **{pid: ("cust", "m") for pid in twice},
    })
    wait_for_states(worker, {ok: "COMPLETED", declined: "COMPLETED", rejected: "REJECTED",
                             review: "MANUAL_REVIEW", **dict.fromkeys(twice, "COMPLETED")},
                    60.0)

    for pid, state in ((rejected, "REJECTED"), (review, "MANUAL_REVIEW")):
        reply = post(worker, pid, "refund", {}, token=token)
        assert reply.status == 409, reply
        assert reply.json["error"] == "invalid_transition"
        assert reply.json["current_state"] == state
    missing = post(worker, f"rf-{run}-missing", "refund", {}, token=token)
    assert missing.status == 404 and error_of(missing) == "not_found"
    assert missing.json["payment_id"] == f"rf-{run}-missing"

    # Back to back: never two refunds, and never a 202 for a command the saga then drops:
    # the API waits for the saga's verdict on its own command. What the processor is asked
    # is seen on NATS itself (a plain subscriber gets every request on the subject).
    refund_requests: list[str] = []
    listener = await nats.connect(nats_url)

    async def heard(msg: Any) -> None:
        refund_requests.append(json.loads(msg.data)["payment_id"])

    await listener.subscribe("payment.refund", cb=heard)
    await listener.flush()
    seconds = []
    for pid in twice:
        assert post(worker, pid, "refund", {}, token=token).status == 202
        seconds.append(post(worker, pid, "refund", {}, token=token).status)
    assert seconds == [409] * len(twice), seconds
    done = wait_for_states(worker, dict.fromkeys(twice, "REFUNDED"), 30.0)
    for pid in twice:
        assert states(done[pid]["history"]) == [*COMPLETED_PATH, "REFUNDED"]
    # Each reached the processor exactly once. (The listener goes now: as a subscriber it
    # would turn NATS's "no responders" below into a timeout.)
    await listener.flush()
    await listener.close()
    for pid in twice:
        assert refund_requests.count(pid) == 1, (pid, refund_requests)

    # The processor refuses: the payment stays COMPLETED and operations are alerted.
    reply = post(worker, declined, "refund", {}, token=token)
    assert reply.status == 202, reply
    failed = wait_for_states(worker, {declined: "COMPLETED"}, 30.0,
                             accept=lambda _, b: b["metadata"].get("refund_status") == "failed")
    assert states(failed[declined]["history"]) == COMPLETED_PATH
    assert failed[declined]["metadata"]["refund_error_code"] == "refund_declined"

    def settled(records: list[Any]) -> bool:
        values = [json.loads(r.value) for r in records]
        return any(v["payment_id"] == declined for v in values)

    notes = [json.loads(r.value, parse_float=Decimal) for r in await read_until(
        kafka_brokers, f"{prefix}payment.notifications", settled, 30.0)]
    mine = [n for n in notes if n["payment_id"] == declined]
    assert {(n["audience"], n["event"]) for n in mine} == {("operations", "REFUND_FAILED")}
    assert mine[0]["error_code"] == "refund_declined"
    assert mine[0]["state"] == "COMPLETED"
    assert mine[0]["amount"] == Decimal("25.50")

    # A refund waiting for the processor (none answers: retryable, backing off): a second
    # refund is refused; once a processor is back the first one completes.
    simulator.stop()
    accepted = post(worker, ok, "refund", {"reason": "customer asked"}, token=token)
    assert accepted.status == 202, accepted
    assert accepted.json["current_state"] == "COMPLETED"
    wait_for_states(worker, {ok: "COMPLETED"}, 15.0, accept=lambda _, b: b["metadata"].get(
        "refund_error_code") == "connection_error")
    pending = post(worker, ok, "refund", {}, token=token)
    assert pending.status == 409, pending
    assert pending.json["current_state"] == "COMPLETED"
    assert "in progress" in pending.json["message"]
    spawn_simulator()
    refunded = wait_for_states(worker, {ok: "REFUNDED"}, 30.0)[ok]
    assert states(refunded["history"]) == [*COMPLETED_PATH, "REFUNDED"]
    assert refunded["metadata"]["refund_id"].startswith("ref-")
    again = post(worker, ok, "refund", {}, token=token)
    assert again.status == 409 and again.json["current_state"] == "REFUNDED", again


# --- retry on request ---------------------------------------------------------------------


async def test_retry_on_request(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token = new_token()
    worker, env = start_worker(kafka_brokers, worker_env, spawn_worker, spawn_simulator,
                               API_TOKEN=token, RETRY_INITIAL_DELAY_SECONDS="30",
                               RETRY_MAX_DELAY_SECONDS="60")
    run = uuid.uuid4().hex[:6]
    flaky, fine = f"rt-{run}-flaky", f"rt-{run}-fine"
    await create(kafka_brokers, env, {flaky: ("cust", "flaky-m"), fine: ("cust", "m")})
    waiting = wait_for_states(worker, {flaky: "FAILED", fine: "COMPLETED"}, 60.0)[flaky]
    assert waiting["metadata"]["error_code"] == "processor_unavailable"
    assert waiting["metadata"]["next_attempt_at"]

    conflict = post(worker, fine, "retry", {}, token=token)
    assert conflict.status == 409, conflict
    assert conflict.json["current_state"] == "COMPLETED"
    missing = post(worker, f"rt-{run}-missing", "retry", {}, token=token)
    assert missing.status == 404 and error_of(missing) == "not_found"
    bad = post(worker, flaky, "retry", {"decision": "approve"}, token=token)
    assert bad.status == 400 and error_of(bad) == "invalid_body"

    asked = time.monotonic()
    accepted = post(worker, flaky, "retry", {"reason": "processor is back"}, token=token)
    assert accepted.status == 202, accepted
    assert accepted.json["current_state"] == "FAILED"
    body = wait_for_states(worker, {flaky: "COMPLETED"}, 20.0)[flaky]
    assert time.monotonic() - asked < 10, "the retry waited for the backoff"
    assert states(body["history"]) == [
        *COMPLETED_PATH[:-1], "FAILED", "RETRY", "PROCESSING", "COMPLETED"]
    assert body["metadata"]["confirmation_id"]
    again = post(worker, flaky, "retry", {}, token=token)
    assert again.status == 409 and again.json["current_state"] == "COMPLETED", again


# --- routing between replicas -------------------------------------------------------------


async def test_any_replica_accepts_commands(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    token = new_token()
    env = worker_env(kafka_brokers, API_TOKEN=token, FRAUD_CHECK_TIMEOUT_SECONDS="1")
    spawn_simulator()
    first = spawn_worker(env, name="replica-a")
    second = spawn_worker(env, name="replica-b")
    first.wait_healthy()
    second.wait_healthy()
    first.wait_healthy()
    run = uuid.uuid4().hex[:6]
    candidates = [f"fw-{run}-{i}" for i in range(200)]
    ids = [pid for part in range(4)  # three payments on each partition
           for pid in [c for c in candidates if partition_of(c) == part][:3]]
    assert len(ids) == 12
    await create(kafka_brokers, env, {pid: ("noreply-c", "m") for pid in ids})
    wait_for_states(first, dict.fromkeys(ids, "MANUAL_REVIEW"), 60.0)

    # Every review goes to the first replica; the owner of each payment handles it.
    before = (api_counts(first), api_counts(second))
    answers = {}
    for pid in ids:
        reply = post(first, pid, "review", APPROVE, token=token, key=f"fw-{pid}")
        assert reply.status == 202, (pid, reply)
        answers[pid] = reply
    handled_first = api_counts(first).get(("review", "202"), 0) - before[0].get(
        ("review", "202"), 0)
    handled_second = api_counts(second).get(("review", "202"), 0) - before[1].get(
        ("review", "202"), 0)
    assert handled_first + handled_second == len(ids)
    assert 0 < handled_second < len(ids), "no request was forwarded: one replica owns all"

    # The replay through the other replica: the same answer, marked as replayed.
    for pid in ids:
        reply = post(second, pid, "review", APPROVE, token=token, key=f"fw-{pid}")
        assert (reply.status, reply.raw) == (202, answers[pid].raw), (pid, reply)
        assert reply.headers.get("Idempotent-Replayed") == "true"
        reused = post(second, pid, "review", {**APPROVE, "reason": "x"}, token=token,
                      key=f"fw-{pid}")
        assert reused.status == 422, reused
    wait_for_states(second, dict.fromkeys(ids, "COMPLETED"), 30.0)

    # And the other way round: refunds all sent to the second replica.
    for pid in ids:
        reply = post(second, pid, "refund", {}, token=token)
        assert reply.status == 202, (pid, reply)
    done = wait_for_states(first, dict.fromkeys(ids, "REFUNDED"), 30.0)
    for pid in ids:
        assert states(done[pid]["history"]) == [
            *REVIEW_PATH, "APPROVED", "PROCESSING", "COMPLETED", "REFUNDED"]
    assert api_counts(first).get(("refund", "202"), 0) > 0
    # Errors come back through the forwarding replica too.
    for worker in (first, second):
        for pid in ids:
            reply = post(worker, pid, "refund", {}, token=token)
            assert reply.status == 409 and reply.json["current_state"] == "REFUNDED", reply
        assert post(worker, ids[0], "refund", {}).headers["WWW-Authenticate"].startswith(
            "Bearer")
    assert state_of(second, ids[0]) == state_of(first, ids[0])
