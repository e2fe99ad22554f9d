"""Turn NATS replies (and their absence) into commands for the saga. Pure functions.

A reply we cannot trust is never guessed at: an unreadable fraud reply is treated like an
unavailable fraud service (MANUAL_REVIEW), an unreadable processor reply like a retryable
failure, because the processor may or may not have acted. Unreadable includes: not JSON, not
UTF-8, nested too deeply, numbers beyond what `Decimal` holds, and a fraud ``risk_score``
that is not a plain finite number of sensible size (adjusted exponent within ±20). Nothing
a responder sends can make these functions raise.

Text that PostgreSQL cannot store is *sanitised* here, not refused: every free-text field
taken from a reply (``reason``, ``error_code``, ``error_message``, ``confirmation_id``,
``refund_id``) has U+0000 and the other C0 control characters except tab, newline and
carriage return (and unpaired surrogates, which UTF-8 cannot encode) replaced by U+FFFD.
The reply's decision is a fact (the processor charged, the fraud service approved) and must
not be lost over a stray byte in its text. (The command API, whose caller can fix and resend
its request, refuses such text with 400 instead: `orchestrator_app.web.commands.parse_body`.)

Results have one command id per attempt *and outcome* (`result_command_id`): a success and
a failure of the same attempt (two copies of one request, redelivered after a rebalance)
are different facts, and the saga must see both, so that a success is never dropped as a
duplicate of the failure.
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
    "refund_command_id",
    "result_command_id",
    "sanitize_text",
]

#: A fraud score's adjusted exponent (`Decimal.adjusted`) must lie within this range.
MAX_SCORE_EXPONENT = 20

#: C0 controls except \t \n \r, and the surrogate range, become U+FFFD.
_UNSTORABLE = {
    **{code: 0xFFFD for code in range(0x20) if chr(code) not in "\t\n\r"},
    **{code: 0xFFFD for code in range(0xD800, 0xE000)},
}


def sanitize_text(text: str) -> str:
    """`text` with U+0000, the other C0 controls except tab/newline/CR, and unpaired
    surrogates replaced by U+FFFD: storable in PostgreSQL, same length."""
    return text.translate(_UNSTORABLE)


def _text(value: Any, limit: int) -> str:
    """A reply's free-text field as storable text of at most `limit` characters."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:  # a pathological value (e.g. nested too deeply to print)
            value = f"<{type(value).__name__}>"
    return sanitize_text(value[:limit])


def fraud_command_id(payment_id: str) -> str:
    """A payment has one fraud check: its result, or its timeout, has one id."""
    return f"{payment_id}:fraud"


def _outcome(success: bool) -> str:
    return "ok" if success else "fail"


def process_command_id(payment_id: str, attempt: int, success: bool) -> str:
    """``<payment_id>:process:<attempt>:ok`` or ``…:fail``: one id per attempt and outcome."""
    return f"{payment_id}:process:{attempt}:{_outcome(success)}"


def refund_command_id(payment_id: str, attempt: int, success: bool) -> str:
    """``<payment_id>:refund:<attempt>:ok`` or ``…:fail``."""
    return f"{payment_id}:refund:{attempt}:{_outcome(success)}"


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


def result_command_id(request: ProcessRequest, success: bool) -> str:
    """The id of the result of `request`: distinct for a success and a failure."""
    if request.operation == Operation.REFUND:
        return refund_command_id(request.payment_id, request.attempt, success)
    return process_command_id(request.payment_id, request.attempt, success)


def fraud_unavailable(payment_id: str, reason: str, now: str) -> Command:
    return Command(
        kind=CommandKind.FRAUD_UNAVAILABLE.value,
        payment_id=payment_id,
        command_id=fraud_command_id(payment_id),
        issued_at=now,
        reason=reason,
    )


def _decode(reply: bytes) -> Any:
    """The decoded reply, or None when it cannot be decoded, whatever the reason."""
    try:
        return loads(reply)
    except Exception:  # ValueError, any DecimalException, RecursionError, TypeError, ...
        return None


def _readable_score(score: Any) -> bool:
    """A finite number whose adjusted exponent (`Decimal.adjusted`, the exponent of its
    leading digit) is within ±`MAX_SCORE_EXPONENT`: judged on the decimal's own exponent,
    without context arithmetic, so ``1e999999999`` or ``0E-1000`` never reach the saga."""
    if isinstance(score, bool) or not isinstance(score, (int, Decimal)):
        return False
    value = Decimal(score)
    if not value.is_finite():
        return False
    return -MAX_SCORE_EXPONENT <= value.adjusted() <= MAX_SCORE_EXPONENT


def fraud_result(payment_id: str, reply: bytes, now: str) -> Command:
    """A FRAUD_RESULT command, or FRAUD_UNAVAILABLE if the reply is not a valid answer."""
    try:
        return _fraud_result(payment_id, reply, now)
    except Exception:  # never raise out of the fraud agent, whatever the reply
        return fraud_unavailable(payment_id, "fraud service sent an unreadable reply", now)


def _fraud_result(payment_id: str, reply: bytes, now: str) -> Command:
    data = _decode(reply)
    if data is None:
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
    if not _readable_score(score):
        return fraud_unavailable(payment_id, "fraud reply has an unreadable risk_score", now)
    return Command.trusted(
        kind=CommandKind.FRAUD_RESULT.value,
        payment_id=payment_id,
        command_id=fraud_command_id(payment_id),
        issued_at=now,
        approved=approved,
        risk_score=Decimal(score),
        reason=_text(reason, 500),
    )


def process_failure(
    request: ProcessRequest, code: str, message: str, retryable: bool, now: str,
    retry_after: float | None = None,
) -> Command:
    return Command(
        kind=_result_kind(request).value,
        payment_id=request.payment_id,
        command_id=result_command_id(request, success=False),
        issued_at=now,
        attempt=request.attempt,
        success=False,
        error_code=sanitize_text(code),
        error_message=sanitize_text(message),
        retryable=retryable,
        retry_after=retry_after,
    )


def process_result(request: ProcessRequest, reply: bytes, now: str) -> Command:
    """A PROCESS_RESULT / REFUND_RESULT command: the reply's success or failure, or a
    retryable ``invalid_reply`` failure when the reply cannot be read."""
    try:
        return _process_result(request, reply, now)
    except Exception:  # never raise out of the processor agent, whatever the reply
        return process_failure(
            request, "invalid_reply", "processor sent an unreadable reply", True, now
        )


def _process_result(request: ProcessRequest, reply: bytes, now: str) -> Command:
    data = _decode(reply)
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
        return Command.trusted(
            kind=_result_kind(request).value,
            payment_id=request.payment_id,
            command_id=result_command_id(request, success=True),
            issued_at=now,
            attempt=request.attempt,
            success=True,
            confirmation_id=_text(data.get("confirmation_id") or "", 255),
            refund_id=_text(data.get("refund_id") or "", 255) or None,
        )
    return process_failure(
        request,
        _text(data.get("error_code") or "processor_error", 100),
        _text(data.get("error_message") or "", 500),
        data.get("retryable") is True,
        now,
    )
