"""``validate_created``: every raw ``payment.created`` value becomes a `PaymentCreated` or an
`Invalid` with a stable code and a readable detail — never an exception."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from orchestrator_app.domain.records import PaymentCreated
from orchestrator_app.domain.validation import MAX_ID_LENGTH, Invalid, validate_created

#: The spec's example, byte for byte in the form the gateway sends it.
SPEC_EXAMPLE = (
    b'{"payment_id":"payment-uuid","amount":100.50,"currency":"USD",'
    b'"customer_id":"customer-123","merchant_id":"merchant-456","status":"NEW",'
    b'"created_at":"2026-02-13T10:00:00Z"}'
)

REQUIRED = (
    "payment_id", "amount", "currency", "customer_id", "merchant_id", "status", "created_at",
)

#: Every code validate_created may return.
CODES = {
    "too_large", "malformed_json", "not_an_object", "missing_field", "invalid_type",
    "invalid_id", "invalid_amount", "invalid_currency", "invalid_status",
    "invalid_timestamp",
}


def fields(**changes: Any) -> dict[str, Any]:
    """The spec example as a dict (amount as raw JSON text), with changes applied."""
    base: dict[str, Any] = {
        "payment_id": "payment-uuid",
        "amount": RawNumber("100.50"),
        "currency": "USD",
        "customer_id": "customer-123",
        "merchant_id": "merchant-456",
        "status": "NEW",
        "created_at": "2026-02-13T10:00:00Z",
    }
    base.update(changes)
    return base


class RawNumber(str):
    """A JSON number written exactly as given (json would turn Decimal into float)."""


def encode(data: Any) -> bytes:
    """Compact JSON; `RawNumber` values are written as the number text they hold."""
    raw_numbers = {}
    if isinstance(data, dict):
        data = dict(data)
        for key, value in data.items():
            if isinstance(value, RawNumber):
                marker = f"@@{key}@@"
                raw_numbers[f'"{marker}"'] = str(value)
                data[key] = marker
    text = json.dumps(data, separators=(",", ":"))
    for marker, number in raw_numbers.items():
        text = text.replace(marker, number)
    return text.encode()


def without(name: str) -> dict[str, Any]:
    data = fields()
    del data[name]
    return data


def expect_invalid(raw: bytes, code: str, max_bytes: int = 65536) -> Invalid:
    result = validate_created(raw, max_bytes)
    assert isinstance(result, Invalid), f"accepted: {result!r}"
    assert result.code == code, result
    assert result.code in CODES
    assert result.detail.strip()
    return result


# --- valid ------------------------------------------------------------------------------


def test_spec_example_is_valid() -> None:
    result = validate_created(SPEC_EXAMPLE, 65536)
    assert isinstance(result, PaymentCreated)
    assert type(result.amount) is Decimal
    assert result.amount == Decimal("100.50")
    assert str(result.amount) == "100.50"  # exact, not a float 100.5
    assert result.asdict() == {
        "payment_id": "payment-uuid",
        "amount": Decimal("100.50"),
        "currency": "USD",
        "customer_id": "customer-123",
        "merchant_id": "merchant-456",
        "status": "NEW",
        "created_at": "2026-02-13T10:00:00Z",
    }


def test_helper_encodes_the_spec_example() -> None:
    assert encode(fields()) == SPEC_EXAMPLE


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"amount": RawNumber("100")}, lambda p: p.amount == Decimal(100)),
        ({"amount": RawNumber("0.0001")}, lambda p: str(p.amount) == "0.0001"),
        ({"amount": RawNumber("100.50000")}, lambda p: p.amount == Decimal("100.5")),
        ({"amount": RawNumber("999999999999999.9999")},
         lambda p: str(p.amount) == "999999999999999.9999"),
        ({"amount": RawNumber("1.5E+3")}, lambda p: p.amount == Decimal(1500)),
        ({"currency": "JPY"}, lambda p: p.currency == "JPY"),
        ({"currency": "EUR"}, lambda p: p.currency == "EUR"),
        ({"created_at": "2026-02-13T10:00:00+02:00"}, lambda p: p.created_at.endswith("02:00")),
        ({"created_at": "2026-02-13T10:00:00.123456Z"}, lambda p: True),
        ({"payment_id": "a" * MAX_ID_LENGTH}, lambda p: len(p.payment_id) == MAX_ID_LENGTH),
        ({"payment_id": "550e8400-e29b-41d4-a716-446655440000"}, lambda p: True),
        ({"customer_id": "user@example.com"}, lambda p: True),
        ({"merchant_id": "m.1_2:3"}, lambda p: True),
        # extra unknown fields are ignored
        ({"extra": "x", "nested": {"a": [1, 2]}, "note": None},
         lambda p: not hasattr(p, "extra")),
    ],
    ids=[
        "integer-amount", "smallest-amount", "trailing-zeros", "largest-amount",
        "exponent-amount", "JPY", "EUR", "offset-tz", "microseconds", "longest-id", "uuid-id",
        "email-customer", "punctuated-merchant", "extra-fields",
    ],
)
def test_valid_variants(changes: dict[str, Any], check: Any) -> None:
    result = validate_created(encode(fields(**changes)), 65536)
    assert isinstance(result, PaymentCreated), result
    assert type(result.amount) is Decimal
    assert check(result)


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    assert isinstance(validate_created(SPEC_EXAMPLE, len(SPEC_EXAMPLE)), PaymentCreated)


def test_default_limit_is_64_kib() -> None:
    padded = encode(fields(pad="x" * 70000))
    result = validate_created(padded)
    assert isinstance(result, Invalid) and result.code == "too_large"
    assert isinstance(validate_created(encode(fields(pad="x" * 60000))), PaymentCreated)


# --- invalid ----------------------------------------------------------------------------

INVALID_CASES: list[tuple[str, bytes, str]] = [
    # not JSON at all
    ("empty", b"", "malformed_json"),
    ("garbage", b"not json", "malformed_json"),
    ("truncated", SPEC_EXAMPLE[:-1], "malformed_json"),
    ("trailing-garbage", SPEC_EXAMPLE + b"x", "malformed_json"),
    ("single-quotes", b"{'payment_id': 'p'}", "malformed_json"),
    ("nan-amount", SPEC_EXAMPLE.replace(b"100.50", b"NaN"), "malformed_json"),
    ("infinity-amount", SPEC_EXAMPLE.replace(b"100.50", b"Infinity"), "malformed_json"),
    ("invalid-utf8", b'{"payment_id":"\xff\xfe"}', "malformed_json"),
    ("invalid-utf8-only", b"\xff\xfe\xfd", "malformed_json"),
    ("latin1-in-value", SPEC_EXAMPLE.replace(b"customer-123", b"customer-\xe9"),
     "malformed_json"),
    # JSON, but not an object
    ("array", b"[1,2,3]", "not_an_object"),
    ("array-of-object", b"[" + SPEC_EXAMPLE + b"]", "not_an_object"),
    ("string", b'"payment"', "not_an_object"),
    ("number", b"100.50", "not_an_object"),
    ("integer", b"42", "not_an_object"),
    ("null", b"null", "not_an_object"),
    ("true", b"true", "not_an_object"),
    # each required field missing, or null
    *[(f"missing-{name}", encode(without(name)), "missing_field") for name in REQUIRED],
    *[(f"null-{name}", encode(fields(**{name: None})), "missing_field") for name in REQUIRED],
    ("empty-object", b"{}", "missing_field"),
    # wrong types
    ("amount-string", encode(fields(amount="100.50")), "invalid_type"),
    ("amount-true", encode(fields(amount=True)), "invalid_type"),
    ("amount-false", encode(fields(amount=False)), "invalid_type"),
    ("amount-object", encode(fields(amount={"value": 1})), "invalid_type"),
    ("amount-array", encode(fields(amount=[100])), "invalid_type"),
    ("currency-number", encode(fields(currency=840)), "invalid_type"),
    ("payment_id-number", encode(fields(payment_id=123)), "invalid_type"),
    ("customer_id-number", encode(fields(customer_id=123)), "invalid_type"),
    ("merchant_id-array", encode(fields(merchant_id=["m"])), "invalid_type"),
    ("created_at-number", encode(fields(created_at=1770976800)), "invalid_type"),
    # ids
    ("payment_id-empty", encode(fields(payment_id="")), "invalid_id"),
    ("payment_id-too-long", encode(fields(payment_id="a" * (MAX_ID_LENGTH + 1))),
     "invalid_id"),
    ("payment_id-space", encode(fields(payment_id="pay ment")), "invalid_id"),
    ("payment_id-slash", encode(fields(payment_id="../etc")), "invalid_id"),
    ("customer_id-newline", encode(fields(customer_id="c\n1")), "invalid_id"),
    ("merchant_id-leading-dash", encode(fields(merchant_id="-m")), "invalid_id"),
    # amounts
    ("amount-zero", encode(fields(amount=RawNumber("0"))), "invalid_amount"),
    ("amount-zero-decimal", encode(fields(amount=RawNumber("0.00"))), "invalid_amount"),
    ("amount-negative", encode(fields(amount=RawNumber("-100.50"))), "invalid_amount"),
    ("amount-negative-zero", encode(fields(amount=RawNumber("-0"))), "invalid_amount"),
    ("amount-5-places", encode(fields(amount=RawNumber("0.00001"))), "invalid_amount"),
    ("amount-5-places-large", encode(fields(amount=RawNumber("100.12345"))), "invalid_amount"),
    ("amount-too-large", encode(fields(amount=RawNumber("1000000000000000"))),
     "invalid_amount"),
    ("amount-too-large-decimal", encode(fields(amount=RawNumber("1000000000000000.5"))),
     "invalid_amount"),
    ("amount-huge-exponent", encode(fields(amount=RawNumber("1e400"))), "invalid_amount"),
    ("amount-tiny-exponent", encode(fields(amount=RawNumber("1e-400"))), "invalid_amount"),
    # currencies
    ("currency-unknown", encode(fields(currency="ABC")), "invalid_currency"),
    ("currency-lowercase", encode(fields(currency="usd")), "invalid_currency"),
    ("currency-short", encode(fields(currency="US")), "invalid_currency"),
    ("currency-long", encode(fields(currency="USDT")), "invalid_currency"),
    ("currency-no-currency", encode(fields(currency="XXX")), "invalid_currency"),
    ("currency-testing", encode(fields(currency="XTS")), "invalid_currency"),
    ("currency-empty", encode(fields(currency="")), "invalid_currency"),
    # status
    ("status-completed", encode(fields(status="COMPLETED")), "invalid_status"),
    ("status-lowercase", encode(fields(status="new")), "invalid_status"),
    ("status-number", encode(fields(status=1)), "invalid_status"),
    ("status-empty", encode(fields(status="")), "invalid_status"),
    # timestamps
    ("created_at-naive", encode(fields(created_at="2026-02-13T10:00:00")),
     "invalid_timestamp"),
    ("created_at-date-only", encode(fields(created_at="2026-02-13")), "invalid_timestamp"),
    ("created_at-garbage", encode(fields(created_at="yesterday")), "invalid_timestamp"),
    ("created_at-empty", encode(fields(created_at="")), "invalid_timestamp"),
    ("created_at-bad-month", encode(fields(created_at="2026-13-01T10:00:00Z")),
     "invalid_timestamp"),
]


@pytest.mark.parametrize(
    ("raw", "code"), [(raw, code) for _, raw, code in INVALID_CASES],
    ids=[name for name, _, _ in INVALID_CASES],
)
def test_invalid_events(raw: bytes, code: str) -> None:
    expect_invalid(raw, code)


def test_every_code_is_exercised() -> None:
    assert {code for _, _, code in INVALID_CASES} | {"too_large"} == CODES


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_field_is_named_in_the_detail(name: str) -> None:
    assert name in expect_invalid(encode(without(name)), "missing_field").detail


def test_all_missing_fields_are_listed() -> None:
    detail = expect_invalid(b'{"payment_id":"p"}', "missing_field").detail
    for name in REQUIRED[1:]:
        assert name in detail


def test_too_large_is_checked_before_parsing() -> None:
    result = expect_invalid(SPEC_EXAMPLE, "too_large", max_bytes=len(SPEC_EXAMPLE) - 1)
    assert str(len(SPEC_EXAMPLE)) in result.detail
    # even garbage over the limit is "too large", not "malformed"
    expect_invalid(b"x" * 101, "too_large", max_bytes=100)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (encode(fields(amount="100.50")), "amount"),
        (encode(fields(currency=840)), "currency"),
        (encode(fields(payment_id=123)), "payment_id"),
        (encode(fields(created_at=1)), "created_at"),
        (b"[]", "array"),
        (b"null", "null"),
    ],
)
def test_details_say_what_is_wrong(raw: bytes, needle: str) -> None:
    result = validate_created(raw, 65536)
    assert isinstance(result, Invalid)
    assert needle in result.detail


def test_detail_is_bounded_for_long_garbage() -> None:
    result = validate_created(encode(fields(currency="Q" * 5000)), 65536)
    assert isinstance(result, Invalid)
    assert len(result.detail) < 200
    result = validate_created(encode(fields(created_at="Z" * 5000)), 65536)
    assert isinstance(result, Invalid)
    assert len(result.detail) < 200


def test_payment_created_round_trips_through_the_wire() -> None:
    result = validate_created(SPEC_EXAMPLE, 65536)
    assert isinstance(result, PaymentCreated)
    wire = result.dumps()
    assert b'"amount":100.50' in wire
    assert PaymentCreated.loads(wire) == result


# --- regressions: bugs found by these tests, fixed

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000  # 2,000 bytes: far under the size limit
DEEP_OBJECT = encode(fields(extra=RawNumber('{"a":' * 1000 + "1" + "}" * 1000)))


@pytest.mark.parametrize("raw", [DEEP_ARRAY, b"[" * 1000, DEEP_OBJECT],
                         ids=["closed-array", "open-array", "nested-extra-field"])
def test_deeply_nested_json_is_refused_not_raised(raw: bytes) -> None:
    result = validate_created(raw, 65536)
    assert isinstance(result, (Invalid, PaymentCreated))
