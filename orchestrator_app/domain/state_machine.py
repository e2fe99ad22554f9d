"""The payment state machine (DESIGN §2) as one table: pure data, no I/O.

Why a table rather than if-chains: the allowed transitions are the contract reviewers and
auditors read, and a table is exhaustively testable — every (state, trigger) pair not listed
here is refused.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "InvalidTransition",
    "State",
    "Trigger",
    "allowed_triggers",
    "is_allowed",
    "next_state",
]


class State(StrEnum):
    NEW = "NEW"
    FRAUD_CHECK = "FRAUD_CHECK"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    MANUAL_REVIEW = "MANUAL_REVIEW"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRY = "RETRY"
    REFUNDED = "REFUNDED"
    COMPENSATED = "COMPENSATED"


class Trigger(StrEnum):
    CREATED = "created"                       #: automatic on creation
    FRAUD_PASSED = "fraud_passed"
    FRAUD_FAILED = "fraud_failed"
    FRAUD_UNAVAILABLE = "fraud_unavailable"   #: timeout, no responder, breaker open
    REVIEW_APPROVED = "review_approved"
    REVIEW_REJECTED = "review_rejected"
    PROCESSING_STARTED = "processing_started"
    PROCESSOR_SUCCEEDED = "processor_succeeded"
    PROCESSOR_FAILED = "processor_failed"     #: includes a processor timeout
    RETRY_SCHEDULED = "retry_scheduled"       #: API request, or automatic with backoff
    RETRY_STARTED = "retry_started"
    COMPENSATED = "compensated"               #: retries exhausted or error permanent
    REFUND_CONFIRMED = "refund_confirmed"


#: (from state, trigger) -> to state. Anything absent is an invalid transition.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.NEW, Trigger.CREATED): State.FRAUD_CHECK,
    (State.FRAUD_CHECK, Trigger.FRAUD_PASSED): State.APPROVED,
    (State.FRAUD_CHECK, Trigger.FRAUD_FAILED): State.REJECTED,
    (State.FRAUD_CHECK, Trigger.FRAUD_UNAVAILABLE): State.MANUAL_REVIEW,
    (State.MANUAL_REVIEW, Trigger.REVIEW_APPROVED): State.APPROVED,
    (State.MANUAL_REVIEW, Trigger.REVIEW_REJECTED): State.REJECTED,
    (State.APPROVED, Trigger.PROCESSING_STARTED): State.PROCESSING,
    (State.PROCESSING, Trigger.PROCESSOR_SUCCEEDED): State.COMPLETED,
    (State.PROCESSING, Trigger.PROCESSOR_FAILED): State.FAILED,
    (State.FAILED, Trigger.RETRY_SCHEDULED): State.RETRY,
    (State.RETRY, Trigger.RETRY_STARTED): State.PROCESSING,
    (State.FAILED, Trigger.COMPENSATED): State.COMPENSATED,
    (State.COMPLETED, Trigger.REFUND_CONFIRMED): State.REFUNDED,
}

#: States no trigger leaves.
TERMINAL_STATES: frozenset[State] = frozenset(
    s for s in State if not any(src is s for src, _ in TRANSITIONS)
)


class InvalidTransition(Exception):
    """A trigger that the current state does not allow; never applied."""

    def __init__(self, state: State, trigger: Trigger) -> None:
        super().__init__(f"{trigger.value} is not allowed in state {state.value}")
        self.state = state
        self.trigger = trigger


def next_state(state: State, trigger: Trigger) -> State:
    """The state `trigger` leads to from `state`, or raise `InvalidTransition`."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidTransition(state, trigger) from None


def is_allowed(state: State, trigger: Trigger) -> bool:
    return (state, trigger) in TRANSITIONS


def allowed_triggers(state: State) -> frozenset[Trigger]:
    return frozenset(t for (s, t) in TRANSITIONS if s is state)
