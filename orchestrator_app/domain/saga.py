"""The saga step: apply one command to one payment. Pure: no I/O, no clock, no randomness.

The saga agent calls `apply` for every command and then performs the returned effects
(write the table, emit the events and requests). Because the result depends only on the
stored payment and the command, a command redelivered after a crash returns the *same*
effects again (status `DUPLICATE`), which downstream consumers dedupe by ``event_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .records import (
    Command,
    CommandKind,
    FraudCheckRequest,
    HistoryEntry,
    Payment,
    PaymentStateChanged,
    ProcessRequest,
)
from .state_machine import State, Trigger, is_allowed, next_state

__all__ = [
    "Outcome",
    "SagaPolicy",
    "Status",
    "apply",
    "create_command_id",
    "effects_for_versions",
    "format_timestamp",
    "requests_for",
    "state_changed",
]


class Status(StrEnum):
    APPLIED = "applied"
    #: Seen before: nothing changes; the effects of that command are returned again.
    DUPLICATE = "duplicate"
    #: Does not fit the current state (late, stale, or an invalid transition): not applied.
    REJECTED = "rejected"
    #: A second ``payment.created`` with the same id but different terms: dead-letter it.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class SagaPolicy:
    #: APPROVED -> PROCESSING without an API call (DESIGN §2: configurable).
    auto_process: bool = True
    #: How many recent command ids a payment remembers for deduplication.
    applied_limit: int = 64


@dataclass(frozen=True)
class Outcome:
    status: Status
    #: The payment after the command (unchanged unless APPLIED); None if it never existed.
    payment: Payment | None
    events: tuple[PaymentStateChanged, ...] = ()
    fraud_requests: tuple[FraudCheckRequest, ...] = ()
    process_requests: tuple[ProcessRequest, ...] = ()
    reason: str = ""
    #: For REJECTED: the trigger that the state refused (None if the command made no sense).
    trigger: Trigger | None = None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: the form every contract uses."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


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

    if command.command_id in payment.applied:
        first, last = payment.applied[command.command_id]
        return _duplicate(payment, first, last)

    if command.kind == CommandKind.CREATE:
        return _second_create(payment, command)

    trigger, problem = _trigger_for(payment, command)
    if trigger is None:
        return Outcome(Status.REJECTED, payment, reason=problem)
    state = State(payment.state)
    if not is_allowed(state, trigger):
        return Outcome(
            Status.REJECTED,
            payment,
            reason=f"{trigger.value} is not allowed in state {state.value}",
            trigger=trigger,
        )

    updated = _step(payment, trigger, now, _metadata_for(payment, trigger, command, now))
    updated = _follow_automatic(updated, now, policy)
    return _applied(payment.version + 1, updated, command.command_id, policy)


# --- what a command means in the current state ------------------------------------------


def _trigger_for(payment: Payment, command: Command) -> tuple[Trigger | None, str]:
    kind = command.kind
    if kind == CommandKind.FRAUD_RESULT:
        if command.approved is None:
            return None, "fraud result without 'approved'"
        return (Trigger.FRAUD_PASSED if command.approved else Trigger.FRAUD_FAILED), ""
    if kind == CommandKind.FRAUD_UNAVAILABLE:
        return Trigger.FRAUD_UNAVAILABLE, ""
    if kind == CommandKind.REVIEW:
        if command.decision == "approve":
            return Trigger.REVIEW_APPROVED, ""
        if command.decision == "reject":
            return Trigger.REVIEW_REJECTED, ""
        return None, f"review decision must be approve or reject, got {command.decision!r}"
    if kind == CommandKind.START_PROCESSING:
        return Trigger.PROCESSING_STARTED, ""
    if kind == CommandKind.PROCESS_RESULT:
        if command.success is None:
            return None, "processor result without 'success'"
        if command.attempt != payment.attempt:
            # A late answer to an earlier attempt: the current attempt decides.
            return None, f"result for attempt {command.attempt}, current is {payment.attempt}"
        return (Trigger.PROCESSOR_SUCCEEDED if command.success else Trigger.PROCESSOR_FAILED), ""
    if kind == CommandKind.RETRY:
        return Trigger.RETRY_SCHEDULED, ""
    return None, f"unknown command kind {kind!r}"


def _metadata_for(
    payment: Payment, trigger: Trigger, command: Command, now: str
) -> dict[str, Any]:
    if trigger is Trigger.FRAUD_PASSED:
        return {"fraud_score": command.risk_score, "fraud_reason": command.reason or ""}
    if trigger is Trigger.FRAUD_FAILED:
        return {"fraud_score": command.risk_score, "rejection_reason": command.reason or ""}
    if trigger is Trigger.FRAUD_UNAVAILABLE:
        return {"review_reason": command.reason or "fraud check unavailable"}
    if trigger is Trigger.REVIEW_APPROVED:
        return {"review_decision": "approve", "review_reason": command.reason or ""}
    if trigger is Trigger.REVIEW_REJECTED:
        return {
            "review_decision": "reject",
            "rejection_reason": command.reason or "rejected in manual review",
        }
    if trigger is Trigger.PROCESSOR_SUCCEEDED:
        return {"completion_timestamp": now, "confirmation_id": command.confirmation_id or ""}
    if trigger is Trigger.PROCESSOR_FAILED:
        return {
            "error_code": command.error_code or "unknown",
            "error_message": command.error_message or "",
            "retry_count": payment.retry_count,
            "retryable": bool(command.retryable),
        }
    if trigger is Trigger.RETRY_SCHEDULED:
        return {"retry_count": payment.retry_count + 1}
    return {}


# --- transitions ------------------------------------------------------------------------


def _step(payment: Payment, trigger: Trigger, now: str, metadata: dict[str, Any]) -> Payment:
    """One transition: new state, version + 1, one history entry."""
    state = State(payment.state)
    target = next_state(state, trigger)
    version = payment.version + 1
    attempt = payment.attempt
    retry_count = payment.retry_count
    if target is State.PROCESSING:
        attempt += 1
        metadata = {**metadata, "attempt": attempt}
    if trigger is Trigger.RETRY_SCHEDULED:
        retry_count += 1
    if target is State.FRAUD_CHECK:
        metadata = {**metadata, "fraud_requested_at": now}
    entry = HistoryEntry(
        version=version,
        state=target.value,
        previous_state=state.value,
        timestamp=now,
        metadata=metadata,
    )
    return _replace(
        payment,
        state=target.value,
        previous_state=state.value,
        version=version,
        updated_at=now,
        metadata=metadata,
        history=[*payment.history, entry],
        attempt=attempt,
        retry_count=retry_count,
    )


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
        payment = _step(payment, trigger, now, {})


def _create(command: Command, now: str, policy: SagaPolicy) -> Outcome:
    created = command.payment
    assert created is not None
    entry = HistoryEntry(
        version=1, state=State.NEW.value, previous_state=None, timestamp=now, metadata={}
    )
    payment = Payment(
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
    applied = dict(payment.applied)
    applied[command_id] = [first, payment.version]
    while len(applied) > policy.applied_limit:
        del applied[next(iter(applied))]
    payment = _replace(payment, applied=applied)
    events, fraud, process = effects_for_versions(payment, first, payment.version)
    return Outcome(Status.APPLIED, payment, events, fraud, process)


def _duplicate(payment: Payment, first: int, last: int) -> Outcome:
    events, fraud, process = effects_for_versions(payment, first, last)
    return Outcome(Status.DUPLICATE, payment, events, fraud, process, reason="seen before")


# --- effects, rebuilt from stored state -------------------------------------------------


def effects_for_versions(
    payment: Payment, first: int, last: int
) -> tuple[
    tuple[PaymentStateChanged, ...], tuple[FraudCheckRequest, ...], tuple[ProcessRequest, ...]
]:
    """The events for versions first..last, and the requests of the current state if the
    payment is still where those versions left it (otherwise they were answered already)."""
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
            FraudCheckRequest(
                payment_id=payment.payment_id,
                customer_id=payment.customer_id,
                amount=payment.amount,
                currency=payment.currency,
                merchant_id=payment.merchant_id,
            ),
        ), ()
    if state is State.PROCESSING:
        return (), (
            ProcessRequest(
                payment_id=payment.payment_id,
                amount=payment.amount,
                currency=payment.currency,
                customer_id=payment.customer_id,
                merchant_id=payment.merchant_id,
                attempt=payment.attempt,
            ),
        )
    return (), ()


def state_changed(payment: Payment, entry: HistoryEntry) -> PaymentStateChanged:
    return PaymentStateChanged(
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


def _replace(payment: Payment, **changes: Any) -> Payment:
    fields: dict[str, Any] = {**payment.asdict(), **changes}
    return Payment(**fields)
