"""The saga step: apply one command to one payment. Pure: no I/O, no clock, no randomness.

The saga agent calls `apply` for every command and then performs the returned effects
(write the tables, send the events, requests and notifications). Because the result depends
only on the stored payment and the command, a command redelivered after a crash returns the
*same* effects again (status `DUPLICATE`), which consumers dedupe by ``event_id``.

Waiting is state too: a payment waiting for a retry backoff, or in a state with a deadline
(FRAUD_CHECK, PROCESSING, a refund in flight) carries one timer (kind, due time, sequence
number). The timer agent turns a due timer into a TIMER command; a stale one is refused.

**A success is a fact.** Two copies of one processor request (redelivered after a
rebalance, or re-sent by the watchdog) can answer differently: one times out or fails, the
other charges the card. Results carry one command id per attempt *and outcome*
(``<pid>:process:<n>:ok`` / ``…:fail``, `replies.result_command_id`), so both reach `apply`.
A success for attempt *n* wins over whatever a failure of attempt *n* (or later) set in
motion, using only DESIGN §2 transitions:

* FAILED (waiting for a retry or breaker timer): FAILED → RETRY → PROCESSING → COMPLETED;
  the PROCESSING entry gets a fresh attempt number for which no request is ever sent;
* RETRY: RETRY → PROCESSING → COMPLETED;
* PROCESSING attempt *n + k* (a retry in flight): PROCESSING → COMPLETED;

each entry's metadata says ``confirmed_attempt: n`` and ``late_success: true``; the timer is
cleared, and the newer attempt's answer is then refused (the payment is COMPLETED). If the
payment is already COMPENSATED (terminal: the customer was told they were not charged),
the state stays, the success is recorded in the payment's metadata
(``late_processor_successes``) and operations get one critical ``LATE_PROCESSOR_SUCCESS``
notification (an applied command without a transition, deduplicated by command id and by
attempt). Refunds likewise: a refund success for any attempt of a COMPLETED payment, also
after that attempt timed out or the refund was given up, moves it to REFUNDED (after a
given-up refund, operations are told with ``LATE_REFUND_SUCCESS``).

**Breaker waits are capped.** A failure while the processor's circuit breaker is open waits
for the breaker (`TimerKind.CIRCUIT_WAIT`) without spending the retry budget, so an outage
that never ends would loop forever, three history entries (FAILED, RETRY, PROCESSING) per
wait. `SagaPolicy.max_circuit_waits` (default 10) caps the waits per payment
(`Payment.circuit_waits`, never reset): the next breaker-open failure after the cap
compensates (FAILED → COMPENSATED, ``compensation_reason`` "processor unavailable", the
customer notified and a critical operations alert, as when retries run out). A payment's
history is so bounded by about 3 * (max_retries + max_circuit_waits) + 10 entries. Refund
requests have the same cap (`Payment.refund_circuit_waits`, per refund request): then the
refund fails (``refund_status`` failed, ``REFUND_FAILED`` alert).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .policies import RETRYABLE_ERRORS, RetryPolicy
from .records import (
    Command,
    CommandKind,
    FraudCheckRequest,
    HistoryEntry,
    Notification,
    Operation,
    Payment,
    PaymentStateChanged,
    ProcessRequest,
    Timer,
)
from .state_machine import State, Trigger, is_allowed, next_state

__all__ = [
    "Outcome",
    "SagaPolicy",
    "Status",
    "TimerKind",
    "apply",
    "create_command_id",
    "effects_for_versions",
    "epoch",
    "format_timestamp",
    "notifications_for",
    "requests_for",
    "state_changed",
    "timer_of",
]


#: The longest wait a processor's ``retry_after`` can impose.
MAX_WAIT = 3600.0


class Status(StrEnum):
    APPLIED = "applied"
    #: Seen before: nothing changes; the effects of that command are returned again.
    DUPLICATE = "duplicate"
    #: Does not fit the current state (late, stale, or an invalid transition): not applied.
    REJECTED = "rejected"
    #: A second ``payment.created`` with the same id but different terms: dead-letter it.
    CONFLICT = "conflict"


class TimerKind(StrEnum):
    #: Backoff over: retry processing (counts against the retry budget).
    RETRY = "retry"
    #: The processor's circuit breaker was open: try again when it half-opens (not counted).
    CIRCUIT_WAIT = "circuit_wait"
    #: FRAUD_CHECK or PROCESSING lasted too long (the request or its answer was lost).
    DEADLINE = "deadline"
    #: Refund backoff over: ask again.
    REFUND_RETRY = "refund_retry"
    #: A refund request got no answer in time.
    REFUND_DEADLINE = "refund_deadline"


@dataclass(frozen=True)
class SagaPolicy:
    #: APPROVED -> PROCESSING without an API call (DESIGN §2: configurable).
    auto_process: bool = True
    #: How many recent command ids a payment remembers for deduplication.
    applied_limit: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Watchdog deadlines (seconds): well above the NATS timeouts, they only fire when a
    #: request or its answer was lost (DESIGN §3 "no stranded payments").
    fraud_deadline: float = 30.0
    processing_deadline: float = 60.0
    refund_deadline: float = 60.0
    #: Circuit-breaker waits a payment (or one refund request) may make before giving up.
    max_circuit_waits: int = 10


@dataclass(frozen=True)
class Outcome:
    status: Status
    #: The payment after the command (unchanged unless APPLIED); None if it never existed.
    payment: Payment | None
    events: tuple[PaymentStateChanged, ...] = ()
    fraud_requests: tuple[FraudCheckRequest, ...] = ()
    process_requests: tuple[ProcessRequest, ...] = ()
    notifications: tuple[Notification, ...] = ()
    reason: str = ""
    #: For REJECTED: the trigger that the state refused (None if the command made no sense).
    trigger: Trigger | None = None

    @property
    def timer(self) -> Timer | None:
        """The payment's pending timer after this outcome (None: no timer)."""
        return timer_of(self.payment) if self.payment is not None else None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: the form every contract uses."""
    # isoformat is C; strftime cost ~2 % of a busy worker (a few timestamps per command).
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def epoch(timestamp: str) -> float:
    """Unix seconds of one of our ISO timestamps."""
    return datetime.fromisoformat(timestamp).timestamp()


def create_command_id(payment_id: str) -> str:
    """Deterministic, so an identical redelivered ``payment.created`` dedupes by id."""
    return f"{payment_id}:create"


def apply(
    payment: Payment | None, command: Command, now: str, policy: SagaPolicy = SagaPolicy()
) -> Outcome:
    """Apply `command` to `payment` at time `now` (ISO 8601)."""
    if payment is None:
        if command.kind == CommandKind.CREATE and command.payment is not None:
            return _create(command, now, policy)
        return Outcome(Status.REJECTED, None, reason="unknown payment")

    if command.kind == CommandKind.CREATE:
        # Conflict first: every create of a payment has the same id, whatever its terms.
        outcome = _second_create(payment, command)
        if outcome.status is Status.CONFLICT or command.command_id not in payment.applied:
            return outcome

    if command.command_id in payment.applied:
        first, last = payment.applied[command.command_id]
        return _duplicate(payment, first, last, command.command_id)

    if command.expected_version and command.expected_version != payment.version:
        return Outcome(
            Status.REJECTED, payment,
            reason=f"payment changed (version {payment.version}, request checked "
                   f"version {command.expected_version})",
        )

    step = _STEPS.get(command.kind)
    if step is None:
        return Outcome(Status.REJECTED, payment, reason=f"unknown command kind {command.kind!r}")
    result = step(payment, command, now, policy)
    if isinstance(result, Outcome):
        return result
    updated = _follow_automatic(result, now, policy)
    return _applied(payment.version + 1, updated, command.command_id, policy)


# --- one function per command kind: a new payment, or a REJECTED outcome ----------------

_Result = Payment | Outcome


def _refuse(payment: Payment, reason: str, trigger: Trigger | None = None) -> Outcome:
    return Outcome(Status.REJECTED, payment, reason=reason, trigger=trigger)


def _transition(
    payment: Payment, trigger: Trigger, now: str, metadata: dict[str, Any],
    policy: SagaPolicy,
) -> _Result:
    state = State(payment.state)
    if not is_allowed(state, trigger):
        return _refuse(payment, f"{trigger.value} is not allowed in state {state.value}",
                       trigger)
    return _step(payment, trigger, now, metadata, policy)


def _on_fraud_result(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    if c.approved is None:
        return _refuse(p, "fraud result without 'approved'")
    if c.approved:
        return _transition(p, Trigger.FRAUD_PASSED, now,
                           {"fraud_score": c.risk_score, "fraud_reason": c.reason or ""}, policy)
    return _transition(p, Trigger.FRAUD_FAILED, now,
                       {"fraud_score": c.risk_score, "rejection_reason": c.reason or ""}, policy)


def _on_fraud_unavailable(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    return _transition(p, Trigger.FRAUD_UNAVAILABLE, now,
                       {"review_reason": c.reason or "fraud check unavailable"}, policy)


def _on_review(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    reviewer = {"reviewed_by": c.requested_by} if c.requested_by else {}
    if c.decision == "approve":
        return _transition(p, Trigger.REVIEW_APPROVED, now,
                           {"review_decision": "approve", "review_reason": c.reason or "",
                            **reviewer}, policy)
    if c.decision == "reject":
        return _transition(p, Trigger.REVIEW_REJECTED, now,
                           {"review_decision": "reject",
                            "rejection_reason": c.reason or "rejected in manual review",
                            **reviewer}, policy)
    return _refuse(p, f"review decision must be approve or reject, got {c.decision!r}")


def _on_start_processing(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    return _transition(p, Trigger.PROCESSING_STARTED, now, {}, policy)


def _on_process_result(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    if c.success is None:
        return _refuse(p, "processor result without 'success'")
    current = State(p.state) is State.PROCESSING and c.attempt == p.attempt
    if c.success and not current and 1 <= c.attempt <= p.attempt:
        return _late_success(p, c, now, policy)
    if c.attempt != p.attempt:
        # A late failure of an earlier attempt: the current attempt decides.
        return _refuse(p, f"result for attempt {c.attempt}, current is {p.attempt}")
    if c.success:
        return _transition(p, Trigger.PROCESSOR_SUCCEEDED, now,
                           {"completion_timestamp": now,
                            "confirmation_id": c.confirmation_id or "",
                            "confirmed_attempt": c.attempt}, policy)
    return _fail(p, c.error_code or "processor_error", c.error_message or "",
                 bool(c.retryable), c.retry_after, now, policy)


#: `Payment.metadata` key (COMPENSATED payments): processor successes that came too late.
LATE_SUCCESSES = "late_processor_successes"


def _late_success(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    """The processor confirmed attempt `c.attempt` after a failure of it (or of a later
    attempt) moved the payment on: the success wins (see the module docstring)."""
    state = State(p.state)
    late: dict[str, Any] = {"confirmed_attempt": c.attempt, "late_success": True}
    if state is State.COMPENSATED:
        return _record_late_success(p, c, now)
    if state not in (State.FAILED, State.RETRY, State.PROCESSING):
        return _refuse(p, f"success of attempt {c.attempt} changes nothing: the payment is "
                          f"{state.value}", Trigger.PROCESSOR_SUCCEEDED)
    if state is State.FAILED:
        p = _step(p, Trigger.RETRY_SCHEDULED, now, {"retry_count": p.retry_count, **late},
                  policy)
        state = State.RETRY
    if state is State.RETRY:
        p = _step(p, Trigger.RETRY_STARTED, now, dict(late), policy)
    return _step(p, Trigger.PROCESSOR_SUCCEEDED, now, {
        "completion_timestamp": now, "confirmation_id": c.confirmation_id or "", **late,
    }, policy)


def _record_late_success(p: Payment, c: Command, now: str) -> _Result:
    """COMPENSATED is terminal: no transition, but the fact is kept and alerted, once."""
    recorded: list[dict[str, Any]] = list(p.metadata.get(LATE_SUCCESSES) or [])
    for entry in recorded:
        if entry.get("attempt") == c.attempt:
            # Seen already (its id fell out of `applied`): the same alert again, no change.
            version = p.version
            return _effects(Status.DUPLICATE, p, version + 1, version, "seen before",
                            str(entry.get("command_id")))
    recorded.append({
        "attempt": c.attempt,
        "confirmation_id": c.confirmation_id or "",
        "received_at": now,
        "command_id": c.command_id,
    })
    return _replace(p, metadata={**p.metadata, LATE_SUCCESSES: recorded})


def _fail(
    p: Payment, code: str, message: str, retryable: bool, retry_after: float | None,
    now: str, policy: SagaPolicy,
) -> _Result:
    """PROCESSING -> FAILED, then: wait for the breaker, back off and retry, or compensate."""
    retryable = retryable or code in RETRYABLE_ERRORS
    metadata: dict[str, Any] = {
        "error_code": code, "error_message": message[:500], "retry_count": p.retry_count,
        "retryable": retryable,
    }
    kind: TimerKind | None = None
    delay = 0.0
    # The breaker was open: wait for it (not counted as a retry), up to the cap.
    breaker_open = retry_after is not None and retryable
    if breaker_open:
        assert retry_after is not None
        if p.circuit_waits < policy.max_circuit_waits:
            kind, delay = TimerKind.CIRCUIT_WAIT, _wait(retry_after)
        metadata["circuit_waits"] = p.circuit_waits + (1 if kind else 0)
    elif policy.retry.should_retry(p.retry_count, retryable):
        kind, delay = TimerKind.RETRY, policy.retry.delay(p.retry_count + 1)
    if kind is not None:
        due = epoch(now) + delay
        metadata["next_attempt_at"] = format_timestamp(datetime.fromtimestamp(due, UTC))
    failed = _transition(p, Trigger.PROCESSOR_FAILED, now, metadata, policy)
    if isinstance(failed, Outcome):
        return failed
    if kind is TimerKind.CIRCUIT_WAIT:
        failed = _replace(failed, circuit_waits=p.circuit_waits + 1)
    if kind is not None:
        return _set_timer(failed, kind, due)
    if breaker_open:
        reason = "processor unavailable"
    else:
        reason = "retries exhausted" if retryable else "permanent error"
    compensation: dict[str, Any] = {
        "compensation_reason": reason, "error_code": code, "error_message": message[:500],
        "retry_count": p.retry_count, "customer_notified": True,
    }
    if breaker_open:
        compensation["circuit_waits"] = p.circuit_waits
    return _step(failed, Trigger.COMPENSATED, now, compensation, policy)


def _on_retry(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    """Retry requested through the API: now, skipping any backoff left."""
    return _retry(p, now, policy, counted=True, requested_by=c.requested_by)


def _retry(
    p: Payment, now: str, policy: SagaPolicy, counted: bool, requested_by: str | None = None
) -> _Result:
    metadata: dict[str, Any] = {"retry_count": p.retry_count + (1 if counted else 0)}
    if requested_by:
        metadata["requested_by"] = requested_by
    scheduled = _transition(p, Trigger.RETRY_SCHEDULED, now, metadata, policy)
    if isinstance(scheduled, Outcome):
        return scheduled
    if counted:
        scheduled = _replace(scheduled, retry_count=p.retry_count + 1)
    return scheduled  # RETRY -> PROCESSING follows automatically


def _on_timer(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    if p.timer_kind is None or c.attempt != p.timer_seq:
        return _refuse(p, f"stale timer {c.attempt} (current {p.timer_seq})")
    kind = TimerKind(p.timer_kind)
    state = State(p.state)
    if kind in (TimerKind.RETRY, TimerKind.CIRCUIT_WAIT):
        return _retry(p, now, policy, counted=kind is TimerKind.RETRY)
    if kind is TimerKind.DEADLINE and state is State.FRAUD_CHECK:
        return _transition(p, Trigger.FRAUD_UNAVAILABLE, now,
                           {"review_reason": "fraud check deadline passed"}, policy)
    if kind is TimerKind.DEADLINE and state is State.PROCESSING:
        return _fail(p, "timeout", "no processor result before the deadline", True, None,
                     now, policy)
    if kind is TimerKind.REFUND_RETRY and p.refund_pending:
        return _request_refund(p, now, policy)
    if kind is TimerKind.REFUND_DEADLINE and p.refund_pending:
        return _refund_failed(p, "timeout", "no refund result before the deadline", True,
                              None, now, policy)
    return _refuse(p, f"timer {kind.value} does not apply in state {state.value}")


def _on_refund(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    state = State(p.state)
    if not is_allowed(state, Trigger.REFUND_CONFIRMED):
        return _refuse(p, f"refund is not allowed in state {state.value}",
                       Trigger.REFUND_CONFIRMED)
    if p.refund_pending:
        return _refuse(p, "a refund is already in progress", Trigger.REFUND_CONFIRMED)
    metadata = {k: v for k, v in p.metadata.items() if not k.startswith("refund_")}
    metadata["refund_requested_at"] = now
    if c.requested_by:
        metadata["refund_requested_by"] = c.requested_by
    if c.reason:
        metadata["refund_reason"] = c.reason[:500]
    return _request_refund(
        _replace(p, refund_retries=0, refund_circuit_waits=0, metadata=metadata), now, policy
    )


def _request_refund(p: Payment, now: str, policy: SagaPolicy) -> Payment:
    """Ask the processor (again): no transition until it confirms."""
    asked = _replace(p, refund_pending=True, refund_attempt=p.refund_attempt + 1)
    return _set_timer(asked, TimerKind.REFUND_DEADLINE, epoch(now) + policy.refund_deadline)


def _on_refund_result(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    if c.success is True and 1 <= c.attempt <= p.refund_attempt:
        # A refund success is a fact, for the current attempt or a late one (after its
        # timeout, after a later attempt started, or after the refund was given up).
        return _refunded(p, c, now, policy)
    if not p.refund_pending or c.attempt != p.refund_attempt:
        return _refuse(p, f"refund result for attempt {c.attempt}, current is "
                          f"{p.refund_attempt if p.refund_pending else 'none'}")
    if c.success is None:
        return _refuse(p, "refund result without 'success'")
    if p.timer_kind != TimerKind.REFUND_DEADLINE:
        return _refuse(p, f"refund attempt {c.attempt} already timed out")
    return _refund_failed(p, c.error_code or "refund_error", c.error_message or "",
                          bool(c.retryable), c.retry_after, now, policy)


def _refunded(p: Payment, c: Command, now: str, policy: SagaPolicy) -> _Result:
    late = not (p.refund_pending and c.attempt == p.refund_attempt
                and p.timer_kind == TimerKind.REFUND_DEADLINE)
    asked = {k: v for k, v in p.metadata.items()
             if k in ("refund_requested_at", "refund_requested_by", "refund_reason")}
    metadata: dict[str, Any] = {"refund_id": c.refund_id or "", "refunded_at": now, **asked,
                                "confirmed_refund_attempt": c.attempt}
    if late:
        metadata["late_success"] = True
    if p.metadata.get("refund_status") == "failed":
        # Operations were told the refund failed: they must not refund by hand now.
        metadata["refund_previously_failed"] = True
    refunded = _transition(p, Trigger.REFUND_CONFIRMED, now, metadata, policy)
    if isinstance(refunded, Outcome):
        return refunded
    # The refund's own keys replace the bookkeeping of its attempts (errors, a failure
    # reported before): a REFUNDED payment never shows ``refund_status: failed``.
    kept = {k: v for k, v in p.metadata.items() if not k.startswith("refund_")}
    return _replace(refunded, refund_pending=False, metadata={**kept, **metadata})


def _refund_failed(
    p: Payment, code: str, message: str, retryable: bool, retry_after: float | None,
    now: str, policy: SagaPolicy,
) -> Payment:
    retryable = retryable or code in RETRYABLE_ERRORS
    metadata = {**p.metadata, "refund_error_code": code, "refund_error_message": message[:500]}
    breaker_open = retry_after is not None and retryable
    if breaker_open:
        assert retry_after is not None
        if p.refund_circuit_waits < policy.max_circuit_waits:
            waiting = _replace(p, metadata=metadata,
                               refund_circuit_waits=p.refund_circuit_waits + 1)
            return _set_timer(waiting, TimerKind.REFUND_RETRY,
                              epoch(now) + _wait(retry_after))
    elif policy.retry.should_retry(p.refund_retries, retryable):
        waiting = _replace(p, metadata=metadata, refund_retries=p.refund_retries + 1)
        delay = policy.retry.delay(p.refund_retries + 1)
        return _set_timer(waiting, TimerKind.REFUND_RETRY, epoch(now) + delay)
    # Given up: the payment stays COMPLETED; operations are alerted (notifications_for).
    metadata["refund_status"] = "failed"
    metadata["refund_failed_at"] = now
    if breaker_open:
        metadata["refund_failure_reason"] = "processor unavailable"
    return _clear_timer(_replace(p, metadata=metadata, refund_pending=False))


_Step = Callable[[Payment, Command, str, SagaPolicy], _Result]

_STEPS: dict[str, _Step] = {
    CommandKind.FRAUD_RESULT: _on_fraud_result,
    CommandKind.FRAUD_UNAVAILABLE: _on_fraud_unavailable,
    CommandKind.REVIEW: _on_review,
    CommandKind.START_PROCESSING: _on_start_processing,
    CommandKind.PROCESS_RESULT: _on_process_result,
    CommandKind.RETRY: _on_retry,
    CommandKind.TIMER: _on_timer,
    CommandKind.REFUND: _on_refund,
    CommandKind.REFUND_RESULT: _on_refund_result,
}


# --- transitions and timers -------------------------------------------------------------


def _step(
    payment: Payment, trigger: Trigger, now: str, metadata: dict[str, Any],
    policy: SagaPolicy,
) -> Payment:
    """One transition: new state, version + 1, one history entry, the state's timer.

    The entry (and so the state-change event) carries the metadata of this transition
    alone; the payment's own metadata accumulates every transition's keys, later ones
    winning (a COMPLETED payment still shows its fraud score)."""
    state = State(payment.state)
    target = next_state(state, trigger)
    version = payment.version + 1
    attempt = payment.attempt
    if target is State.PROCESSING:
        attempt += 1
        metadata = {**metadata, "attempt": attempt}
    if target is State.FRAUD_CHECK:
        metadata = {**metadata, "fraud_requested_at": now}
    entry = HistoryEntry.trusted(
        version=version,
        state=target.value,
        previous_state=state.value,
        timestamp=now,
        metadata=metadata,
    )
    moved = _clear_timer(_replace(
        payment,
        state=target.value,
        previous_state=state.value,
        version=version,
        updated_at=now,
        metadata={**payment.metadata, **metadata},
        history=[*payment.history, entry],
        attempt=attempt,
    ))
    if target is State.FRAUD_CHECK:
        return _set_timer(moved, TimerKind.DEADLINE, epoch(now) + policy.fraud_deadline)
    if target is State.PROCESSING:
        return _set_timer(moved, TimerKind.DEADLINE, epoch(now) + policy.processing_deadline)
    return moved


def _wait(retry_after: float) -> float:
    """A wait the processor asked for, bounded: never negative, never absurd."""
    if not math.isfinite(retry_after):
        return MAX_WAIT
    return min(max(retry_after, 0.1), MAX_WAIT)


def _set_timer(payment: Payment, kind: TimerKind, due: float) -> Payment:
    return _replace(payment, timer_kind=kind.value, timer_due=due,
                    timer_seq=payment.timer_seq + 1)


def _clear_timer(payment: Payment) -> Payment:
    if payment.timer_kind is None:
        return payment
    return _replace(payment, timer_kind=None, timer_due=None)


def timer_of(payment: Payment) -> Timer | None:
    if payment.timer_kind is None or payment.timer_due is None:
        return None
    return Timer.trusted(payment_id=payment.payment_id, kind=payment.timer_kind,
                         due=float(payment.timer_due), seq=payment.timer_seq)


def _follow_automatic(payment: Payment, now: str, policy: SagaPolicy) -> Payment:
    """Apply the transitions that need no outside input (DESIGN §2 'automatic')."""
    while True:
        state = State(payment.state)
        if state is State.NEW:
            trigger = Trigger.CREATED
        elif state is State.APPROVED and policy.auto_process:
            trigger = Trigger.PROCESSING_STARTED
        elif state is State.RETRY:
            trigger = Trigger.RETRY_STARTED
        else:
            return payment
        payment = _step(payment, trigger, now, {}, policy)


def _create(command: Command, now: str, policy: SagaPolicy) -> Outcome:
    created = command.payment
    assert created is not None
    entry = HistoryEntry.trusted(
        version=1, state=State.NEW.value, previous_state=None, timestamp=now, metadata={}
    )
    payment = Payment.trusted(
        payment_id=created.payment_id,
        amount=created.amount,
        currency=created.currency,
        customer_id=created.customer_id,
        merchant_id=created.merchant_id,
        created_at=created.created_at,
        state=State.NEW.value,
        previous_state=None,
        version=1,
        updated_at=now,
        metadata={},
        history=[entry],
        applied={},
        traceparent=command.traceparent,
    )
    return _applied(1, _follow_automatic(payment, now, policy), command.command_id, policy)


def _second_create(payment: Payment, command: Command) -> Outcome:
    created = command.payment
    if created is None:
        return Outcome(Status.REJECTED, payment, reason="create command without payment")
    differs = [
        name
        for name in ("amount", "currency", "customer_id", "merchant_id")
        if getattr(created, name) != getattr(payment, name)
    ]
    if differs:
        return Outcome(
            Status.CONFLICT,
            payment,
            reason=f"payment {payment.payment_id} exists with different {', '.join(differs)}",
        )
    return Outcome(Status.DUPLICATE, payment, reason="identical payment.created seen before")


def _applied(first: int, payment: Payment, command_id: str, policy: SagaPolicy) -> Outcome:
    """Record the command (versions first..last; an empty range for changes without a
    transition, such as a refund request) and return its effects."""
    applied = dict(payment.applied)
    applied[command_id] = [first, payment.version]
    while len(applied) > policy.applied_limit:
        del applied[next(iter(applied))]
    payment = _replace(payment, applied=applied)
    return _effects(Status.APPLIED, payment, first, payment.version, "", command_id)


def _duplicate(payment: Payment, first: int, last: int, command_id: str) -> Outcome:
    return _effects(Status.DUPLICATE, payment, first, last, "seen before", command_id)


def _effects(
    status: Status, payment: Payment, first: int, last: int, reason: str, command_id: str
) -> Outcome:
    events, fraud, process = effects_for_versions(payment, first, last)
    notes = tuple(
        note for entry in payment.history if first <= entry.version <= last
        for note in notifications_for(payment, entry)
    )
    if first > last:  # applied without a transition: the alert it raised, if any
        late = _late_success_of(payment, command_id)
        if late is not None:
            notes += (_late_success_alert(payment, late),)
        elif payment.metadata.get("refund_status") == "failed":
            notes += (_refund_failed_alert(payment),)
    return Outcome(status, payment, events, fraud, process, notes, reason)


def _late_success_of(payment: Payment, command_id: str) -> dict[str, Any] | None:
    if payment.state != State.COMPENSATED.value:
        return None
    for entry in payment.metadata.get(LATE_SUCCESSES) or []:
        if isinstance(entry, dict) and entry.get("command_id") == command_id:
            return entry
    return None


def _operations_alert(
    payment: Payment, notification_id: str, event: str, severity: str, state: str, *,
    reason: str, error_code: str | None, created_at: str,
) -> Notification:
    """An alert for operations about `payment` (the payment's own fields filled in)."""
    return Notification(
        notification_id=notification_id, audience="operations", event=event,
        severity=severity, payment_id=payment.payment_id, customer_id=payment.customer_id,
        merchant_id=payment.merchant_id, amount=payment.amount, currency=payment.currency,
        state=state, reason=reason, error_code=error_code, created_at=created_at,
    )


def _late_success_alert(payment: Payment, late: dict[str, Any]) -> Notification:
    attempt = late.get("attempt")
    return _operations_alert(
        payment, f"{payment.payment_id}:late-success:{attempt}:operations",
        "LATE_PROCESSOR_SUCCESS", "critical", payment.state,
        reason=f"the processor confirmed attempt {attempt} (confirmation "
               f"{late.get('confirmation_id')!r}) after the payment was compensated: the "
               f"customer may have been charged; reconcile with the processor",
        error_code=None,
        created_at=late.get("received_at", payment.updated_at),
    )


def _refund_failed_alert(payment: Payment) -> Notification:
    meta = payment.metadata
    return _operations_alert(
        payment, f"{payment.payment_id}:refund:{payment.refund_attempt}:operations",
        "REFUND_FAILED", "critical", payment.state,
        reason=f"refund failed: {meta.get('refund_error_code')} "
               f"{meta.get('refund_error_message', '')}".strip(),
        error_code=meta.get("refund_error_code"),
        created_at=meta.get("refund_failed_at", payment.updated_at),
    )


# --- effects, rebuilt from stored state -------------------------------------------------


def effects_for_versions(
    payment: Payment, first: int, last: int
) -> tuple[
    tuple[PaymentStateChanged, ...], tuple[FraudCheckRequest, ...], tuple[ProcessRequest, ...]
]:
    """The events for versions first..last, and the requests of the current state if the
    payment is still where those versions left it (otherwise they were answered already).
    An empty range (first = last + 1) is a change without a transition at version `last`."""
    events = tuple(
        state_changed(payment, entry)
        for entry in payment.history
        if first <= entry.version <= last
    )
    fraud: tuple[FraudCheckRequest, ...] = ()
    process: tuple[ProcessRequest, ...] = ()
    if payment.version == last:
        fraud, process = requests_for(payment)
    return events, fraud, process


def requests_for(
    payment: Payment,
) -> tuple[tuple[FraudCheckRequest, ...], tuple[ProcessRequest, ...]]:
    """What a payment waiting in its current state needs sent (deterministic)."""
    state = State(payment.state)
    if state is State.FRAUD_CHECK:
        return (
            FraudCheckRequest.trusted(
                payment_id=payment.payment_id,
                customer_id=payment.customer_id,
                amount=payment.amount,
                currency=payment.currency,
                merchant_id=payment.merchant_id,
            ),
        ), ()
    if state is State.PROCESSING:
        return (), (_process_request(payment, Operation.PAYMENT, payment.attempt),)
    if (
        state is State.COMPLETED
        and payment.refund_pending
        and payment.timer_kind == TimerKind.REFUND_DEADLINE
    ):
        return (), (_process_request(payment, Operation.REFUND, payment.refund_attempt),)
    return (), ()


def _process_request(payment: Payment, operation: Operation, attempt: int) -> ProcessRequest:
    confirmation = None
    if operation is Operation.REFUND:
        confirmation = next(
            (e.metadata.get("confirmation_id") for e in reversed(payment.history)
             if e.state == State.COMPLETED.value), None)
    return ProcessRequest.trusted(
        payment_id=payment.payment_id,
        amount=payment.amount,
        currency=payment.currency,
        customer_id=payment.customer_id,
        merchant_id=payment.merchant_id,
        attempt=attempt,
        operation=operation.value,
        confirmation_id=confirmation,
    )


def notifications_for(payment: Payment, entry: HistoryEntry) -> tuple[Notification, ...]:
    """Compensation notifies the customer and alerts operations (the spec's saga); a refund
    confirmed after it was reported failed tells operations so."""
    meta = entry.metadata
    if entry.state == State.REFUNDED.value and meta.get("refund_previously_failed"):
        return (_operations_alert(
            payment, f"{payment.payment_id}:{entry.version}:operations",
            "LATE_REFUND_SUCCESS", "warning", entry.state,
            reason=f"the processor confirmed refund attempt "
                   f"{meta.get('confirmed_refund_attempt')} (refund {meta.get('refund_id')!r}) "
                   f"after the refund was reported failed: do not refund again",
            error_code=None, created_at=entry.timestamp,
        ),)
    if entry.state != State.COMPENSATED.value:
        return ()
    permanent = meta.get("compensation_reason") == "permanent error"
    common: dict[str, Any] = {
        "payment_id": payment.payment_id,
        "customer_id": payment.customer_id,
        "merchant_id": payment.merchant_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "state": entry.state,
        "error_code": meta.get("error_code"),
        "created_at": entry.timestamp,
    }
    return (
        Notification(
            notification_id=f"{payment.payment_id}:{entry.version}:customer",
            audience="customer", event="PAYMENT_FAILED", severity="info",
            reason="Your payment could not be completed; you have not been charged.",
            **common,
        ),
        Notification(
            notification_id=f"{payment.payment_id}:{entry.version}:operations",
            audience="operations", event="PAYMENT_COMPENSATED",
            severity="warning" if permanent else "critical",
            reason=f"{meta.get('compensation_reason', 'failed')}: "
                   f"{meta.get('error_code')} {meta.get('error_message', '')}".strip(),
            **common,
        ),
    )


def state_changed(payment: Payment, entry: HistoryEntry) -> PaymentStateChanged:
    return PaymentStateChanged.trusted(
        payment_id=payment.payment_id,
        previous_state=entry.previous_state,
        current_state=entry.state,
        amount=payment.amount,
        currency=payment.currency,
        customer_id=payment.customer_id,
        merchant_id=payment.merchant_id,
        changed_at=entry.timestamp,
        metadata=entry.metadata,
        version=entry.version,
        event_id=f"{payment.payment_id}:{entry.version}",
    )


_PAYMENT_FIELDS = frozenset(Payment._options.fields)


def _replace(payment: Payment, **changes: Any) -> Payment:
    """`payment` with `changes`, copied field by field.

    Not ``Payment(**fields)``: that coerces every field again, the whole history included
    (~19 µs against ~1 µs, and a transition makes several copies). `payment` is coerced
    already and the steps here pass typed values; a name that is not a field still fails.
    """
    unknown = changes.keys() - _PAYMENT_FIELDS
    if unknown:
        raise TypeError(f"Payment has no field {', '.join(sorted(unknown))}")
    clone: Payment = object.__new__(Payment)
    fields = clone.__dict__
    fields.update(payment.__dict__)
    fields.update(changes)
    # Faust's bookkeeping set: each record needs its own.
    fields["__evaluated_fields__"] = set(payment.__dict__.get("__evaluated_fields__", ()))
    return clone
