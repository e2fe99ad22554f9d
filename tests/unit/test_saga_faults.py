"""The saga under delivery faults: a success that arrives after a failure of the same
attempt (two copies of one request, redelivered after a rebalance), and circuit-breaker
waits that would loop for ever.

"A success is a fact": the processor charged, so the payment completes, through DESIGN §2
transitions only (FAILED -> RETRY -> PROCESSING -> COMPLETED, or PROCESSING -> COMPLETED);
a payment already COMPENSATED stays so and operations get one critical alert. Breaker waits
are capped per payment (`SagaPolicy.max_circuit_waits`): then the payment compensates, and a
payment's history stays bounded whatever commands arrive.

Every outcome is checked exactly, and every command is redelivered: DUPLICATE, same effects.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator_app.domain import saga
from orchestrator_app.domain.policies import RetryPolicy
from orchestrator_app.domain.records import Command, CommandKind, Payment
from orchestrator_app.domain.saga import Outcome, SagaPolicy, Status, apply
from orchestrator_app.domain.state_machine import State, Trigger

from .design_table import EXPECTED
from .test_saga_properties import (
    DEFAULT_POLICY,
    LATE_SUCCESSES,
    PID,
    Clock,
    check_payment,
    command,
    completed,
    create_command,
    effects_key,
    fraud_ok,
    refund_result,
    result,
    run,
    seconds,
    step,
    timer_fire,
)

K = CommandKind
S = State

#: DESIGN §2 (from, to) pairs.
ALLOWED_STEPS = {(src, dst) for (src, _), dst in EXPECTED.items()}


def breaker_open(attempt: int, retry_after: float = 12.5) -> Command:
    """What the processor agent sends while its breaker is open."""
    return result(attempt, error_code="circuit_open",
                  error_message="processor circuit breaker is open", retryable=True,
                  retry_after=retry_after)


def timeout(attempt: int) -> Command:
    return result(attempt, error_code="timeout", error_message="processor did not answer",
                  retryable=True)


def ok(attempt: int, confirmation: str = "conf-late") -> Command:
    return result(attempt, success=True, confirmation_id=confirmation)


def redelivered(p: Payment, cmd: Command, outcome: Outcome, now: str,
                policy: SagaPolicy = DEFAULT_POLICY) -> None:
    """The same command again: DUPLICATE, the payment unchanged, the same effects."""
    again = apply(p, cmd, now, policy)
    assert again.status is Status.DUPLICATE, again.reason
    assert again.payment is not None and again.payment.dumps() == p.dumps()
    assert effects_key(again) == effects_key(outcome)


def states_of(outcome: Outcome) -> list[tuple[str | None, str, int]]:
    return [(e.previous_state, e.current_state, e.version) for e in outcome.events]


def processing(clock: Clock) -> Payment:
    p, _ = run(create_command(), fraud_ok(), clock=clock)
    assert (p.state, p.version, p.attempt) == ("PROCESSING", 4, 1)
    return p


# --- command ids ------------------------------------------------------------------------


def test_a_success_and_a_failure_of_one_attempt_are_different_commands() -> None:
    assert ok(1).command_id == f"{PID}:process:1:ok"
    assert timeout(1).command_id == f"{PID}:process:1:fail"
    assert refund_result(2, success=True).command_id == f"{PID}:refund:2:ok"
    assert refund_result(2).command_id == f"{PID}:refund:2:fail"


# --- a late success wins ------------------------------------------------------------------


LATE = {"confirmed_attempt": 1, "late_success": True}


def test_success_after_a_failure_of_the_same_attempt_completes() -> None:
    """FAILED (waiting for the retry backoff) -> RETRY -> PROCESSING -> COMPLETED."""
    clock = Clock()
    p = processing(clock)
    failure = timeout(1)
    p, failed = step(p, failure, clock())
    assert (p.state, p.version, p.timer_kind, p.timer_seq) == ("FAILED", 5, "retry", 3)

    now = clock()
    success = ok(1)
    q, done = step(p, success, now)
    assert done.status is Status.APPLIED
    assert states_of(done) == [("FAILED", "RETRY", 6), ("RETRY", "PROCESSING", 7),
                               ("PROCESSING", "COMPLETED", 8)]
    assert [e.metadata for e in done.events] == [
        {"retry_count": 0, **LATE},
        {**LATE, "attempt": 2},
        {"completion_timestamp": now, "confirmation_id": "conf-late", **LATE},
    ]
    assert all(e.changed_at == now for e in done.events)
    assert (q.state, q.version, q.attempt, q.retry_count, q.circuit_waits) == (
        "COMPLETED", 8, 2, 0, 0)
    # the timer is gone; nothing is sent to the processor for the bookkeeping attempt 2
    assert (q.timer_kind, q.timer_due) == (None, None) and done.timer is None
    assert done.process_requests == () and done.fraud_requests == ()
    assert done.notifications == ()
    assert q.applied[success.command_id] == [6, 8]
    assert q.applied[failure.command_id] == [5, 5]
    check_payment(q, DEFAULT_POLICY)

    # redeliveries: both results, in any order, are duplicates with their first effects
    redelivered(q, success, done, clock())
    dup = apply(q, failure, clock())
    assert dup.status is Status.DUPLICATE
    assert [e.dumps() for e in dup.events] == [e.dumps() for e in failed.events]
    assert dup.process_requests == () and dup.timer is None  # moved on: nothing re-sent
    # the retry timer that was pending is stale now; answers to attempt 2 are refused
    for stale in (timer_fire(p), ok(2), timeout(2), ok(3)):
        refused = apply(q, stale, clock())
        assert refused.status is Status.REJECTED, stale
        assert refused.payment is q and refused.events == ()


def test_success_after_the_processing_deadline_completes() -> None:
    clock = Clock()
    p = processing(clock)
    deadline = timer_fire(p)
    p, _ = step(p, deadline, clock())
    assert (p.state, p.metadata["error_code"], p.timer_kind) == ("FAILED", "timeout", "retry")
    q, done = step(p, ok(1), clock())
    assert done.status is Status.APPLIED
    assert [e.current_state for e in done.events] == ["RETRY", "PROCESSING", "COMPLETED"]
    assert q.metadata["confirmed_attempt"] == 1 and q.timer_kind is None
    redelivered(q, ok(1), done, clock())
    assert apply(q, deadline, clock()).status is Status.DUPLICATE
    check_payment(q, DEFAULT_POLICY)


def test_success_while_waiting_for_the_breaker_completes() -> None:
    clock = Clock()
    p = processing(clock)
    p, _ = step(p, breaker_open(1), clock())
    assert (p.state, p.timer_kind, p.circuit_waits) == ("FAILED", "circuit_wait", 1)
    q, done = step(p, ok(1), clock())
    assert done.status is Status.APPLIED
    assert states_of(done) == [("FAILED", "RETRY", 6), ("RETRY", "PROCESSING", 7),
                               ("PROCESSING", "COMPLETED", 8)]
    assert (q.state, q.circuit_waits, q.retry_count, q.timer_kind) == ("COMPLETED", 1, 0, None)
    redelivered(q, ok(1), done, clock())
    assert apply(q, timer_fire(p), clock()).status is Status.REJECTED
    check_payment(q, DEFAULT_POLICY)


def test_success_of_an_earlier_attempt_while_a_retry_is_in_flight_completes() -> None:
    """PROCESSING attempt 2 -> COMPLETED by attempt 1's success; attempt 2's answer is
    then refused as stale."""
    clock = Clock()
    p = processing(clock)
    p, _ = step(p, timeout(1), clock())
    p, _ = step(p, command(K.RETRY, requested_by="ops-1"), clock())
    assert (p.state, p.version, p.attempt, p.timer_kind) == ("PROCESSING", 7, 2, "deadline")

    now = clock()
    q, done = step(p, ok(1), now)
    assert done.status is Status.APPLIED
    assert states_of(done) == [("PROCESSING", "COMPLETED", 8)]
    assert done.events[0].metadata == {
        "completion_timestamp": now, "confirmation_id": "conf-late", **LATE}
    assert (q.state, q.attempt, q.retry_count, q.timer_kind) == ("COMPLETED", 2, 1, None)
    assert done.process_requests == () and done.notifications == ()
    redelivered(q, ok(1), done, clock())
    for newer in (ok(2, "conf-2"), timeout(2), breaker_open(2)):
        refused = apply(q, newer, clock())
        assert refused.status is Status.REJECTED
        assert refused.payment is q
    assert apply(q, timer_fire(p), clock()).status is Status.REJECTED  # its deadline
    check_payment(q, DEFAULT_POLICY)


def test_success_of_attempt_one_after_attempt_two_failed_completes() -> None:
    clock = Clock()
    p = processing(clock)
    p, _ = step(p, timeout(1), clock())
    p, _ = step(p, timer_fire(p), clock())
    p, _ = step(p, timeout(2), clock())
    assert (p.state, p.attempt, p.retry_count) == ("FAILED", 2, 1)
    q, done = step(p, ok(1), clock())
    assert [e.current_state for e in done.events] == ["RETRY", "PROCESSING", "COMPLETED"]
    assert done.events[1].metadata["attempt"] == 3
    assert q.metadata["confirmed_attempt"] == 1 and q.attempt == 3
    check_payment(q, DEFAULT_POLICY)


def test_success_in_retry_goes_on_through_processing() -> None:
    """RETRY never rests (RETRY -> PROCESSING is automatic); should a stored payment be in
    it, a late success takes RETRY -> PROCESSING -> COMPLETED."""
    clock = Clock()
    p = processing(clock)
    p, _ = step(p, timeout(1), clock())
    in_retry = saga._step(p, Trigger.RETRY_SCHEDULED, clock(), {"retry_count": 0},
                          DEFAULT_POLICY)
    assert in_retry.state == "RETRY"
    q, done = step(in_retry, ok(1), clock())
    assert done.status is Status.APPLIED
    assert states_of(done) == [("RETRY", "PROCESSING", 7), ("PROCESSING", "COMPLETED", 8)]
    assert q.timer_kind is None


def test_success_after_compensation_alerts_operations_once() -> None:
    """COMPENSATED is terminal: the state stays, the fact is recorded, ops are alerted."""
    clock = Clock()
    p = processing(clock)
    declined = result(1, error_code="card_declined", error_message="declined")
    p, _ = step(p, declined, clock())
    assert (p.state, p.version) == ("COMPENSATED", 6)
    compensated_metadata = dict(p.metadata)

    now = clock()
    success = ok(1, "conf-77")
    q, late = step(p, success, now)
    assert late.status is Status.APPLIED
    assert late.events == () and late.process_requests == () and late.timer is None
    assert (q.state, q.version, q.previous_state) == ("COMPENSATED", 6, "FAILED")
    assert q.history == p.history
    assert q.metadata == {**compensated_metadata, LATE_SUCCESSES: [
        {"attempt": 1, "confirmation_id": "conf-77", "received_at": now,
         "command_id": success.command_id},
    ]}
    assert q.applied[success.command_id] == [7, 6]  # applied without a transition
    (alert,) = late.notifications
    assert alert.asdict() == {
        "notification_id": f"{PID}:late-success:1:operations",
        "audience": "operations", "event": "LATE_PROCESSOR_SUCCESS", "severity": "critical",
        "payment_id": PID, "customer_id": "customer-123", "merchant_id": "merchant-456",
        "amount": Decimal("100.50"), "currency": "USD", "state": "COMPENSATED",
        "reason": "the processor confirmed attempt 1 (confirmation 'conf-77') after the "
                  "payment was compensated: the customer may have been charged; reconcile "
                  "with the processor",
        "error_code": None, "created_at": now,
    }
    check_payment(q, DEFAULT_POLICY)

    # redelivered: the same alert again (consumers dedupe by notification_id), no change
    redelivered(q, success, late, clock())
    # the same fact under another id (its first id forgotten): still one record
    other = command(K.PROCESS_RESULT, command_id="other-id", attempt=1, success=True,
                    confirmation_id="conf-77")
    seen = apply(q, other, clock())
    assert seen.status is Status.DUPLICATE
    assert seen.payment is q
    assert [n.dumps() for n in seen.notifications] == [alert.dumps()]
    # the failure that compensated it, redelivered: a duplicate; nothing else moves it,
    # and a success of an attempt never started is refused
    assert apply(q, declined, clock()).status is Status.DUPLICATE
    late_failure = command(K.PROCESS_RESULT, attempt=1, success=False, error_code="timeout")
    for refused in (ok(2), late_failure, command(K.RETRY), command(K.REFUND)):
        assert apply(q, refused, clock()).status is Status.REJECTED, refused


def test_each_late_attempt_after_compensation_is_alerted() -> None:
    clock = Clock()
    p = processing(clock)
    for attempt in (1, 2, 3):
        p, _ = step(p, timeout(attempt), clock())
        p, _ = step(p, timer_fire(p), clock())
    p, _ = step(p, timeout(4), clock())
    assert (p.state, p.attempt) == ("COMPENSATED", 4)
    ids = []
    for attempt in (2, 4, 1):
        p, late = step(p, ok(attempt, f"conf-{attempt}"), clock())
        assert late.status is Status.APPLIED
        ids += [n.notification_id for n in late.notifications]
    assert ids == [f"{PID}:late-success:{n}:operations" for n in (2, 4, 1)]
    assert [e["attempt"] for e in p.metadata[LATE_SUCCESSES]] == [2, 4, 1]
    check_payment(p, DEFAULT_POLICY)


def test_late_success_in_states_where_it_changes_nothing_is_refused() -> None:
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), ok(1, "conf-1"), clock=clock)
    assert p.state == "COMPLETED"
    # another copy also succeeded: the same id, so a duplicate
    assert apply(p, ok(1, "conf-1b"), clock()).status is Status.DUPLICATE
    # a success under another id (say, from the watchdog's re-sent request): refused
    other = command(K.PROCESS_RESULT, attempt=1, success=True, confirmation_id="conf-1c")
    refused = apply(p, other, clock())
    assert refused.status is Status.REJECTED and refused.payment is p
    assert refused.trigger is Trigger.PROCESSOR_SUCCEEDED
    # a failure after the success changes nothing either: the success is the fact
    assert apply(p, timeout(1), clock()).status is Status.REJECTED
    # before any attempt (FRAUD_CHECK) a success of attempt 1 is nonsense
    fresh, _ = run(create_command())
    assert apply(fresh, ok(1), clock()).status is Status.REJECTED


# --- refunds ----------------------------------------------------------------------------


def refund_requested(clock: Clock) -> Payment:
    p, _ = step(completed(clock), command(K.REFUND, command_id="refund-1",
                                          requested_by="ops-1"), clock())
    assert (p.refund_pending, p.refund_attempt, p.timer_kind) == (True, 1, "refund_deadline")
    return p


def test_refund_success_after_its_timeout_refunds() -> None:
    clock = Clock()
    p = refund_requested(clock)
    p, _ = step(p, timer_fire(p), clock())  # the deadline: waits for a retry
    assert (p.timer_kind, p.refund_pending, p.refund_attempt) == ("refund_retry", True, 1)
    now = clock()
    success = refund_result(1, success=True, refund_id="ref-late")
    q, done = step(p, success, now)
    assert done.status is Status.APPLIED
    assert states_of(done) == [("COMPLETED", "REFUNDED", 6)]
    assert done.events[0].metadata == {
        "refund_id": "ref-late", "refunded_at": now,
        "refund_requested_at": p.metadata["refund_requested_at"],
        "refund_requested_by": "ops-1", "confirmed_refund_attempt": 1, "late_success": True,
    }
    assert (q.state, q.refund_pending, q.timer_kind) == ("REFUNDED", False, None)
    assert done.notifications == () and done.process_requests == ()
    redelivered(q, success, done, clock())
    assert apply(q, timer_fire(p), clock()).status is Status.REJECTED
    check_payment(q, DEFAULT_POLICY)


def test_refund_success_of_attempt_one_while_attempt_two_is_in_flight_refunds() -> None:
    clock = Clock()
    p = refund_requested(clock)
    p, _ = step(p, refund_result(1, error_code="timeout", retryable=True), clock())
    p, _ = step(p, timer_fire(p), clock())
    assert (p.refund_attempt, p.timer_kind) == (2, "refund_deadline")
    q, done = step(p, refund_result(1, success=True, refund_id="ref-1"), clock())
    assert done.status is Status.APPLIED
    assert done.events[0].metadata["confirmed_refund_attempt"] == 1
    assert q.state == "REFUNDED"
    # attempt 2's answer is stale now
    assert apply(q, refund_result(2, success=True), clock()).status is Status.REJECTED
    assert apply(q, refund_result(2), clock()).status is Status.REJECTED
    check_payment(q, DEFAULT_POLICY)


def test_refund_success_after_the_refund_was_given_up_refunds_and_tells_operations() -> None:
    clock = Clock()
    p = refund_requested(clock)
    refused = refund_result(1, error_code="refund_declined", retryable=False)
    p, gave_up = step(p, refused, clock())
    assert p.metadata["refund_status"] == "failed" and not p.refund_pending
    assert [n.event for n in gave_up.notifications] == ["REFUND_FAILED"]

    now = clock()
    success = refund_result(1, success=True, refund_id="ref-9")
    q, done = step(p, success, now)
    assert done.status is Status.APPLIED
    assert states_of(done) == [("COMPLETED", "REFUNDED", 6)]
    assert done.events[0].metadata["refund_previously_failed"] is True
    (note,) = done.notifications
    assert (note.notification_id, note.audience, note.event, note.severity, note.state) == (
        f"{PID}:6:operations", "operations", "LATE_REFUND_SUCCESS", "warning", "REFUNDED")
    assert "do not refund again" in note.reason and note.created_at == now
    redelivered(q, success, done, clock())
    check_payment(q, DEFAULT_POLICY)


# --- circuit-breaker waits are capped ------------------------------------------------------


def test_breaker_waits_are_capped_then_the_payment_compensates() -> None:
    policy = SagaPolicy(max_circuit_waits=3)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), policy=policy, clock=clock)
    for n in (1, 2, 3):
        cmd = breaker_open(n)
        now = clock()
        p, waiting = step(p, cmd, now, policy)
        assert waiting.status is Status.APPLIED
        assert (p.state, p.timer_kind, p.circuit_waits, p.retry_count) == (
            "FAILED", "circuit_wait", n, 0)
        assert p.timer_due == seconds(now) + 12.5
        assert p.metadata["circuit_waits"] == n
        assert waiting.notifications == ()
        redelivered(p, cmd, waiting, clock(), policy)
        fire = timer_fire(p)
        p, fired = step(p, fire, clock(), policy)
        assert [e.current_state for e in fired.events] == ["RETRY", "PROCESSING"]
        assert fired.events[0].metadata == {"retry_count": 0}  # not counted as a retry
        assert [r.attempt for r in fired.process_requests] == [n + 1]
        redelivered(p, fire, fired, clock(), policy)
        check_payment(p, policy)
    assert (p.version, len(p.history)) == (13, 13)

    now = clock()
    last = breaker_open(4)
    p, gave_up = step(p, last, now, policy)
    assert gave_up.status is Status.APPLIED
    assert states_of(gave_up) == [("PROCESSING", "FAILED", 14), ("FAILED", "COMPENSATED", 15)]
    assert gave_up.events[0].metadata == {
        "error_code": "circuit_open", "error_message": "processor circuit breaker is open",
        "retry_count": 0, "retryable": True, "circuit_waits": 3,
    }
    assert p.history[-1].metadata == {
        "compensation_reason": "processor unavailable", "error_code": "circuit_open",
        "error_message": "processor circuit breaker is open", "retry_count": 0,
        "customer_notified": True, "circuit_waits": 3,
    }
    assert (p.state, p.circuit_waits, p.timer_kind) == ("COMPENSATED", 3, None)
    customer, operations = gave_up.notifications
    assert (customer.notification_id, customer.event, customer.severity) == (
        f"{PID}:15:customer", "PAYMENT_FAILED", "info")
    assert (operations.notification_id, operations.event, operations.severity) == (
        f"{PID}:15:operations", "PAYMENT_COMPENSATED", "critical")
    assert operations.reason == ("processor unavailable: circuit_open processor circuit "
                                 "breaker is open")
    assert operations.created_at == now
    redelivered(p, last, gave_up, clock(), policy)
    check_payment(p, policy)


def test_default_cap_is_ten_waits() -> None:
    assert SagaPolicy().max_circuit_waits == 10
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), clock=clock)
    for n in range(1, 11):
        p, _ = step(p, breaker_open(n), clock())
        assert p.timer_kind == "circuit_wait"
        p, _ = step(p, timer_fire(p), clock())
    p, _ = step(p, breaker_open(11), clock())
    assert p.state == "COMPENSATED" and p.circuit_waits == 10
    assert len(p.history) == 4 + 3 * 10 + 2


def test_no_breaker_waits_allowed_compensates_at_the_first_open_breaker() -> None:
    policy = SagaPolicy(max_circuit_waits=0)
    p, outcomes = run(create_command(), fraud_ok(), breaker_open(1), policy=policy)
    assert [e.current_state for e in outcomes[-1].events] == ["FAILED", "COMPENSATED"]
    assert p.metadata["compensation_reason"] == "processor unavailable"


def test_the_cap_leaves_the_retry_budget_alone() -> None:
    """After the waits ran out, an ordinary retryable failure still retries with backoff;
    an ordinary failure never spends the waits."""
    policy = SagaPolicy(max_circuit_waits=1)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), breaker_open(1), policy=policy, clock=clock)
    p, _ = step(p, timer_fire(p), clock(), policy)
    p, _ = step(p, timeout(2), clock(), policy)
    assert (p.state, p.timer_kind, p.circuit_waits, p.retry_count) == (
        "FAILED", "retry", 1, 0)
    p, _ = step(p, timer_fire(p), clock(), policy)
    assert (p.state, p.attempt, p.retry_count) == ("PROCESSING", 3, 1)
    p, _ = step(p, breaker_open(3), clock(), policy)
    assert p.state == "COMPENSATED"
    assert p.metadata["compensation_reason"] == "processor unavailable"


def test_late_success_still_wins_after_breaker_waits_ran_out() -> None:
    policy = SagaPolicy(max_circuit_waits=0)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), breaker_open(1), policy=policy, clock=clock)
    assert p.state == "COMPENSATED"
    p, late = step(p, ok(1), clock(), policy)
    assert [n.event for n in late.notifications] == ["LATE_PROCESSOR_SUCCESS"]


def test_refund_breaker_waits_are_capped_then_the_refund_fails() -> None:
    policy = SagaPolicy(max_circuit_waits=2)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), ok(1, "conf-1"), command(K.REFUND),
               policy=policy, clock=clock)
    for n in (1, 2):
        cmd = refund_result(n, error_code="circuit_open", retryable=True, retry_after=5.0)
        now = clock()
        p, waiting = step(p, cmd, now, policy)
        assert (p.timer_kind, p.refund_circuit_waits, p.refund_retries) == (
            "refund_retry", n, 0)
        assert p.timer_due == seconds(now) + 5.0
        redelivered(p, cmd, waiting, clock(), policy)
        p, asked = step(p, timer_fire(p), clock(), policy)
        assert [(r.operation, r.attempt) for r in asked.process_requests] == [("refund", n + 1)]
    now = clock()
    last = refund_result(3, error_code="circuit_open", retryable=True, retry_after=5.0)
    p, gave_up = step(p, last, now, policy)
    assert gave_up.status is Status.APPLIED and gave_up.events == ()
    assert (p.state, p.refund_pending, p.timer_kind) == ("COMPLETED", False, None)
    assert p.metadata["refund_status"] == "failed"
    assert p.metadata["refund_failure_reason"] == "processor unavailable"
    assert p.metadata["refund_failed_at"] == now
    (alert,) = gave_up.notifications
    assert (alert.notification_id, alert.event, alert.severity) == (
        f"{PID}:refund:3:operations", "REFUND_FAILED", "critical")
    redelivered(p, last, gave_up, clock(), policy)
    check_payment(p, policy)
    # a new refund request starts with a fresh allowance of waits
    p, _ = step(p, command(K.REFUND), clock(), policy)
    assert (p.refund_pending, p.refund_circuit_waits, p.refund_attempt) == (True, 0, 4)


# --- property: history stays bounded -------------------------------------------------------


def history_bound(policy: SagaPolicy) -> int:
    """NEW, FRAUD_CHECK, MANUAL_REVIEW, APPROVED, PROCESSING; three entries (FAILED, RETRY,
    PROCESSING) per retry or breaker wait; then two more at most (FAILED + COMPENSATED, or
    COMPLETED + REFUNDED)."""
    return 5 + 3 * (policy.retry.max_retries + policy.max_circuit_waits) + 2


@st.composite
def hostile_command(draw: st.DrawFn, p: Payment, sent: list[Command]) -> Command:
    """Mostly what keeps a payment looping: open breakers, fired timers, API retries; now
    and then successes (current or late), ordinary failures and redeliveries."""
    if sent and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(sent))
    attempt = draw(st.sampled_from([p.attempt] * 4 + [max(p.attempt - 1, 0), p.attempt + 1]))
    choices: list[Command] = [
        breaker_open(attempt, draw(st.sampled_from([0.0, 12.5, 1e9]))),
        breaker_open(attempt),
        timer_fire(p),
        timer_fire(p),
        command(K.RETRY),
        timeout(attempt),
        refund_result(max(p.refund_attempt, 1), error_code="circuit_open", retryable=True,
                      retry_after=1.0),
    ]
    if draw(st.integers(0, 19)) == 0:
        choices.append(ok(attempt))
    if p.state == "COMPLETED" and draw(st.booleans()):
        choices.append(command(K.REFUND))
    if p.state == "FRAUD_CHECK":
        choices.append(fraud_ok())
    if p.state == "MANUAL_REVIEW":
        choices.append(command(K.REVIEW, decision="approve", reason="ok"))
    return draw(st.sampled_from(choices))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=st.data(),
    retries=st.sampled_from([0, 1, 3]),
    waits=st.sampled_from([0, 1, 2, 5, 10]),
)
def test_no_command_sequence_grows_history_without_bound(
    data: st.DataObject, retries: int, waits: int,
) -> None:
    policy = SagaPolicy(retry=RetryPolicy(max_retries=retries), max_circuit_waits=waits)
    clock = Clock()
    p = apply(None, create_command(), clock(), policy).payment
    assert p is not None
    sent: list[Command] = []
    for _ in range(data.draw(st.integers(1, 400), label="steps")):
        cmd = data.draw(hostile_command(p, sent))
        outcome = apply(p, cmd, clock(), policy)
        if outcome.status is Status.APPLIED:
            sent.append(cmd)
        assert outcome.payment is not None
        p = outcome.payment
        assert len(p.history) <= history_bound(policy), [h.state for h in p.history]
        assert p.circuit_waits <= waits and p.refund_circuit_waits <= waits
        for before, after in zip(p.history, p.history[1:], strict=False):
            assert (State(before.state), State(after.state)) in ALLOWED_STEPS
    event(f"ended {p.state}")
    check_payment(p, policy)


@given(retries=st.integers(0, 5), waits=st.integers(0, 15), retry_after=st.floats(0, 1e12))
@settings(max_examples=60, deadline=None)
def test_an_endless_outage_ends_in_compensation(retries: int, waits: int,
                                                retry_after: float) -> None:
    """The processor's breaker never closes: fire every timer, answer every attempt with
    "breaker open"; the payment compensates after exactly `waits` waits."""
    policy = SagaPolicy(retry=RetryPolicy(max_retries=retries), max_circuit_waits=waits)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), policy=policy, clock=clock)
    for _ in range(waits + 1):
        p, _ = step(p, breaker_open(p.attempt, retry_after), clock(), policy)
        if p.state == "COMPENSATED":
            break
        p, _ = step(p, timer_fire(p), clock(), policy)
    assert p.state == "COMPENSATED"
    assert (p.circuit_waits, p.retry_count, p.attempt) == (waits, 0, waits + 1)
    assert len(p.history) == 4 + 3 * waits + 2
    assert p.metadata["compensation_reason"] == "processor unavailable"
