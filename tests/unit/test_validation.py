"""``validate_created``: every raw ``payment.created`` value becomes a `PaymentCreated` or an
`Invalid` with a stable code and a readable detail — never an exception."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_app.domain import money
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
        # the amount comes out in its canonical form: the currency's minor unit of places
        ({"amount": RawNumber("100")}, lambda p: str(p.amount) == "100.00"),
        ({"amount": RawNumber("0.01")}, lambda p: str(p.amount) == "0.01"),
        ({"amount": RawNumber("100.50000")}, lambda p: str(p.amount) == "100.50"),
        ({"amount": RawNumber("100.5")}, lambda p: str(p.amount) == "100.50"),
        ({"amount": RawNumber("999999999999999.99")},
         lambda p: str(p.amount) == "999999999999999.99"),
        ({"amount": RawNumber("1.5E+3")}, lambda p: str(p.amount) == "1500.00"),
        ({"amount": RawNumber("1" + "0" * 40 + "e-40")}, lambda p: str(p.amount) == "1.00"),
        ({"currency": "JPY", "amount": RawNumber("100")}, lambda p: str(p.amount) == "100"),
        ({"currency": "JPY", "amount": RawNumber("100.0")}, lambda p: str(p.amount) == "100"),
        ({"currency": "JPY", "amount": RawNumber("1E+3")}, lambda p: str(p.amount) == "1000"),
        ({"currency": "KWD", "amount": RawNumber("0.001")},
         lambda p: str(p.amount) == "0.001"),
        ({"currency": "BHD", "amount": RawNumber("12.5")},
         lambda p: str(p.amount) == "12.500"),
        ({"currency": "CLF", "amount": RawNumber("999999999999999.9999")},
         lambda p: str(p.amount) == "999999999999999.9999"),
        ({"currency": "EUR"}, lambda p: p.currency == "EUR" and str(p.amount) == "100.50"),
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
        "integer-amount", "smallest-amount", "trailing-zeros", "one-place", "largest-amount",
        "exponent-amount", "many-trailing-zeros", "JPY", "JPY-point-zero", "JPY-exponent",
        "KWD-smallest", "BHD-padded", "CLF-largest", "EUR", "offset-tz", "microseconds",
        "longest-id", "uuid-id", "email-customer", "punctuated-merchant", "extra-fields",
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
    ("amount-negative-zero-decimal", encode(fields(amount=RawNumber("-0.0"))),
     "invalid_amount"),
    ("amount-3-places-usd", encode(fields(amount=RawNumber("100.505"))), "invalid_amount"),
    ("amount-4-places-usd", encode(fields(amount=RawNumber("0.0001"))), "invalid_amount"),
    ("amount-5-places", encode(fields(amount=RawNumber("0.00001"))), "invalid_amount"),
    ("amount-5-places-large", encode(fields(amount=RawNumber("100.12345"))), "invalid_amount"),
    ("amount-32-places", encode(fields(amount=RawNumber("0." + "0" * 31 + "1"))),
     "invalid_amount"),
    ("amount-fraction-jpy", encode(fields(currency="JPY", amount=RawNumber("100.5"))),
     "invalid_amount"),
    ("amount-4-places-kwd", encode(fields(currency="KWD", amount=RawNumber("1.0001"))),
     "invalid_amount"),
    ("amount-5-places-clf", encode(fields(currency="CLF", amount=RawNumber("1.00001"))),
     "invalid_amount"),
    ("amount-too-large", encode(fields(amount=RawNumber("1000000000000000"))),
     "invalid_amount"),
    ("amount-too-large-decimal", encode(fields(amount=RawNumber("1000000000000000.5"))),
     "invalid_amount"),
    ("amount-huge-exponent", encode(fields(amount=RawNumber("1e400"))), "invalid_amount"),
    ("amount-tiny-exponent", encode(fields(amount=RawNumber("1e-400"))), "invalid_amount"),
    ("amount-tinier-exponent", encode(fields(amount=RawNumber("1e-1000027"))),
     "invalid_amount"),
    ("amount-largest-exponent", encode(fields(amount=RawNumber("1e999999999999999999"))),
     "invalid_amount"),
    ("amount-long-integer", encode(fields(amount=RawNumber("9" * 4000))), "invalid_amount"),
    # numbers Python cannot hold at all are refused while decoding
    ("amount-exponent-beyond-decimal",
     encode(fields(amount=RawNumber("1e99999999999999999999999"))), "malformed_json"),
    ("amount-integer-beyond-int", encode(fields(amount=RawNumber("9" * 5000))),
     "malformed_json"),
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


# --- amount details ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"amount": RawNumber("0")}, "greater than zero"),
        ({"amount": RawNumber("-1")}, "negative"),
        ({"amount": RawNumber("100.505")}, "at most 2 decimal places for USD"),
        ({"currency": "JPY", "amount": RawNumber("100.5")}, "whole number for JPY"),
        ({"currency": "KWD", "amount": RawNumber("1.0001")}, "at most 3 decimal places for KWD"),
        ({"amount": RawNumber("1e15")}, "at most 15 integer digits"),
        ({"amount": RawNumber("1e-1000027")}, "decimal places"),
        ({"amount": RawNumber("1e99999999999999999999999")}, "out of range"),
    ],
)
def test_invalid_amount_details_say_why(changes: dict[str, Any], needle: str) -> None:
    result = validate_created(encode(fields(**changes)), 65536)
    assert isinstance(result, Invalid)
    assert needle in result.detail, result


def test_currency_is_checked_before_the_amount() -> None:
    # the amount's places depend on the currency: a bad currency is reported as such
    expect_invalid(encode(fields(currency="ABC", amount=RawNumber("1.234"))),
                   "invalid_currency")
    expect_invalid(encode(fields(currency=7, amount=RawNumber("-1"))), "invalid_type")


def test_canonical_amount_goes_on_the_wire() -> None:
    for text, currency, wire in [("100.5", "USD", b'"amount":100.50'),
                                 ("1E+2", "JPY", b'"amount":100,'),
                                 ("7.1", "KWD", b'"amount":7.100')]:
        result = validate_created(encode(fields(amount=RawNumber(text), currency=currency)))
        assert isinstance(result, PaymentCreated)
        assert wire in result.dumps()


# --- properties: nothing raises ------------------------------------------------------------

#: JSON number texts from the ordinary to the absurd: long digit runs, huge and tiny
#: exponents (beyond what `Decimal` can hold too), signs, zeros.
number_texts = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1", "100", "999999999999999", "1000000000000000"])
    | st.from_regex(r"[1-9][0-9]{0,60}", fullmatch=True),
    st.sampled_from(["", ".0", ".5", ".50", ".505", ".0001", ".00001"])
    | st.from_regex(r"\.[0-9]{1,40}", fullmatch=True),
    st.sampled_from(["", "e0", "E+2", "e-2", "e400", "e-400", "e-1000027",
                     "e999999999999999999", "e99999999999999999999999"])
    | st.integers(-(10**30), 10**30).map(lambda e: f"e{e}"),
)

#: Text with everything odd in it: NUL and other controls, lone surrogates, non-BMP,
#: combining marks, right-to-left, full-width letters.
odd_text = st.text(
    st.characters(codec=None, categories=None)
    | st.sampled_from(["\x00", "\x1f", "\ud800", "\udfff", "\U0001f4b8", "\u0301", "\u202e",
                       "\uff35", "\ufeff"]),
    max_size=40,
)

json_scalars = (
    st.none() | st.booleans() | st.integers() | odd_text
    | number_texts.map(RawNumber)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)

CURRENCIES = ["USD", "EUR", "JPY", "KWD", "BHD", "CLF", "UYW", "ISK", "GBP", "XXX", "usd"]


def check_result(result: object) -> None:
    assert isinstance(result, (PaymentCreated, Invalid)), result
    if isinstance(result, Invalid):
        assert result.code in CODES, result
        assert result.detail.strip()
        return
    # a valid payment: its amount is the canonical form for its currency
    exponent = result.amount.as_tuple().exponent
    assert exponent == -money.minor_unit(result.currency)
    assert result.amount > 0
    assert money.canonical_amount(result.amount, result.currency) == result.amount
    assert PaymentCreated.loads(result.dumps()) == result


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check_result(validate_created(raw, 65536))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([*REQUIRED, "extra"]),
    value=json_values,
    currency=st.sampled_from(CURRENCIES),
)
def test_near_valid_events_never_raise(name: str, value: Any, currency: str) -> None:
    """The spec example with one field replaced by anything at all."""
    check_result(validate_created(encode(fields(**{"currency": currency, name: value}))))


@settings(max_examples=600, deadline=None)
@given(amount=number_texts, currency=st.sampled_from(CURRENCIES))
def test_extreme_amounts_never_raise(amount: str, currency: str) -> None:
    result = validate_created(encode(fields(amount=RawNumber(amount), currency=currency)))
    check_result(result)
    if isinstance(result, PaymentCreated):
        assert result.amount == Decimal(amount)  # the same value, only its form is canonical


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=40), cut=st.integers(0, len(SPEC_EXAMPLE)))
def test_spliced_bytes_never_raise(raw: bytes, cut: int) -> None:
    """Valid bytes with garbage spliced in (invalid UTF-8, NULs, stray quotes)."""
    check_result(validate_created(SPEC_EXAMPLE[:cut] + raw + SPEC_EXAMPLE[cut:]))


@pytest.mark.parametrize("raw", [None, "text", 42, bytearray(SPEC_EXAMPLE),
                                 memoryview(SPEC_EXAMPLE)])
def test_odd_argument_types_never_raise(raw: Any) -> None:
    check_result(validate_created(raw, 65536))
