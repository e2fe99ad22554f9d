"""The pure parts of the benchmark baseline (``benchmarks/baseline.py``): offset tracking,
settings, and the events and metadata it writes — the same contracts as the orchestrator.

The baseline itself runs against the real servers (``benchmarks/bench.py``); nothing here
needs a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from orchestrator_app.domain import codec, replies
from orchestrator_app.domain.records import PaymentCreated, PaymentStateChanged, ProcessRequest
from orchestrator_app.domain.state_machine import TRANSITIONS, State, Trigger
from tests.benchmark_util import BENCHMARKS, load_benchmark

PATH = BENCHMARKS / "baseline.py"
NOW = "2026-02-13T10:00:00.000Z"


baseline = load_benchmark("baseline")


def payment(**changes: Any) -> PaymentCreated:
    fields: dict[str, Any] = dict(payment_id="pay-1", amount=Decimal("100.50"), currency="USD",
                                  customer_id="c-1", merchant_id="m-1", status="NEW",
                                  created_at="2026-02-13T10:00:00Z")
    return PaymentCreated(**{**fields, **changes})


def test_does_not_import_the_faust_app() -> None:
    # In a fresh interpreter: other tests of this session import the app themselves.
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('b', "
            f"{str(PATH)!r}); m = importlib.util.module_from_spec(s); sys.modules['b'] = m; "
            "s.loader.exec_module(m); "
            "print(sorted(k for k in sys.modules if k.startswith(('orchestrator_app.app', "
            "'agents', 'tables', 'orchestrator_app.config'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "KAFKA_BROKERS": ""})
    assert out.stdout.strip() == "[]"


# --- offsets --------------------------------------------------------------------------------


def test_commit_offset_waits_for_every_earlier_record() -> None:
    progress = baseline.PartitionProgress()
    for offset in (10, 11, 12, 13):
        progress.add(offset)
    assert progress.committable is None
    progress.done(12)
    progress.done(13)
    assert progress.committable is None  # 10 and 11 still running
    progress.done(10)
    assert progress.committable == 11
    progress.done(11)
    assert progress.committable == 14
    assert progress.outstanding == 0


def test_a_record_never_done_holds_the_offset_back() -> None:
    progress = baseline.PartitionProgress()
    for offset in range(5):
        progress.add(offset)
    for offset in (0, 2, 3, 4):
        progress.done(offset)
    assert progress.committable == 1
    assert progress.outstanding == 4
    progress.done(99)  # unknown offsets change nothing
    progress.done(2)  # nor does a second done
    assert progress.committable == 1


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics, transaction markers: offsets need not be consecutive.
    progress = baseline.PartitionProgress()
    for offset in (3, 7, 8):
        progress.add(offset)
    progress.done(3)
    assert progress.committable == 4
    progress.done(8)
    progress.done(7)
    assert progress.committable == 9


def test_round_robin_interleaves_partitions_in_order() -> None:
    a, b = baseline.PartitionProgress(), baseline.PartitionProgress()
    out = list(baseline.round_robin([(a, [1, 2, 3]), (b, [10])]))
    assert out == [(a, 1), (b, 10), (a, 2), (a, 3)]
    assert list(baseline.round_robin([])) == []


# --- settings -------------------------------------------------------------------------------


ENV = {"KAFKA_BROKERS": "kafka://127.0.0.1:9092, 127.0.0.1:9093",
       "DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h", "NATS_URL": "nats://h"}


def test_config_defaults() -> None:
    config = baseline.Config.from_env({**ENV, "TOPIC_PREFIX": "run1."})
    assert config.kafka_brokers == ("127.0.0.1:9092", "127.0.0.1:9093")
    assert config.concurrency == 64
    assert config.fraud_timeout == 5 and config.processor_timeout == 10
    assert config.topic_in == "run1.payment.created"
    assert config.topic_out == "run1.payment.state.changed"
    assert config.group == "run1.payment-baseline"
    assert config.nats_flush_delay == 0.0
    assert baseline.Config.from_env({**ENV, "NATS_FLUSH_DELAY_MS": "6"}).nats_flush_delay == 0.006
    # The lock outlives both NATS timeouts.
    assert config.lock_ttl_ms > (config.fraud_timeout + config.processor_timeout) * 1000


@pytest.mark.parametrize("name", sorted(ENV))
def test_config_names_a_missing_variable(name: str) -> None:
    env = {k: v for k, v in ENV.items() if k != name}
    with pytest.raises(baseline.ConfigError, match=name):
        baseline.Config.from_env(env)


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_config_refuses_a_bad_concurrency(value: str) -> None:
    with pytest.raises(baseline.ConfigError, match="BASELINE_CONCURRENCY"):
        baseline.Config.from_env({**ENV, "BASELINE_CONCURRENCY": value})


@pytest.mark.parametrize("value", ["0", "nan", "inf", "soon"])
def test_config_refuses_a_bad_timeout(value: str) -> None:
    with pytest.raises(baseline.ConfigError, match="FRAUD_CHECK_TIMEOUT_SECONDS"):
        baseline.Config.from_env({**ENV, "FRAUD_CHECK_TIMEOUT_SECONDS": value})


@pytest.mark.parametrize("value", ["-1", "101", "2.5", "soon"])
def test_config_refuses_a_bad_flush_delay(value: str) -> None:
    with pytest.raises(baseline.ConfigError, match="NATS_FLUSH_DELAY_MS"):
        baseline.Config.from_env({**ENV, "NATS_FLUSH_DELAY_MS": value})


# --- events and metadata ---------------------------------------------------------------------


def test_event_has_the_orchestrators_fields_and_exact_amount() -> None:
    event = baseline.state_changed(payment(), "NEW", "FRAUD_CHECK", NOW,
                                   {"fraud_requested_at": NOW}, 2)
    assert list(event) == list(PaymentStateChanged._options.fields)
    assert event["event_id"] == "pay-1:2"
    assert b'"amount":100.50' in codec.dumps(event)
    # It decodes as the orchestrator's own record.
    assert PaymentStateChanged(**codec.loads(codec.dumps(event))).version == 2


def test_now_is_milliseconds_in_utc() -> None:
    moment, stamp = baseline.now()
    assert moment.microsecond % 1000 == 0
    assert stamp.endswith("Z") and len(stamp) == len(NOW)


def test_conflict_compares_exact_values() -> None:
    row = {"amount": Decimal("100.5000"), "currency": "USD", "customer_id": "c-1",
           "merchant_id": "m-1"}
    assert not baseline.conflicts(row, payment())
    assert baseline.conflicts(row, payment(amount=Decimal("100.51")))
    assert baseline.conflicts(row, payment(merchant_id="m-2"))


def reply(**fields: Any) -> bytes:
    return codec.dumps({"payment_id": "pay-1", **fields})


def test_fraud_outcomes() -> None:
    approved = replies.fraud_result("pay-1", reply(approved=True, risk_score=Decimal("0.0550"),
                                                   reason="Low risk"), NOW)
    assert baseline.fraud_outcome(approved) == (
        Trigger.FRAUD_PASSED, {"fraud_score": Decimal("0.0550"), "fraud_reason": "Low risk"})
    rejected = replies.fraud_result("pay-1", reply(approved=False, risk_score=Decimal("0.95"),
                                                   reason="watch list"), NOW)
    assert baseline.fraud_outcome(rejected) == (
        Trigger.FRAUD_FAILED, {"fraud_score": Decimal("0.95"), "rejection_reason": "watch list"})
    timed_out = replies.fraud_unavailable("pay-1", "fraud check timed out", NOW)
    assert baseline.fraud_outcome(timed_out) == (
        Trigger.FRAUD_UNAVAILABLE, {"review_reason": "fraud check timed out"})
    garbage = replies.fraud_result("pay-1", b"{", NOW)
    assert baseline.fraud_outcome(garbage)[0] is Trigger.FRAUD_UNAVAILABLE


REQUEST = ProcessRequest(payment_id="pay-1", amount=Decimal("1"), currency="USD",
                         customer_id="c", merchant_id="m", attempt=1)


def test_processor_success() -> None:
    command = replies.process_result(REQUEST, reply(success=True, confirmation_id="conf-1"),
                                     NOW)
    assert baseline.process_outcome(command) == (
        Trigger.PROCESSOR_SUCCEEDED, {"confirmation_id": "conf-1", "confirmed_attempt": 1})


def test_processor_failures_compensate_without_retry() -> None:
    declined = replies.process_result(REQUEST, reply(
        success=False, error_code="card_declined", error_message="Card declined",
        retryable=False), NOW)
    trigger, failed = baseline.process_outcome(declined)
    assert trigger is Trigger.PROCESSOR_FAILED
    assert failed == {"error_code": "card_declined", "error_message": "Card declined",
                      "retry_count": 0, "retryable": False}
    assert baseline.compensation(failed)["compensation_reason"] == "permanent error"
    timeout = replies.process_failure(REQUEST, "timeout", "no answer", False, NOW)
    trigger, failed = baseline.process_outcome(timeout)
    assert failed["retryable"] is True  # a timeout is retryable by policy
    assert "not retried" in baseline.compensation(failed)["compensation_reason"]


def test_every_transition_the_baseline_makes_is_in_the_state_machine() -> None:
    made = [(State.NEW, Trigger.CREATED), (State.FRAUD_CHECK, Trigger.FRAUD_PASSED),
            (State.FRAUD_CHECK, Trigger.FRAUD_FAILED),
            (State.FRAUD_CHECK, Trigger.FRAUD_UNAVAILABLE),
            (State.APPROVED, Trigger.PROCESSING_STARTED),
            (State.PROCESSING, Trigger.PROCESSOR_SUCCEEDED),
            (State.PROCESSING, Trigger.PROCESSOR_FAILED), (State.FAILED, Trigger.COMPENSATED)]
    for pair in made:
        assert pair in TRANSITIONS
    # Its saga stops at every state it cannot leave on its own.
    reached = {TRANSITIONS[pair] for pair in made}
    assert reached - {State.FRAUD_CHECK, State.APPROVED, State.PROCESSING, State.FAILED} \
        <= baseline.END_STATES
