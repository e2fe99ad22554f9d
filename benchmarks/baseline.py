"""The baseline: the spec's own design — a Redis lock per event, a database transaction per
transition.

What it is
  A small, plain asyncio service built the way the spec describes its Go service
  (``../shared/spec/payment-orchestrator-seed.md``, "Distributed Locking", "Saga Pattern"):
  a Kafka consumer group on ``payment.created``; for each payment a Redis lock
  (``SET lock:<payment_id> <token> NX PX <ttl>``, retried with a short sleep while another
  holder has it, released by a compare-and-delete Lua script) held while the event is
  handled — the spec's ``lock := redis.Lock(…); defer lock.Release()`` — with the NATS calls
  made inline under it; for every transition one PostgreSQL transaction that upserts
  ``payment_states`` (the row only moves forward by version) and inserts the
  ``payment_state_history`` row, followed by one awaited ``payment.state.changed`` event.
  Kafka offsets are committed by hand, only once every record before them in their
  partition is done (at-least-once).

  Written to be fair, not a straw man: the transaction is one statement (a data-modifying
  CTE: one round trip instead of BEGIN, two statements, COMMIT — in paired runs here the
  four-round-trip form took ~1.5x this process's CPU per payment, and did a median 173
  against 224 payments/s on a busy shared machine), pooled connections are handed back
  without asyncpg's reset query (one more round trip per use; no session state is used
  here), every client is pooled and asynchronous, and uvloop runs the loop when installed.

  Same contracts as the orchestrator: topics ``<TOPIC_PREFIX>payment.created`` in and
  ``<TOPIC_PREFIX>payment.state.changed`` out (created with 4 partitions when missing), the
  same events (fields, exact decimals, ``version``, ``event_id = <payment_id>:<version>``,
  state metadata keys), the same schema (``migrations/``, applied at start), the same NATS
  wire format (``fraud.check``, ``payment.process``) and the same reading of replies
  (``orchestrator_app.domain.replies``). States: NEW → FRAUD_CHECK → APPROVED → PROCESSING
  → COMPLETED (versions 1-5); REJECTED after FRAUD_CHECK when the fraud check says no;
  MANUAL_REVIEW when it times out or nobody answers; FAILED → COMPENSATED when the
  processor fails, times out or cannot be reached.

  Concurrency: up to ``BASELINE_CONCURRENCY`` payments in flight at once across all
  partitions (records of one partition are started in order but may finish in any order;
  the per-partition completion tracking keeps the commits safe, and the lock keeps two
  records of one payment from running together).

  Redelivery is harmless: under the lock the payment's row is read; a row at an end state
  (REJECTED, MANUAL_REVIEW, COMPLETED, COMPENSATED, …) is skipped, a row mid-way is continued
  from its stored version. Either way the stored version's event is sent again first — the
  process may have died between the database commit and that send; consumers dedupe on
  ``event_id``. A payment whose stored amount / currency / customer / merchant differ from
  the event is a conflict: counted, not touched. If the lock ever outlived its TTL and a
  second holder moved the row on, the version check of the upsert notices (nothing is
  written, the stale holder stops). Invalid input (``validate_created``) is counted and
  skipped. A failing server (database, Redis, Kafka) is retried with backoff, forever; the
  offset is not committed meanwhile.

Why it exists
  ``benchmarks/bench.py`` runs it beside the orchestrator, on the same servers and the same
  input, so that the orchestrator's figures have an honest reference: what the simplest
  correct implementation of the spec's design does on this machine (DESIGN §7 quotes
  ~770-870 payments/s for a prototype of this style on Tansu).

What it leaves out (on purpose: it is a yardstick, not a second product)
  * no processor retries: a failure — retryable or not — goes FAILED → COMPENSATED at once
    (metadata says which); no backoff timers, no RETRY state;
  * no circuit breakers, no deadline watchdog (a payment interrupted mid-way waits for its
    record's redelivery), no refunds, no manual-review decisions, no HTTP API, no metrics,
    no notifications topic, no dead-letter topic (invalid input is only counted);
  * a redelivered PROCESSING payment calls the processor again with ``attempt`` 1 (the
    processor is trusted to dedupe on payment_id and attempt, as the simulator's
    deterministic answers do);
  * a crashed process leaves its locks until their TTL (fraud timeout + processor timeout
    + 5 s), so a restart waits that long for the payments it had in flight.

Run (the servers from ``python -m orchestrator_app.dev.stack up --broker kafka``, a
simulator from ``payment-orchestrator simulate``)::

    KAFKA_BROKERS=… DATABASE_URL=… REDIS_URL=… NATS_URL=… TOPIC_PREFIX=run1. \\
        .venv/bin/python benchmarks/baseline.py

Settings (environment): ``KAFKA_BROKERS, DATABASE_URL, REDIS_URL, NATS_URL`` (required),
``TOPIC_PREFIX`` (""), ``BASELINE_CONCURRENCY`` (64), ``BASELINE_GROUP`` (consumer group,
default ``<TOPIC_PREFIX>payment-baseline``), ``FRAUD_CHECK_TIMEOUT_SECONDS`` (5),
``PROCESSOR_TIMEOUT_SECONDS`` (10), ``NATS_FLUSH_DELAY_MS`` (0: nats-py writes at once;
otherwise the orchestrator's own client holds pending requests that long while others await
replies), ``LOG_LEVEL`` (WARNING, on stderr). A missing or bad
setting exits 2 with one line naming it.

Output on stdout: ``baseline ready`` once subscribed and assigned partitions, then
``baseline processed N`` every 5 s (N = input records finished, whatever their outcome).
SIGTERM / SIGINT: stop fetching, finish the payments in flight (those not done within
~2.5 s are interrupted and left for redelivery), commit, exit 0 within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import ConsumerRecord, TopicPartition
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator_app.clients.nats import CoalescingClient  # noqa: E402
from orchestrator_app.domain import codec, replies  # noqa: E402
from orchestrator_app.domain.policies import RETRYABLE_ERRORS  # noqa: E402
from orchestrator_app.domain.records import CommandKind, PaymentCreated, ProcessRequest  # noqa: E402
from orchestrator_app.domain.saga import format_timestamp  # noqa: E402
from orchestrator_app.domain.state_machine import State, Trigger, next_state  # noqa: E402
from orchestrator_app.domain.validation import Invalid, validate_created  # noqa: E402
from orchestrator_app.schema import migrate  # noqa: E402

__all__ = ["Baseline", "Config", "ConfigError", "PartitionProgress", "main"]

log = logging.getLogger("baseline")

PARTITIONS = 4
REPORT_EVERY = 5.0
COMMIT_EVERY = 0.5
#: On SIGTERM: how long payments in flight may take to finish before they are interrupted.
SHUTDOWN_GRACE = 2.5
MAX_BACKOFF = 5.0

#: States at which this baseline's saga ends (MANUAL_REVIEW waits for a human; RETRY and
#: REFUNDED are never produced here but are not touched if found).
END_STATES = frozenset({State.REJECTED, State.MANUAL_REVIEW, State.COMPLETED,
                        State.COMPENSATED, State.REFUNDED, State.RETRY})

#: Deletes the lock only if it is still ours (a lock that expired and was taken by another
#: holder is left alone).
RELEASE_LOCK = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""

SELECT_STATE = """
SELECT current_state, previous_state, version, metadata::text AS metadata, updated_at,
       amount, currency, customer_id, merchant_id
