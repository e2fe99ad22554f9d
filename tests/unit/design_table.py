"""DESIGN §2's transition table, written out independently of the code under test.

Shared by the state-machine and saga tests; never derived from ``state_machine.TRANSITIONS``.
"""

from __future__ import annotations

from orchestrator_app.domain.state_machine import State, Trigger

S, T = State, Trigger

#: DESIGN §2, row by row (from, trigger) -> to.
EXPECTED: dict[tuple[State, Trigger], State] = {
    # NEW -> FRAUD_CHECK: automatic, on creation
    (S.NEW, T.CREATED): S.FRAUD_CHECK,
    # FRAUD_CHECK -> APPROVED: fraud check passed
    (S.FRAUD_CHECK, T.FRAUD_PASSED): S.APPROVED,
    # FRAUD_CHECK -> REJECTED: fraud check failed
    (S.FRAUD_CHECK, T.FRAUD_FAILED): S.REJECTED,
    # FRAUD_CHECK -> MANUAL_REVIEW: timed out / unavailable (breaker open)
    (S.FRAUD_CHECK, T.FRAUD_UNAVAILABLE): S.MANUAL_REVIEW,
    # MANUAL_REVIEW -> APPROVED / REJECTED: review decision via API
    (S.MANUAL_REVIEW, T.REVIEW_APPROVED): S.APPROVED,
    (S.MANUAL_REVIEW, T.REVIEW_REJECTED): S.REJECTED,
    # APPROVED -> PROCESSING: automatic or manual via API
    (S.APPROVED, T.PROCESSING_STARTED): S.PROCESSING,
    # PROCESSING -> COMPLETED: processor succeeded
    (S.PROCESSING, T.PROCESSOR_SUCCEEDED): S.COMPLETED,
    # PROCESSING -> FAILED: processor failed, or timed out
    (S.PROCESSING, T.PROCESSOR_FAILED): S.FAILED,
    # FAILED -> RETRY: retry requested / automatic with backoff
    (S.FAILED, T.RETRY_SCHEDULED): S.RETRY,
    # RETRY -> PROCESSING: retry attempt starts
    (S.RETRY, T.RETRY_STARTED): S.PROCESSING,
    # FAILED -> COMPENSATED: retries exhausted or error permanent
    (S.FAILED, T.COMPENSATED): S.COMPENSATED,
    # COMPLETED -> REFUNDED: refund requested and confirmed
    (S.COMPLETED, T.REFUND_CONFIRMED): S.REFUNDED,
}

EXPECTED_TERMINAL = {S.REJECTED, S.REFUNDED, S.COMPENSATED}
