"""`_Record.trusted`: the constructor's result without its per-field coercion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orchestrator_app.domain import records
from orchestrator_app.domain.records import Command, HistoryEntry, Payment, Timer


def test_the_unit_suite_cross_checks_every_trusted_record() -> None:
    assert records.CHECK_TRUSTED


def test_optional_fields_get_their_defaults_and_the_wire_form_is_the_constructors() -> None:
    kwargs = {"kind": "FRAUD_RESULT", "payment_id": "p-1", "command_id": "p-1:fraud",
              "issued_at": "2026-12-01T10:00:00Z", "approved": True,
              "risk_score": Decimal("0.10")}
    fast, slow = Command.trusted(**kwargs), Command(**kwargs)
    assert fast.attempt == 0 and fast.expected_version == 0 and fast.reason is None
    assert fast.dumps() == slow.dumps()
    assert Command.loads(fast.dumps()) == slow


def test_each_record_gets_its_own_bookkeeping_set() -> None:
    one = Timer.trusted(payment_id="a", kind="retry", due=1.5, seq=1)
    two = Timer.trusted(payment_id="b", kind="retry", due=2.5, seq=1)
    assert one.__dict__["__evaluated_fields__"] is not two.__dict__["__evaluated_fields__"]


def test_a_missing_or_unknown_field_fails_as_in_the_constructor() -> None:
    with pytest.raises(TypeError, match="missing \\['seq'\\]"):
        Timer.trusted(payment_id="a", kind="retry", due=1.5)
    with pytest.raises(TypeError, match="unknown \\['sequence'\\]"):
        Timer.trusted(payment_id="a", kind="retry", due=1.5, seq=1, sequence=2)


def test_the_cross_check_catches_a_value_the_constructor_would_have_coerced() -> None:
    with pytest.raises(AssertionError, match="due=1 \\(int\\)"):
        Timer.trusted(payment_id="a", kind="retry", due=1, seq=1)


def test_a_trusted_payment_round_trips_like_a_constructed_one() -> None:
    entry = HistoryEntry.trusted(version=1, state="NEW", previous_state=None,
                                 timestamp="2026-12-01T10:00:00Z", metadata={})
    kwargs = {"payment_id": "p-1", "amount": Decimal("10.00"), "currency": "USD",
              "customer_id": "c", "merchant_id": "m", "created_at": "2026-12-01T10:00:00Z",
              "state": "NEW", "previous_state": None, "version": 1,
              "updated_at": "2026-12-01T10:00:00Z", "metadata": {}, "history": [entry],
              "applied": {}}
    fast = Payment.trusted(**kwargs)
    assert fast.dumps() == Payment(**kwargs).dumps()
    assert Payment.loads(fast.dumps()) == fast