FROM payment_states WHERE payment_id = $1
"""

#: One transition, in one statement (so one transaction and one round trip): advance the
#: payment's row — only forward, by version — and, only if it moved, add the history row.
#: "INSERT 0 0" means the row did not move: this version or a newer one is already stored.
TRANSITION = """
WITH moved AS (
    INSERT INTO payment_states
        (payment_id, current_state, previous_state, amount, currency, customer_id,
         merchant_id, metadata, version, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $10)
    ON CONFLICT (payment_id) DO UPDATE SET
        current_state = EXCLUDED.current_state,
        previous_state = EXCLUDED.previous_state,
        metadata = EXCLUDED.metadata,
        version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at
    WHERE payment_states.version < EXCLUDED.version
    RETURNING 1
)
INSERT INTO payment_state_history
    (payment_id, state, previous_state, version, event_id, metadata, created_at)
SELECT $1, $2, $3, $9, $11, $8::jsonb, $10 FROM moved
ON CONFLICT (payment_id, version) DO NOTHING
"""


# --- settings -----------------------------------------------------------------------------


class ConfigError(Exception):
    """A missing or malformed setting (the message names the variable)."""


@dataclass(frozen=True)
class Config:
    kafka_brokers: tuple[str, ...]
    database_url: str
    redis_url: str
    nats_url: str
    topic_prefix: str
    concurrency: int
    group: str
    fraud_timeout: float
    processor_timeout: float
    nats_flush_delay: float = 0.0

    @property
    def topic_in(self) -> str:
        return f"{self.topic_prefix}payment.created"

    @property
    def topic_out(self) -> str:
        return f"{self.topic_prefix}payment.state.changed"

    @property
    def lock_ttl_ms(self) -> int:
        """Longer than the lock can legitimately be held: both NATS calls time out, plus
        the database and Kafka work around them."""
        return int((self.fraud_timeout + self.processor_timeout + 5.0) * 1000)

    @property
    def pool_size(self) -> int:
        # A transaction holds a connection for about a millisecond; more connections than
        # this only add PostgreSQL processes competing for the same two cores.
        return max(2, min(self.concurrency, 16))

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> Config:
        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is not set")
            return value

        def number(name: str, default: str, kind: type[int] | type[float]) -> Any:
            raw = env.get(name, default).strip()
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a positive number, got {raw!r}") from None
            if not value > 0 or value != value or value == float("inf"):
                raise ConfigError(f"{name} must be a positive number, got {raw!r}")
            return value

        def flush_delay_ms(name: str) -> float:
            raw = env.get(name, "0").strip() or "0"
            if not raw.isdigit() or int(raw) > 100:
                raise ConfigError(f"{name} must be a whole number of milliseconds from 0 to "
                                  f"100, got {raw!r}")
            return int(raw) / 1000

        brokers = tuple(b.strip().removeprefix("kafka://")
                        for b in required("KAFKA_BROKERS").split(",") if b.strip())
        prefix = env.get("TOPIC_PREFIX", "")
        return cls(
            kafka_brokers=brokers,
            database_url=required("DATABASE_URL"),
            redis_url=required("REDIS_URL"),
            nats_url=required("NATS_URL"),
            topic_prefix=prefix,
            concurrency=number("BASELINE_CONCURRENCY", "64", int),
            group=env.get("BASELINE_GROUP", "").strip() or f"{prefix}payment-baseline",
            fraud_timeout=number("FRAUD_CHECK_TIMEOUT_SECONDS", "5", float),
            processor_timeout=number("PROCESSOR_TIMEOUT_SECONDS", "10", float),
            nats_flush_delay=flush_delay_ms("NATS_FLUSH_DELAY_MS"),
        )


# --- offsets --------------------------------------------------------------------------------


class PartitionProgress:
    """The records of one partition in fetch order, and how far they are done.

    Records finish in any order; the committable offset is one past the longest prefix of
    done records, so a commit never covers a record that is still running (or was never
    started).
    """

    def __init__(self) -> None:
        self._pending: deque[list[Any]] = deque()  # [offset, done], offsets increasing
        self._entries: dict[int, list[Any]] = {}
        #: The next offset to commit (None: nothing done yet).
        self.committable: int | None = None
        #: What was committed last.
        self.committed: int | None = None
        #: Set when the partition is taken away: its records not started yet are dropped.
        self.revoked = False
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, offset: int) -> None:
        entry = [offset, False]
        self._pending.append(entry)
        self._entries[offset] = entry

    def done(self, offset: int) -> None:
        entry = self._entries.pop(offset, None)
        if entry is None:
            return
        entry[1] = True
        while self._pending and self._pending[0][1]:
            self.committable = self._pending.popleft()[0] + 1

    @property
    def outstanding(self) -> int:
        return len(self._pending)


def round_robin(batch: list[tuple[PartitionProgress, list[ConsumerRecord[Any, Any]]]]
                ) -> Iterator[tuple[PartitionProgress, ConsumerRecord[Any, Any]]]:
    """The records of a fetch, one partition after the other, each partition in order."""
    index = 0
    while True:
        row = [(progress, records[index]) for progress, records in batch
               if index < len(records)]
        if not row:
            return
        yield from row
        index += 1


# --- the events --------------------------------------------------------------------------------


def now() -> tuple[datetime, str]:
    """This instant to the millisecond: the same value in the database and in the event."""
    moment = datetime.now(UTC)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment, format_timestamp(moment)


def state_changed(payment: PaymentCreated, previous: str | None, state: str,
                  changed_at: str, metadata: dict[str, Any], version: int) -> dict[str, Any]:
    """A ``payment.state.changed`` event, field for field the orchestrator's."""
    return {
        "payment_id": payment.payment_id,
        "previous_state": previous,
        "current_state": state,
        "amount": payment.amount,
        "currency": payment.currency,
        "customer_id": payment.customer_id,
        "merchant_id": payment.merchant_id,
        "changed_at": changed_at,
        "metadata": metadata,
        "version": version,
        "event_id": f"{payment.payment_id}:{version}",
    }


