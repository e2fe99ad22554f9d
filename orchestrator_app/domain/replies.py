"""Turn NATS replies (and their absence) into commands for the saga. Pure functions.

A reply we cannot trust is never guessed at: an unreadable fraud reply is treated like an
unavailable fraud service (MANUAL_REVIEW), an unreadable processor reply like a retryable
failure, because the processor may or may not have acted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .codec import loads
from .records import Command, CommandKind, FraudCheckRequest, Operation, ProcessRequest

__all__ = [
    "fraud_command_id",
    "fraud_result",
    "fraud_unavailable",
    "fraud_wire_body",
    "process_command_id",
    "process_failure",
    "process_result",
    "process_wire_body",
    "result_command_id",
]


def fraud_command_id(payment_id: str) -> str:
    """A payment has one fraud check: its result, or its timeout, has one id."""
    return f"{payment_id}:fraud"


def process_command_id(payment_id: str, attempt: int) -> str:
    return f"{payment_id}:process:{attempt}"


def fraud_wire_body(request: FraudCheckRequest) -> dict[str, Any]:
    """The spec's ``fraud.check`` request fields, nothing else."""
    return {
        "payment_id": request.payment_id,
        "customer_id": request.customer_id,
        "amount": request.amount,
        "currency": request.currency,
        "merchant_id": request.merchant_id,
    }


def process_wire_body(request: ProcessRequest) -> dict[str, Any]:
    """``payment.process`` (and ``payment.refund``, which adds the confirmation id)."""
    body: dict[str, Any] = {
        "payment_id": request.payment_id,
        "amount": request.amount,
        "currency": request.currency,
        "customer_id": request.customer_id,
        "merchant_id": request.merchant_id,
        "attempt": request.attempt,
    }
    if request.operation == Operation.REFUND:
        body["confirmation_id"] = request.confirmation_id
    return body


def _result_kind(request: ProcessRequest) -> CommandKind:
    if request.operation == Operation.REFUND:
        return CommandKind.REFUND_RESULT
    return CommandKind.PROCESS_RESULT


def result_command_id(request: ProcessRequest) -> str:
    if request.operation == Operation.REFUND:
        return f"{request.payment_id}:refund:{request.attempt}"
    return process_command_id(request.payment_id, request.attempt)


def fraud_unavailable(payment_id: str, reason: str, now: str) -> Command:
    return Command(
        kind=CommandKind.FRAUD_UNAVAILABLE.value,
        payment_id=payment_id,
        command_id=fraud_command_id(payment_id),
        issued_at=now,
        reason=reason,
    )


def fraud_result(payment_id: str, reply: bytes, now: str) -> Command:
    """A FRAUD_RESULT command, or FRAUD_UNAVAILABLE if the reply is not a valid answer."""
    try:
        data = loads(reply)
    except (ValueError, UnicodeDecodeError):
        return fraud_unavailable(payment_id, "fraud service sent an unreadable reply", now)
    if not isinstance(data, dict) or data.get("payment_id") != payment_id:
        return fraud_unavailable(payment_id, "fraud reply is for another payment", now)
    approved = data.get("approved")
    score = data.get("risk_score")
    reason = data.get("reason", "")
    if (
        not isinstance(approved, bool)
        or isinstance(score, bool)
        or not isinstance(score, (int, Decimal))
        or not isinstance(reason, str)
    ):
        return fraud_unavailable(payment_id, "fraud reply has missing or mistyped fields", now)
    return Command(
        kind=CommandKind.FRAUD_RESULT.value,
        payment_id=payment_id,
        command_id=fraud_command_id(payment_id),
        issued_at=now,
        approved=approved,
        risk_score=Decimal(score),
        reason=reason[:500],
    )


def process_failure(
    request: ProcessRequest, code: str, message: str, retryable: bool, now: str,
    retry_after: float | None = None,
) -> Command:
    return Command(
        kind=_result_kind(request).value,
        payment_id=request.payment_id,
        command_id=result_command_id(request),
        issued_at=now,
        attempt=request.attempt,
        success=False,
        error_code=code,
        error_message=message,
        retryable=retryable,
        retry_after=retry_after,
    )


def process_result(request: ProcessRequest, reply: bytes, now: str) -> Command:
    try:
        data = loads(reply)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("payment_id") != request.payment_id:
        return process_failure(
            request, "invalid_reply", "processor sent an unreadable reply", True, now
        )
    success = data.get("success")
    if not isinstance(success, bool):
        return process_failure(
            request, "invalid_reply", "processor reply has no boolean 'success'", True, now
        )
    if success:
        return Command(
            kind=_result_kind(request).value,
            payment_id=request.payment_id,
            command_id=result_command_id(request),
            issued_at=now,
            attempt=request.attempt,
            success=True,
            confirmation_id=str(data.get("confirmation_id") or "")[:255],
            refund_id=str(data.get("refund_id") or "")[:255] or None,
        )
    return process_failure(
        request,
        str(data.get("error_code") or "processor_error")[:100],
        str(data.get("error_message") or "")[:500],
        data.get("retryable") is True,
        now,
    )
