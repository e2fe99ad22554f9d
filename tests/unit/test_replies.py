"""NATS replies into saga commands (``domain/replies.py``), the wire bodies we send (DESIGN
§4), and the simulator's documented, deterministic rules (``simulator.py``'s docstring).

A reply we cannot trust is never guessed at: an unreadable fraud reply means "fraud service
unavailable" (MANUAL_REVIEW), an unreadable processor reply a retryable failure.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_app.dev.simulator import Rules, fraud_reply, process_reply, refund_reply
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import CommandKind, FraudCheckRequest, ProcessRequest
from orchestrator_app.domain.replies import (
    fraud_command_id,
    fraud_result,
    fraud_unavailable,
    fraud_wire_body,
    process_command_id,
    process_failure,
    process_result,
    process_wire_body,
    refund_command_id,
    result_command_id,
    sanitize_text,
)

PID = "pay-1"
NOW = "2026-02-13T10:00:00.000Z"
K = CommandKind


def body(**fields: Any) -> bytes:
    return codec.dumps(fields)


def payment_request(attempt: int = 2, merchant_id: str = "merchant-456",
                    payment_id: str = PID) -> ProcessRequest:
    return ProcessRequest(payment_id=payment_id, amount=Decimal("100.50"), currency="USD",
                          customer_id="customer-123", merchant_id=merchant_id,
                          attempt=attempt)


def refund_request(attempt: int = 3, merchant_id: str = "merchant-456") -> ProcessRequest:
    return ProcessRequest(payment_id=PID, amount=Decimal("100.50"), currency="USD",
                          customer_id="customer-123", merchant_id=merchant_id,
                          attempt=attempt, operation="refund", confirmation_id="conf-9")


# --- fraud replies ----------------------------------------------------------------------


def test_valid_fraud_reply_becomes_a_fraud_result() -> None:
    cmd = fraud_result(PID, b'{"payment_id":"pay-1","approved":true,"risk_score":0.12,'
                            b'"reason":"Low risk transaction"}', NOW)
    assert cmd.kind == K.FRAUD_RESULT
    assert (cmd.payment_id, cmd.command_id, cmd.issued_at) == (PID, "pay-1:fraud", NOW)
    assert cmd.approved is True
    assert isinstance(cmd.risk_score, Decimal) and cmd.risk_score == Decimal("0.12")
    assert str(cmd.risk_score) == "0.12"  # exact, never through a binary float
    assert cmd.reason == "Low risk transaction"


def test_rejecting_fraud_reply_and_integer_score() -> None:
    cmd = fraud_result(PID, body(payment_id=PID, approved=False, risk_score=1,
                                 reason="watch list"), NOW)
    assert (cmd.kind, cmd.approved, cmd.reason) == (K.FRAUD_RESULT, False, "watch list")
    assert isinstance(cmd.risk_score, Decimal) and cmd.risk_score == 1


def test_fraud_reply_reason_is_optional_and_bounded() -> None:
    cmd = fraud_result(PID, body(payment_id=PID, approved=True, risk_score=Decimal("0.5")), NOW)
    assert (cmd.kind, cmd.reason) == (K.FRAUD_RESULT, "")
    long = fraud_result(PID, body(payment_id=PID, approved=True, risk_score=0,
                                  reason="x" * 2000), NOW)
    assert long.reason == "x" * 500


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b'{"payment_id": "pay-1", "approved": true, "risk_score": NaN, "reason": ""}',
        b"[1, 2]",
        b'"pay-1"',
        b"null",
    ],
)
def test_unreadable_fraud_reply_means_unavailable(reply: bytes) -> None:
    cmd = fraud_result(PID, reply, NOW)
    assert cmd.kind == K.FRAUD_UNAVAILABLE
    # the same id as a result: a payment has one fraud check, answered once
    assert (cmd.payment_id, cmd.command_id, cmd.issued_at) == (PID, "pay-1:fraud", NOW)
    assert cmd.reason
    assert cmd.approved is None and cmd.risk_score is None


@pytest.mark.parametrize("payment_id", ["pay-2", None, "", "PAY-1"])
def test_fraud_reply_for_another_payment_means_unavailable(payment_id: str | None) -> None:
    fields: dict[str, Any] = {"approved": True, "risk_score": Decimal("0.1"), "reason": "ok"}
    if payment_id is not None:
        fields["payment_id"] = payment_id
    cmd = fraud_result(PID, body(**fields), NOW)
    assert cmd.kind == K.FRAUD_UNAVAILABLE
    assert "another payment" in str(cmd.reason)


@pytest.mark.parametrize(
    "fields",
    [
        {"approved": "true", "risk_score": Decimal("0.1"), "reason": "ok"},
        {"approved": 1, "risk_score": Decimal("0.1"), "reason": "ok"},
        {"approved": None, "risk_score": Decimal("0.1"), "reason": "ok"},
        {"risk_score": Decimal("0.1"), "reason": "ok"},
        {"approved": True, "risk_score": True, "reason": "ok"},
        {"approved": True, "risk_score": "0.1", "reason": "ok"},
        {"approved": True, "risk_score": None, "reason": "ok"},
        {"approved": True, "reason": "ok"},
        {"approved": True, "risk_score": Decimal("0.1"), "reason": 5},
        {"approved": True, "risk_score": Decimal("0.1"), "reason": None},
    ],
)
def test_mistyped_fraud_reply_means_unavailable(fields: dict[str, Any]) -> None:
    cmd = fraud_result(PID, body(payment_id=PID, **fields), NOW)
    assert cmd.kind == K.FRAUD_UNAVAILABLE
    assert "mistyped" in str(cmd.reason)


def test_fraud_unavailable_and_command_ids() -> None:
    cmd = fraud_unavailable(PID, "fraud check timed out", NOW)
    assert (cmd.kind, cmd.command_id, cmd.reason, cmd.issued_at) == (
        K.FRAUD_UNAVAILABLE, "pay-1:fraud", "fraud check timed out", NOW,
    )
    assert fraud_command_id("p-9") == "p-9:fraud"
    assert process_command_id("p-9", 4, success=True) == "p-9:process:4:ok"
    assert process_command_id("p-9", 4, success=False) == "p-9:process:4:fail"
    assert refund_command_id("p-9", 2, success=True) == "p-9:refund:2:ok"
    assert refund_command_id("p-9", 2, success=False) == "p-9:refund:2:fail"


def test_fraud_wire_body_has_exactly_the_spec_fields() -> None:
    request = FraudCheckRequest(payment_id=PID, customer_id="customer-123",
                                amount=Decimal("100.50"), currency="USD",
                                merchant_id="merchant-456")
    wire = fraud_wire_body(request)
    assert wire == {"payment_id": PID, "customer_id": "customer-123",
                    "amount": Decimal("100.50"), "currency": "USD",
                    "merchant_id": "merchant-456"}
    assert b'"amount":100.50' in codec.dumps(wire)


# --- processor replies ------------------------------------------------------------------


def test_payment_success_becomes_a_process_result() -> None:
    request = payment_request(attempt=2)
    cmd = process_result(request, body(payment_id=PID, success=True, confirmation_id="conf-7",
                                       error_code=None, error_message=None, retryable=False),
                         NOW)
    assert cmd.kind == K.PROCESS_RESULT
    assert (cmd.payment_id, cmd.command_id, cmd.issued_at, cmd.attempt) == (
        PID, "pay-1:process:2:ok", NOW, 2,
    )
    assert (cmd.success, cmd.confirmation_id, cmd.refund_id) == (True, "conf-7", None)
    assert result_command_id(request, success=True) == "pay-1:process:2:ok"
    assert result_command_id(request, success=False) == "pay-1:process:2:fail"


def test_refund_success_becomes_a_refund_result() -> None:
    request = refund_request(attempt=3)
    cmd = process_result(request, body(payment_id=PID, success=True, refund_id="ref-1"), NOW)
    assert cmd.kind == K.REFUND_RESULT
    assert (cmd.command_id, cmd.attempt, cmd.success) == ("pay-1:refund:3:ok", 3, True)
    assert cmd.refund_id == "ref-1"
    assert result_command_id(request, success=True) == "pay-1:refund:3:ok"
    assert result_command_id(request, success=False) == "pay-1:refund:3:fail"


def test_success_ids_are_bounded_and_optional() -> None:
    cmd = process_result(payment_request(), body(payment_id=PID, success=True,
                                                 confirmation_id="c" * 400,
                                                 refund_id=""), NOW)
    assert cmd.confirmation_id == "c" * 255
    assert cmd.refund_id is None
    bare = process_result(payment_request(), body(payment_id=PID, success=True), NOW)
    assert (bare.success, bare.confirmation_id) == (True, "")


@pytest.mark.parametrize("request_", [payment_request(), refund_request()],
                         ids=["payment", "refund"])
def test_failure_reply_fields(request_: ProcessRequest) -> None:
    cmd = process_result(request_, body(payment_id=PID, success=False, confirmation_id=None,
                                        error_code="card_declined",
                                        error_message="Card declined by issuer",
                                        retryable=False), NOW)
    refund = request_.operation == "refund"
    assert cmd.kind == (K.REFUND_RESULT if refund else K.PROCESS_RESULT)
    assert cmd.command_id == result_command_id(request_, success=False)
    assert cmd.command_id.endswith(":fail")
    assert (cmd.success, cmd.error_code, cmd.error_message, cmd.retryable) == (
        False, "card_declined", "Card declined by issuer", False,
    )
    assert cmd.attempt == request_.attempt
    assert cmd.retry_after is None


@pytest.mark.parametrize(("flag", "expected"), [(True, True), (False, False), (None, False),
                                                ("true", False), (1, False)])
def test_only_a_boolean_true_is_retryable(flag: Any, expected: bool) -> None:
    cmd = process_result(payment_request(), body(payment_id=PID, success=False,
                                                 error_code="x", retryable=flag), NOW)
    assert cmd.retryable is expected


def test_failure_without_details_and_with_long_details() -> None:
    cmd = process_result(payment_request(), body(payment_id=PID, success=False), NOW)
    assert (cmd.error_code, cmd.error_message, cmd.retryable) == ("processor_error", "", False)
    long = process_result(payment_request(), body(payment_id=PID, success=False,
                                                  error_code="e" * 300,
                                                  error_message="m" * 900), NOW)
    assert long.error_code == "e" * 100 and long.error_message == "m" * 500


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"garbage",
        b"[]",
        b'{"payment_id": "pay-2", "success": true}',  # another payment
        b'{"success": true}',
        b'{"payment_id": "pay-1", "success": "yes"}',  # no boolean success
        b'{"payment_id": "pay-1"}',
        b'{"payment_id": "pay-1", "success": true, "x": Infinity}',
    ],
)
@pytest.mark.parametrize("request_", [payment_request(), refund_request()],
                         ids=["payment", "refund"])
def test_unreadable_processor_reply_is_a_retryable_failure(request_: ProcessRequest,
                                                           reply: bytes) -> None:
    cmd = process_result(request_, reply, NOW)
    refund = request_.operation == "refund"
    assert cmd.kind == (K.REFUND_RESULT if refund else K.PROCESS_RESULT)
    assert cmd.command_id == result_command_id(request_, success=False)
    assert (cmd.success, cmd.error_code, cmd.retryable) == (False, "invalid_reply", True)
    assert cmd.error_message
    assert cmd.attempt == request_.attempt


def test_process_failure_carries_retry_after() -> None:
    cmd = process_failure(payment_request(attempt=5), "circuit_open", "breaker open", True,
                          NOW, retry_after=12.5)
    assert (cmd.kind, cmd.command_id, cmd.attempt) == (K.PROCESS_RESULT, "pay-1:process:5:fail", 5)
    assert (cmd.success, cmd.error_code, cmd.retryable, cmd.retry_after) == (
        False, "circuit_open", True, 12.5,
    )
    refund = process_failure(refund_request(attempt=2), "timeout", "no answer", True, NOW)
    assert (refund.kind, refund.command_id, refund.retry_after) == (
        K.REFUND_RESULT, "pay-1:refund:2:fail", None,
    )


def test_payment_wire_body_has_exactly_the_design_fields() -> None:
    wire = process_wire_body(payment_request(attempt=2))
    # DESIGN §4: payment.process request
    assert wire == {"payment_id": PID, "amount": Decimal("100.50"), "currency": "USD",
                    "customer_id": "customer-123", "merchant_id": "merchant-456",
                    "attempt": 2}
    assert b'"amount":100.50' in codec.dumps(wire)


def test_refund_wire_body_adds_the_confirmation_id() -> None:
    wire = process_wire_body(refund_request(attempt=3))
    assert wire == {"payment_id": PID, "amount": Decimal("100.50"), "currency": "USD",
                    "customer_id": "customer-123", "merchant_id": "merchant-456",
                    "attempt": 3, "confirmation_id": "conf-9"}


# --- simulator rules --------------------------------------------------------------------


def fraud_request(customer_id: str = "customer-123", amount: Any = Decimal("100.50"),
                  payment_id: str = PID) -> dict[str, Any]:
    return {"payment_id": payment_id, "customer_id": customer_id, "amount": amount,
            "currency": "USD", "merchant_id": "merchant-456"}


def test_fraud_rule_watch_list_customer_is_rejected() -> None:
    assert fraud_reply(fraud_request(customer_id="fraud-42")) == {
        "payment_id": PID, "approved": False, "risk_score": Decimal("0.95"),
        "reason": "Customer on watch list",
    }


@pytest.mark.parametrize("amount", [Decimal("10000"), 10000, Decimal("10000.0001"),
                                    Decimal("999999")])
def test_fraud_rule_large_amounts_are_rejected(amount: Any) -> None:
    reply = fraud_reply(fraud_request(amount=amount))
    assert reply is not None
    assert (reply["approved"], reply["risk_score"]) == (False, Decimal("0.90"))


def test_fraud_rule_watch_list_wins_over_amount() -> None:
    reply = fraud_reply(fraud_request(customer_id="fraud-1", amount=Decimal("50000")))
    assert reply is not None and reply["risk_score"] == Decimal("0.95")


@pytest.mark.parametrize("amount", [Decimal("100.50"), Decimal("50000")])
def test_fraud_rule_noreply_customer_gets_no_answer(amount: Decimal) -> None:
    assert fraud_reply(fraud_request(customer_id="noreply-1", amount=amount)) is None


@pytest.mark.parametrize(
    ("amount", "score"),
    [
        (Decimal("0.01"), Decimal("0.0500")),
        (Decimal("100"), Decimal("0.0550")),
        (Decimal("2000"), Decimal("0.1500")),
        (Decimal("9999.9999"), Decimal("0.5500")),
        (1, Decimal("0.0500")),
    ],
)
def test_fraud_rule_others_are_approved_with_a_score(amount: Any, score: Decimal) -> None:
    reply = fraud_reply(fraud_request(amount=amount))
    assert reply == {"payment_id": PID, "approved": True, "risk_score": score,
                     "reason": "Low risk transaction"}
    assert reply is not None and reply["risk_score"].as_tuple().exponent == -4


def test_fraud_rule_slow_customer_is_approved() -> None:
    # the hold itself is in the subscriber; the answer is a normal approval
    reply = fraud_reply(fraud_request(customer_id="slow-1"))
    assert reply is not None and reply["approved"] is True


def test_simulator_fraud_reply_is_understood_by_the_orchestrator() -> None:
    reply = fraud_reply(fraud_request())
    cmd = fraud_result(PID, codec.dumps(reply), NOW)
    assert (cmd.kind, cmd.approved, cmd.risk_score) == (K.FRAUD_RESULT, True, Decimal("0.0550"))


def wire(request: ProcessRequest) -> dict[str, Any]:
    decoded: dict[str, Any] = codec.loads(codec.dumps(process_wire_body(request)))
    return decoded  # as the simulator gets it


REPLY_FIELDS = {"payment_id", "success", "confirmation_id", "error_code", "error_message",
                "retryable"}


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_process_rule_fail_merchant_is_declined(attempt: int) -> None:
    reply = process_reply(wire(payment_request(attempt, merchant_id="fail-1")), Rules())
    assert reply == {"payment_id": PID, "success": False, "confirmation_id": None,
                     "error_code": "card_declined", "error_message": "Card declined by issuer",
                     "retryable": False}


def test_process_rule_flaky_merchant_fails_once_then_succeeds() -> None:
    first = process_reply(wire(payment_request(1, merchant_id="flaky-1")), Rules())
    assert first is not None
    assert (first["success"], first["error_code"], first["retryable"]) == (
        False, "processor_unavailable", True,
    )
    assert set(first) == REPLY_FIELDS
    for attempt in (2, 3):
        later = process_reply(wire(payment_request(attempt, merchant_id="flaky-1")), Rules())
        assert later is not None and later["success"] is True


def test_process_rule_noreply_merchant_gets_no_answer() -> None:
    assert process_reply(wire(payment_request(merchant_id="noreply-1")), Rules()) is None


def test_process_rule_others_succeed_with_a_deterministic_confirmation() -> None:
    request = wire(payment_request(1))
    reply = process_reply(request, Rules())
    assert reply is not None and set(reply) == REPLY_FIELDS
    assert (reply["payment_id"], reply["success"], reply["error_code"],
            reply["error_message"], reply["retryable"]) == (PID, True, None, None, False)
    assert re.fullmatch(r"conf-[0-9a-f]{12}", reply["confirmation_id"])
    assert process_reply(request, Rules()) == reply  # same request, same answer
    other_attempt = process_reply(wire(payment_request(2)), Rules())
    assert other_attempt is not None
    assert other_attempt["confirmation_id"] != reply["confirmation_id"]


def test_process_rule_failure_rate_is_a_deterministic_share() -> None:
    def outcomes(rate: float) -> list[bool]:
        replies = [process_reply(wire(payment_request(1, payment_id=f"p-{i}")),
                                 Rules(failure_rate=rate)) for i in range(400)]
        assert all(r is not None for r in replies)
        return [bool(r and r["success"]) for r in replies]

    assert all(outcomes(0.0))
    assert not any(outcomes(1.0))
    half = outcomes(0.5)
    assert 140 <= half.count(False) <= 260
    assert outcomes(0.5) == half  # the same payments fail every time
    failed = process_reply(wire(payment_request(1, payment_id="p-0")), Rules(failure_rate=1.0))
    assert failed is not None
    assert (failed["error_code"], failed["retryable"]) == ("processor_unavailable", True)


def test_process_rule_declines_win_over_the_failure_rate() -> None:
    reply = process_reply(wire(payment_request(merchant_id="fail-1")), Rules(failure_rate=1.0))
    assert reply is not None and reply["error_code"] == "card_declined"


def test_refund_rule_refund_fail_merchant_is_refused() -> None:
    reply = refund_reply(wire(refund_request(merchant_id="refund-fail-1")))
    assert reply == {"payment_id": PID, "success": False, "refund_id": None,
                     "error_code": "refund_declined", "error_message": "Refund refused",
                     "retryable": False}


@pytest.mark.parametrize("merchant_id", ["merchant-456", "fail-1", "flaky-1"])
def test_refund_rule_others_succeed_with_a_deterministic_refund_id(merchant_id: str) -> None:
    reply = refund_reply(wire(refund_request(attempt=1, merchant_id=merchant_id)))
    assert reply["success"] is True and reply["payment_id"] == PID
    assert (reply["error_code"], reply["error_message"], reply["retryable"]) == (
        None, None, False,
    )
    assert re.fullmatch(r"ref-[0-9a-f]{12}", reply["refund_id"])
    # one refund per payment: every attempt gets the same id
    again = refund_reply(wire(refund_request(attempt=4, merchant_id=merchant_id)))
    assert again["refund_id"] == reply["refund_id"]


def test_refund_fail_merchant_still_completes_its_payment() -> None:
    reply = process_reply(wire(payment_request(merchant_id="refund-fail-1")), Rules())
    assert reply is not None and reply["success"] is True


def test_simulator_replies_are_understood_by_the_orchestrator() -> None:
    payment = payment_request(1)
    cmd = process_result(payment, codec.dumps(process_reply(wire(payment), Rules())), NOW)
    assert (cmd.kind, cmd.success, cmd.command_id) == (K.PROCESS_RESULT, True, "pay-1:process:1:ok")
    assert cmd.confirmation_id and cmd.confirmation_id.startswith("conf-")

    declined = payment_request(1, merchant_id="fail-1")
    cmd = process_result(declined, codec.dumps(process_reply(wire(declined), Rules())), NOW)
    assert (cmd.success, cmd.error_code, cmd.retryable) == (False, "card_declined", False)

    refund = refund_request(2)
    cmd = process_result(refund, codec.dumps(refund_reply(wire(refund))), NOW)
    assert (cmd.kind, cmd.success, cmd.command_id) == (K.REFUND_RESULT, True, "pay-1:refund:2:ok")
    assert cmd.refund_id and cmd.refund_id.startswith("ref-")

    refused = refund_request(1, merchant_id="refund-fail-1")
    cmd = process_result(refused, codec.dumps(refund_reply(wire(refused))), NOW)
    assert (cmd.kind, cmd.success, cmd.error_code) == (K.REFUND_RESULT, False, "refund_declined")


# --- one id per attempt and outcome ----------------------------------------------------------


@pytest.mark.parametrize("request_", [payment_request(), refund_request()],
                         ids=["payment", "refund"])
def test_success_and_failure_of_one_attempt_have_different_ids(
    request_: ProcessRequest,
) -> None:
    """Two copies of one request may answer differently (one timed out, one charged):
    both must reach the saga, so the success is never a "duplicate" of the failure."""
    ok = process_result(request_, body(payment_id=PID, success=True, confirmation_id="c-1"),
                        NOW)
    declined = process_result(request_, body(payment_id=PID, success=False,
                                             error_code="card_declined"), NOW)
    timeout = process_failure(request_, "timeout", "no answer", True, NOW)
    unreadable = process_result(request_, b"garbage", NOW)
    assert ok.command_id.endswith(":ok")
    assert declined.command_id == timeout.command_id == unreadable.command_id
    assert declined.command_id.endswith(":fail")
    assert ok.command_id.removesuffix(":ok") == declined.command_id.removesuffix(":fail")
    # and another attempt has other ids
    other = process_result(payment_request(attempt=request_.attempt + 1) if
                           request_.operation == "payment" else
                           refund_request(attempt=request_.attempt + 1),
                           body(payment_id=PID, success=True), NOW)
    assert other.command_id != ok.command_id


# --- text PostgreSQL cannot store is sanitised -------------------------------------------------

UNSTORABLE = "a\x00b\x01c\x1fd\x7fe\tf\ng\rh\ud800i"
CLEANED = "a\ufffdb\ufffdc\ufffdd\x7fe\tf\ng\rh\ufffdi"


def test_sanitize_text() -> None:
    assert sanitize_text(UNSTORABLE) == CLEANED
    assert sanitize_text("") == ""
    assert sanitize_text("plain \u00e9 \U0001f4b8 text") == "plain \u00e9 \U0001f4b8 text"
    for code in range(0x20):
        kept = chr(code) in "\t\n\r"
        assert (sanitize_text(chr(code)) == chr(code)) is kept
    CLEANED.encode("utf-8")  # storable: encodes, and holds no NUL
    assert "\x00" not in CLEANED


def test_fraud_reply_text_is_sanitised_and_the_decision_kept() -> None:
    cmd = fraud_result(PID, body(payment_id=PID, approved=False, risk_score=Decimal("0.9"),
                                 reason=UNSTORABLE), NOW)
    assert (cmd.kind, cmd.approved) == (K.FRAUD_RESULT, False)
    assert cmd.reason == CLEANED


@pytest.mark.parametrize("request_", [payment_request(), refund_request()],
                         ids=["payment", "refund"])
def test_processor_reply_text_is_sanitised_and_the_outcome_kept(
    request_: ProcessRequest,
) -> None:
    ok = process_result(request_, body(payment_id=PID, success=True,
                                       confirmation_id=UNSTORABLE, refund_id=UNSTORABLE), NOW)
    assert ok.success is True
    assert (ok.confirmation_id, ok.refund_id) == (CLEANED, CLEANED)
    failed = process_result(request_, body(payment_id=PID, success=False,
                                           error_code=UNSTORABLE, error_message=UNSTORABLE,
                                           retryable=True), NOW)
    assert (failed.success, failed.retryable) == (False, True)
    assert (failed.error_code, failed.error_message) == (CLEANED, CLEANED)
    # the raw JSON escape form too
    raw = b'{"payment_id":"pay-1","success":true,"confirmation_id":"c\\u0000-1"}'
    assert process_result(request_, raw, NOW).confirmation_id == "c\ufffd-1"


def test_process_failure_sanitises_what_the_agent_passes() -> None:
    cmd = process_failure(payment_request(), "connection_error", "lost \x00 link", True, NOW)
    assert cmd.error_message == "lost \ufffd link"


def test_non_string_reply_texts_become_bounded_text() -> None:
    cmd = process_result(payment_request(), body(payment_id=PID, success=False,
                                                 error_code=12, error_message=["x"] * 400),
                         NOW)
    assert cmd.error_code == "12"
    assert cmd.error_message is not None and len(cmd.error_message) == 500


# --- fraud scores that are not sensible numbers ----------------------------------------------


@pytest.mark.parametrize(
    "score",
    [b"1e999999999", b"1e21", b"1e-21", b"-1e21", b"0E-1000", b"0e+21",
     b"1" + b"0" * 21, b"0." + b"0" * 20 + b"1", b"1e99999999999999999999999"],
)
def test_fraud_reply_with_an_unreadable_score_means_unavailable(score: bytes) -> None:
    reply = b'{"payment_id":"pay-1","approved":true,"risk_score":' + score + b',"reason":""}'
    cmd = fraud_result(PID, reply, NOW)
    assert cmd.kind == K.FRAUD_UNAVAILABLE
    assert cmd.risk_score is None


@pytest.mark.parametrize(
    ("score", "expected"),
    [(b"0", Decimal(0)), (b"0.0", Decimal("0.0")), (b"1e20", Decimal("1E+20")),
     (b"1e-20", Decimal("1E-20")), (b"0.95", Decimal("0.95")), (b"-3", Decimal(-3)),
     (b"1" + b"0" * 20, Decimal(10) ** 20)],
)
def test_fraud_reply_with_a_sensible_score_is_read_exactly(score: bytes,
                                                           expected: Decimal) -> None:
    reply = b'{"payment_id":"pay-1","approved":true,"risk_score":' + score + b',"reason":""}'
    cmd = fraud_result(PID, reply, NOW)
    assert cmd.kind == K.FRAUD_RESULT
    assert cmd.risk_score is not None
    assert cmd.risk_score.as_tuple() == expected.as_tuple()


# --- nothing a responder sends makes these raise ----------------------------------------------

ODD_REPLIES = [
    b"[" * 100_000,
    b'{"payment_id":"pay-1","success":true,"x":' + b"[" * 50_000,
    b'{"payment_id":"pay-1","approved":true,"risk_score":1e99999999999999999999999}',
    b'{"payment_id":"pay-1","success":true,"n":1e99999999999999999999999}',
    b'{"payment_id":"pay-1","success":true,"n":' + b"9" * 5000 + b"}",
    b"\xed\xa0\x80",
    b"\x00",
]


@pytest.mark.parametrize("reply", ODD_REPLIES)
def test_odd_replies_never_raise(reply: bytes) -> None:
    assert fraud_result(PID, reply, NOW).kind == K.FRAUD_UNAVAILABLE
    for request_ in (payment_request(), refund_request()):
        cmd = process_result(request_, reply, NOW)
        assert (cmd.success, cmd.error_code, cmd.retryable) == (False, "invalid_reply", True)


def test_a_success_with_an_odd_extra_field_is_still_a_success() -> None:
    deep = b'{"payment_id":"pay-1","success":true,"confirmation_id":"c-1","x":' + (
        b"[" * 200 + b"]" * 200 + b"}")
    cmd = process_result(payment_request(), deep, NOW)
    assert (cmd.success, cmd.confirmation_id) == (True, "c-1")


_odd_text = st.text(st.characters(codec=None) | st.sampled_from(["\x00", "\ud800", "\x1b"]),
                    max_size=30)
_numbers = st.sampled_from(["0", "0.12", "1e999999999", "1e99999999999999999999999",
                            "-0", "1e-400", "9" * 50, "NaN", "Infinity"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _odd_text | _numbers.map(lambda n: ("#", n)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_odd_text, inner, max_size=3),
    max_leaves=8,
)


def _json(value: Any) -> bytes:
    """JSON with ("#", text) pairs written as the raw number text."""
    if isinstance(value, tuple):
        return value[1].encode()
    if isinstance(value, list):
        return b"[" + b",".join(_json(v) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(codec.dumps(k) + b":" + _json(v) for k, v in value.items()) + b"}"
    return codec.dumps(value)


def _check_storable(*texts: str | None) -> None:
    for text in texts:
        if text is not None:
            assert "\x00" not in text
            text.encode("utf-8")  # no unpaired surrogates


@settings(max_examples=400, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {"payment_id": st.sampled_from([PID, PID, "pay-2"]) | _values},
        optional={"approved": st.booleans() | _values, "risk_score": _values,
                  "reason": _values, "success": st.booleans() | _values,
                  "confirmation_id": _values, "refund_id": _values, "error_code": _values,
                  "error_message": _values, "retryable": _values},
    ),
    garbage=st.binary(max_size=8),
    cut=st.integers(0, 400),
)
def test_any_reply_becomes_a_command_and_never_raises(
    fields: dict[str, Any], garbage: bytes, cut: int
) -> None:
    raw = _json(fields)
    for reply in (raw, raw[:cut] + garbage + raw[cut:]):
        fraud = fraud_result(PID, reply, NOW)
        assert fraud.kind in (K.FRAUD_RESULT, K.FRAUD_UNAVAILABLE)
        assert fraud.command_id == "pay-1:fraud"
        _check_storable(fraud.reason)
        if fraud.kind == K.FRAUD_RESULT:
            assert fraud.risk_score is not None and fraud.risk_score.is_finite()
            assert -20 <= fraud.risk_score.adjusted() <= 20
        for request_ in (payment_request(), refund_request()):
            cmd = process_result(request_, reply, NOW)
            assert isinstance(cmd.success, bool)
            assert cmd.command_id == result_command_id(request_, cmd.success)
            _check_storable(cmd.confirmation_id, cmd.refund_id, cmd.error_code,
                            cmd.error_message)
            assert type(cmd).loads(cmd.dumps()) == cmd  # it travels on the commands topic