def conflicts(row: Any, payment: PaymentCreated) -> bool:
    """The stored payment is not the one this event describes."""
    return (row["amount"] != payment.amount or row["currency"] != payment.currency
            or row["customer_id"] != payment.customer_id
            or row["merchant_id"] != payment.merchant_id)


def fraud_outcome(command: Any) -> tuple[Trigger, dict[str, Any]]:
    """The transition out of FRAUD_CHECK, from the command `replies` made of the answer."""
    if command.kind == CommandKind.FRAUD_RESULT.value:
        if command.approved:
            return Trigger.FRAUD_PASSED, {"fraud_score": command.risk_score,
                                          "fraud_reason": command.reason or ""}
        return Trigger.FRAUD_FAILED, {"fraud_score": command.risk_score,
                                      "rejection_reason": command.reason or ""}
    return Trigger.FRAUD_UNAVAILABLE, {"review_reason": command.reason
                                       or "fraud check unavailable"}


def process_outcome(command: Any) -> tuple[Trigger, dict[str, Any]]:
    """The transition out of PROCESSING, from the command `replies` made of the answer
    (COMPLETED also gets ``completion_timestamp``: the transition's own time)."""
    if command.success:
        return Trigger.PROCESSOR_SUCCEEDED, {"confirmation_id": command.confirmation_id or "",
                                             "confirmed_attempt": command.attempt}
    code = command.error_code or "processor_error"
    return Trigger.PROCESSOR_FAILED, {
        "error_code": code, "error_message": (command.error_message or "")[:500],
        "retry_count": 0, "retryable": bool(command.retryable) or code in RETRYABLE_ERRORS,
    }


def compensation(failed: dict[str, Any]) -> dict[str, Any]:
    """FAILED → COMPENSATED metadata, from the FAILED state's metadata."""
    reason = ("retryable error, not retried (the baseline has no retries)"
              if failed.get("retryable") else "permanent error")
    return {"compensation_reason": reason, "error_code": failed.get("error_code"),
            "error_message": failed.get("error_message", ""), "retry_count": 0}


class Superseded(Exception):
    """The stored row is already at this version or later: another holder moved it on."""


class Interrupted(Exception):
    """Shutting down while waiting: the record stays uncommitted (redelivered later)."""


# --- the service ----------------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.baseline.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.baseline.assigned(assigned)


class Baseline:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.partitions: dict[TopicPartition, PartitionProgress] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()
        self.processed = 0
        self.ready = False
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.nc: Any = None
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None

    # --- start and stop

    async def start(self) -> None:
        config = self.config
        await ensure_topics(config)
        await migrate(config.database_url)
        self.pool = await asyncpg.create_pool(config.database_url, min_size=2,
                                              max_size=config.pool_size, command_timeout=30,
                                              reset=_keep_session)
        # A blocking pool: a payment waits for a free connection (redis-py's default pool
        # refuses a command beyond 100 connections).
        self.redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=config.pool_size * 2, timeout=10,
            socket_timeout=10, socket_connect_timeout=5))
        await self.redis.ping()
        self._release = self.redis.register_script(RELEASE_LOCK)
        self.nc = CoalescingClient()
        self.nc.flush_delay = config.nats_flush_delay
        await self.nc.connect(servers=config.nats_url.split(","), name="baseline",
                              max_reconnect_attempts=-1, reconnect_time_wait=1)
        self.producer = AIOKafkaProducer(bootstrap_servers=list(config.kafka_brokers),
                                         acks="all", linger_ms=1, max_batch_size=256 * 1024)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=list(config.kafka_brokers), group_id=config.group,
            client_id=config.group, enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=30_000, max_poll_interval_ms=600_000,
        )
        await self.consumer.start()
        self.consumer.subscribe([config.topic_in], listener=_Listener(self))

    def stop(self) -> None:
        self.stopping.set()
        self._slot_freed.set()

    async def close(self) -> None:
        """Finish (or interrupt) what is in flight, commit, close every client: < 5 s."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("interrupted %d payments in flight (left for redelivery)",
                            len(pending))
                await asyncio.wait(pending, timeout=0.5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.commit(), 0.5)
        closers: list[Any] = []
        if self.consumer is not None:
            closers.append(self.consumer.stop())
        if self.producer is not None:
            closers.append(self.producer.stop())
        if self.nc is not None:
            closers.append(self.nc.close())
        if self.redis is not None:
            closers.append(self.redis.aclose())
        if self.pool is not None:
            closers.append(self.pool.close())
        results = await asyncio.gather(*(asyncio.wait_for(c, 1.0) for c in closers),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.info("closing: %s", result.__class__.__name__)
        if self.pool is not None and isinstance(results[-1], BaseException):
            self.pool.terminate()

    # --- partitions

    def assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.partitions[tp] = PartitionProgress()
        if assigned and not self.ready:
            self.ready = True
            print("baseline ready", flush=True)

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        """Drop records not started, let the running ones finish (bounded), commit."""
        progresses = [self.partitions[tp] for tp in revoked if tp in self.partitions]
        for progress in progresses:
            progress.revoked = True
        running = {task for progress in progresses for task in progress.tasks}
        if running:
            await asyncio.wait(running, timeout=self.config.fraud_timeout
                               + self.config.processor_timeout)
        with contextlib.suppress(Exception):
            await self.commit([tp for tp in revoked if tp in self.partitions])
        for tp in revoked:
            self.partitions.pop(tp, None)

    async def commit(self, only: list[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {tp: progress.committable for tp, progress in self.partitions.items()
                   if (only is None or tp in only) and tp in owned
                   and progress.committable is not None
                   and progress.committable != progress.committed}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("commit skipped after a rebalance (%s)", exc.__class__.__name__)
            return
        for tp, offset in offsets.items():
            progress = self.partitions.get(tp)
            if progress is not None:
                progress.committed = offset

    # --- the loop

    async def run(self) -> None:
        assert self.consumer is not None
        helpers = [asyncio.ensure_future(self._commit_loop()),
                   asyncio.ensure_future(self._report_loop())]
        try:
            while not self.stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=200,
                                                    max_records=self.config.concurrency)
                fetched = []
                for tp, records in batch.items():
                    progress = self.partitions.get(tp)
                    if progress is None or progress.revoked or not records:
                        continue
                    for record in records:
                        progress.add(record.offset)
                    fetched.append((progress, records))
                for progress, record in round_robin(fetched):
                    if not await self._slot():
                        break
                    if progress.revoked:
                        continue
                    task = asyncio.ensure_future(self._one(progress, record))
                    self.tasks.add(task)
                    progress.tasks.add(task)
                    task.add_done_callback(self._finished)
                    task.add_done_callback(progress.tasks.discard)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _slot(self) -> bool:
        """Wait until fewer than BASELINE_CONCURRENCY payments run; False when stopping."""
        while len(self.tasks) >= self.config.concurrency and not self.stopping.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return not self.stopping.is_set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("payment task failed", exc_info=task.exception())

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY)
            try:
                await self.commit()
            except (KafkaError, OSError) as exc:
                log.warning("commit failed: %s", exc)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            if self.ready:  # "baseline ready" is always the first line
                print(f"baseline processed {self.processed}", flush=True)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # --- one record

    async def _one(self, progress: PartitionProgress, record: ConsumerRecord[Any, Any]) -> None:
        """Handle one record until it is done; only then may its offset be committed."""
        payment = validate_created(record.value or b"")
        if isinstance(payment, Invalid):
            self._count(f"invalid:{payment.code}")
            progress.done(record.offset)
            return
        delay = 0.2
        while True:
            try:
                outcome = await self._payment(payment)
                break
            except Superseded:
                outcome = "superseded"
                break
            except Interrupted:
                return
            except Exception as exc:  # a server down, or a bug: retry, never commit past it
                if self.stopping.is_set():
                    return
                self.counts["errors"] += 1
                log.warning("payment %s: %s: %s; retrying in %.1fs", payment.payment_id,
                            exc.__class__.__name__, str(exc)[:200], delay)
                await self._pause(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        self._count(outcome)
        progress.done(record.offset)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.processed += 1

    async def _payment(self, payment: PaymentCreated) -> str:
        key = f"lock:{payment.payment_id}"
        token = uuid.uuid4().hex
        await self._lock(key, token)
        try:
            return await self._saga(payment)
        finally:
            await self._release(keys=[key], args=[token])

    async def _lock(self, key: str, token: str) -> None:
        assert self.redis is not None
        delay = 0.002
        while not await self.redis.set(key, token, nx=True, px=self.config.lock_ttl_ms):
            if self.stopping.is_set():
                raise Interrupted
            if delay == 0.002:
                self.counts["lock_waits"] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _saga(self, payment: PaymentCreated) -> str:
        """Drive the payment from its stored state (read under the lock) to its end."""
        assert self.pool is not None
        row = await self.pool.fetchrow(SELECT_STATE, payment.payment_id)
        if row is None:
            state, version, metadata = await self._step(payment, None, 0, State.NEW, {})
        else:
            if conflicts(row, payment):
                return "conflict"
            state, version = State(row["current_state"]), row["version"]
            metadata = codec.loads(row["metadata"]) if row["metadata"] else {}
            # The previous run may have died between the commit and the send: send again.
            await self._emit(state_changed(payment, row["previous_state"], state.value,
                                           format_timestamp(row["updated_at"]), metadata,
                                           version))
            if state in END_STATES:
                return "already_done"
            self.counts["resumed"] += 1
        while state not in END_STATES:
            if state is State.NEW:
                trigger, extra = Trigger.CREATED, {}
            elif state is State.FRAUD_CHECK:
                trigger, extra = await self._fraud_check(payment)
            elif state is State.APPROVED:
                trigger, extra = Trigger.PROCESSING_STARTED, {"attempt": 1}
            elif state is State.PROCESSING:
                trigger, extra = await self._process(payment)
            elif state is State.FAILED:
                trigger, extra = Trigger.COMPENSATED, compensation(metadata)
            else:  # pragma: no cover - every state is handled above or in END_STATES
                raise AssertionError(f"unexpected state {state}")
            state, version, metadata = await self._step(
                payment, state, version, next_state(state, trigger), extra)
        return state.value

    async def _step(self, payment: PaymentCreated, previous: State | None, version: int,
                    target: State, metadata: dict[str, Any]
                    ) -> tuple[State, int, dict[str, Any]]:
        """One transition: one database transaction, then its event (awaited)."""
        assert self.pool is not None
        moment, stamp = now()
        if target is State.FRAUD_CHECK:
            metadata = {**metadata, "fraud_requested_at": stamp}
        if target is State.COMPLETED:
            metadata = {"completion_timestamp": stamp, **metadata}
        version += 1
        prev = previous.value if previous is not None else None
        meta_json = codec.dumps(metadata).decode()
        status = await self.pool.execute(
            TRANSITION, payment.payment_id, target.value, prev, payment.amount,
            payment.currency, payment.customer_id, payment.merchant_id, meta_json, version,
            moment, f"{payment.payment_id}:{version}")
        if status == "INSERT 0 0":
            raise Superseded
        await self._emit(state_changed(payment, prev, target.value, stamp, metadata, version))
        return target, version, metadata

    async def _emit(self, event: dict[str, Any]) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(self.config.topic_out, codec.dumps(event),
                                          key=event["payment_id"].encode())

    async def _request(self, subject: str, body: dict[str, Any], timeout: float) -> bytes | str:
        """The reply's bytes, or why there is none: ``timeout`` or ``unavailable``."""
        try:
            message = await self.nc.request(subject, codec.dumps(body), timeout=timeout)
        except NoRespondersError:
            return "unavailable"
        except TimeoutError:  # nats.errors.TimeoutError is one
            return "timeout"
        except (NatsError, OSError):
            return "unavailable"
        return bytes(message.data)

    async def _fraud_check(self, payment: PaymentCreated) -> tuple[Trigger, dict[str, Any]]:
        reply = await self._request("fraud.check", {
            "payment_id": payment.payment_id, "customer_id": payment.customer_id,
            "amount": payment.amount, "currency": payment.currency,
            "merchant_id": payment.merchant_id,
        }, self.config.fraud_timeout)
        _, stamp = now()
        if reply == "timeout":
            command = replies.fraud_unavailable(payment.payment_id, "fraud check timed out",
                                                stamp)
        elif isinstance(reply, str):
            command = replies.fraud_unavailable(payment.payment_id,
                                                "fraud service unavailable", stamp)
        else:
            command = replies.fraud_result(payment.payment_id, reply, stamp)
        return fraud_outcome(command)

    async def _process(self, payment: PaymentCreated) -> tuple[Trigger, dict[str, Any]]:
        request = ProcessRequest(payment_id=payment.payment_id, amount=payment.amount,
                                 currency=payment.currency, customer_id=payment.customer_id,
                                 merchant_id=payment.merchant_id, attempt=1)
        reply = await self._request("payment.process", replies.process_wire_body(request),
                                    self.config.processor_timeout)
        _, stamp = now()
        if reply == "timeout":
            command = replies.process_failure(request, "timeout",
                                              "processor did not answer in time", True, stamp)
        elif isinstance(reply, str):
            command = replies.process_failure(request, "connection_error",
                                              "no processor available", True, stamp)
        else:
            command = replies.process_result(request, reply, stamp)
        return process_outcome(command)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool as it is: nothing here changes session state, and
    asyncpg's default reset costs one more round trip per release (measured: a third of the
    baseline's database time)."""


async def ensure_topics(config: Config, timeout: float = 60.0) -> None:
    """Create the two topics when missing, and wait until the broker lists them."""
    wanted = [config.topic_in, config.topic_out]
    admin = AIOKafkaAdminClient(bootstrap_servers=list(config.kafka_brokers),
                                request_timeout_ms=10_000)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await admin.start()
            break
        except Exception as exc:  # aiokafka raises several kinds while the broker starts
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka not reachable: {exc}") from exc
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        for name in wanted:
            if name not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS,
                                                        replication_factor=1)])
        while not set(wanted) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout}s: {wanted}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def amain(config: Config) -> int:
    baseline = Baseline(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, baseline.stop)
    started = time.monotonic()
    try:
        await baseline.start()
        if not baseline.stopping.is_set():
            await baseline.run()
    finally:
        await baseline.close()
        elapsed = time.monotonic() - started
        summary = ", ".join(f"{k} {v}" for k, v in sorted(baseline.counts.items()))
        print(f"baseline: processed {baseline.processed} in {elapsed:.1f}s ({summary})",
              file=sys.stderr, flush=True)
    return 0


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "WARNING",
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env(os.environ)
    except ConfigError as exc:
        print(f"baseline: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(config))
    return uvloop.run(amain(config))


if __name__ == "__main__":
    sys.exit(main())
