"""Money stays exact: ``Decimal`` in, the same digits on the wire, ``Decimal`` out.

DESIGN §3: amount > 0, at most 4 decimal places, at most 15 integer digits (DECIMAL(19,4)),
currency an ISO 4217 code; JSON numbers are parsed as decimals, never binary floats. Within
that, an amount has no more decimals than its currency's ISO 4217 minor unit (JPY 0, USD 2,
KWD 3, CLF 4), and travels in one canonical form (exactly that many places).
"""

from __future__ import annotations

import contextlib
import decimal
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_app.domain import codec, money
from orchestrator_app.domain.records import (
    Command,
    FraudCheckRequest,
    PaymentCreated,
    PaymentStateChanged,
    ProcessRequest,
)

AMOUNTS = ["0.1", "100.50", "99999999999.9999", "0.0001", "999999999999999.9999", "100", "7.0"]


def state_changed(amount: Decimal) -> PaymentStateChanged:
    return PaymentStateChanged(
        payment_id="payment-uuid",
        previous_state="NEW",
        current_state="FRAUD_CHECK",
        amount=amount,
        currency="USD",
        customer_id="customer-123",
        merchant_id="merchant-456",
        changed_at="2026-02-13T10:00:00.000Z",
        metadata={"fraud_score": Decimal("0.25")},
        version=2,
        event_id="payment-uuid:2",
    )


#: Decimals with 0-4 places and at most 15 integer digits, in every textual form
#: (trailing zeros included: 1.50 is a different text from 1.5).
payable_amounts = st.integers(0, 4).flatmap(
    lambda places: st.integers(1, 10 ** (15 + places) - 1).map(
        lambda units: Decimal(units).scaleb(-places)
    )
)


# --- codec ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", AMOUNTS)
def test_codec_round_trips_amounts_exactly(text: str) -> None:
    amount = Decimal(text)
    encoded = codec.dumps(amount)
    assert encoded == text.encode()  # same digits, trailing zeros kept
    decoded = codec.loads(encoded)
    assert decoded == amount
    assert str(decoded) == text
    # an integral JSON number decodes to int, which is exact too
    assert isinstance(decoded, (Decimal, int)) and not isinstance(decoded, float)


@pytest.mark.parametrize("text", AMOUNTS)
def test_codec_round_trips_amounts_inside_objects(text: str) -> None:
    encoded = codec.dumps({"amount": Decimal(text)})
    assert encoded == b'{"amount":' + text.encode() + b"}"
    decoded = codec.loads(encoded)["amount"]
    assert str(decoded) == text


def test_codec_parses_fractions_as_decimal_never_float() -> None:
    value = codec.loads(b'{"a":0.1,"b":0.2}')
    assert type(value["a"]) is Decimal and type(value["b"]) is Decimal
    assert value["a"] + value["b"] == Decimal("0.3")


def test_codec_keeps_the_text_of_100_50() -> None:
    assert str(codec.loads(b"100.50")) == "100.50"
    assert codec.dumps(codec.loads(b"100.50")) == b"100.50"
    assert codec.loads(b"100.50").as_tuple().exponent == -2


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b'{"amount":NaN}', b'[1,Infinity]']
)
def test_codec_refuses_nan_and_infinity_literals(literal: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(literal)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan")])
def test_codec_refuses_to_write_nan(value: object) -> None:
    with pytest.raises(ValueError):
        codec.dumps({"amount": value})


def test_codec_is_compact_utf8() -> None:
    assert codec.dumps({"a": "é", "b": [1, 2]}) == b'{"a":"\\u00e9","b":[1,2]}'
    assert codec.loads('{"a":"é"}'.encode()) == {"a": "é"}


# --- faust records ----------------------------------------------------------------------


@pytest.mark.parametrize("text", AMOUNTS)
def test_state_changed_record_round_trips_exactly(text: str) -> None:
    event = state_changed(Decimal(text))
    wire = event.dumps()
    assert b'"amount":' + text.encode() + b"," in wire  # a JSON number, not a string
    back = PaymentStateChanged.loads(wire)
    assert type(back.amount) is Decimal
    assert str(back.amount) == text
    assert back == event
    assert back.dumps() == wire


def test_record_has_no_faust_type_tag_and_contract_fields() -> None:
    wire = state_changed(Decimal("100.50")).dumps()
    data = codec.loads(wire)
    assert "__faust" not in data
    assert set(data) == {
        "payment_id", "previous_state", "current_state", "amount", "currency",
        "customer_id", "merchant_id", "changed_at", "metadata", "version", "event_id",
    }


def test_integer_json_amount_becomes_decimal_in_records() -> None:
    wire = state_changed(Decimal("100.50")).dumps().replace(b"100.50", b"100")
    back = PaymentStateChanged.loads(wire)
    assert type(back.amount) is Decimal and back.amount == Decimal(100)


@pytest.mark.parametrize("text", AMOUNTS)
def test_other_records_keep_amounts_exact(text: str) -> None:
    amount = Decimal(text)
    created = PaymentCreated(
        payment_id="p", amount=amount, currency="USD", customer_id="c", merchant_id="m",
        status="NEW", created_at="2026-02-13T10:00:00Z",
    )
    fraud = FraudCheckRequest(
        payment_id="p", customer_id="c", amount=amount, currency="USD", merchant_id="m"
    )
    process = ProcessRequest(
        payment_id="p", amount=amount, currency="USD", customer_id="c", merchant_id="m",
        attempt=1,
    )
    for record in (created, fraud, process):
        back = type(record).loads(record.dumps())
        assert type(back.amount) is Decimal and str(back.amount) == text
    # nested: a create command carries the event
    cmd = Command(kind="create", payment_id="p", command_id="p:create", issued_at="t",
                  payment=created)
    back_cmd = Command.loads(cmd.dumps())
    assert back_cmd.payment is not None
    assert type(back_cmd.payment.amount) is Decimal and str(back_cmd.payment.amount) == text


@settings(max_examples=300, deadline=None)
@given(amount=payable_amounts)
def test_any_payable_amount_round_trips(amount: Decimal) -> None:
    assert money.check_amount(amount) is amount
    text = str(amount)
    assert codec.dumps(amount) == text.encode()
    assert str(codec.loads(codec.dumps(amount))) == text
    back = PaymentStateChanged.loads(state_changed(amount).dumps())
    assert type(back.amount) is Decimal
    assert str(back.amount) == text
    assert money.parse_amount(text) == amount


# --- check_amount / parse_amount --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["0.0001", "0.1", "1", "100.50", "100.50000", "1.00000000", "99999999999.9999",
     "999999999999999.9999", "999999999999999", "1E+2", "12.3400"],
)
def test_check_amount_accepts(text: str) -> None:
    amount = Decimal(text)
    assert money.check_amount(amount) is amount
    assert money.parse_amount(text) == amount


@pytest.mark.parametrize(
    "text",
    ["0", "0.0000", "-0", "-1", "-0.0001", "0.00001", "1.00001", "100.12345",
     "1000000000000000", "1E+15", "999999999999999.99995", "NaN", "-NaN", "sNaN",
     "Infinity", "-Infinity"],
)
def test_check_amount_refuses(text: str) -> None:
    with pytest.raises(money.AmountError):
        money.check_amount(Decimal(text))
    with pytest.raises(money.AmountError):
        money.parse_amount(text)


def test_check_amount_refuses_ten_to_the_fifteen() -> None:
    with pytest.raises(money.AmountError):
        money.check_amount(Decimal(10) ** 15)


@pytest.mark.parametrize("text", ["abc", "", "1,5", "0x10", "1.2.3"])
def test_parse_amount_refuses_non_numbers(text: str) -> None:
    with pytest.raises(money.AmountError):
        money.parse_amount(text)


def test_amount_error_is_a_value_error() -> None:
    assert issubclass(money.AmountError, ValueError)
    assert issubclass(money.CurrencyError, ValueError)


# --- currencies -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "GBP", "CHF"])
def test_currency_accepted(code: str) -> None:
    assert money.is_currency(code)
    assert money.check_currency(code) == code


@pytest.mark.parametrize(
    "code",
    # the last is USD in full-width letters
    ["usd", "Usd", "US", "USDD", "ABC", "XXX", "XTS", "", " USD", "\uff35\uff33\uff24"],
)
def test_currency_refused(code: str) -> None:
    assert not money.is_currency(code)
    with pytest.raises(money.CurrencyError):
        money.check_currency(code)


# --- minor units and canonical amounts ------------------------------------------------------

#: ISO 4217 exponents, written out from the standard's list (independently of money.py).
ISO_EXPONENTS = {
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "XOF": 0, "XAF": 0, "XPF": 0, "UYI": 0,
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CNY": 2, "INR": 2, "BRL": 2,
    "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3, "IQD": 3, "LYD": 3,
    "CLF": 4, "UYW": 4,
}


@pytest.mark.parametrize(("code", "places"), sorted(ISO_EXPONENTS.items()))
def test_minor_units_follow_iso_4217(code: str, places: int) -> None:
    assert money.minor_unit(code) == places
    assert money.is_currency(code)


def test_minor_unit_table_lists_only_payable_codes_and_never_more_than_4() -> None:
    for code, places in money.MINOR_UNITS.items():
        assert money.is_currency(code), code
        assert 0 <= places <= money.MAX_FRACTION_DIGITS
        assert places != 2  # 2 is the default, not listed
    assert money.minor_unit(None) == money.MAX_FRACTION_DIGITS
    assert money.minor_unit("ZZZ") == 2  # unknown: the ISO default


@pytest.mark.parametrize(
    ("text", "currency"),
    [("100.50", "USD"), ("100.500", "USD"), ("100.5", "USD"), ("100", "USD"), ("0.01", "USD"),
     ("100.0", "JPY"), ("100", "JPY"), ("1E+3", "JPY"), ("100.000000", "JPY"),
     ("1.000", "KWD"), ("0.001", "KWD"), ("1.0001", "CLF"), ("1E+14", "USD"),
     ("999999999999999.99", "EUR"), ("999999999999999", "JPY"),
     ("1" + "0" * 40 + "E-40", "USD")],
)
def test_check_amount_accepts_for_currency(text: str, currency: str) -> None:
    amount = Decimal(text)
    assert money.check_amount(amount, currency) is amount
    assert money.parse_amount(text, currency) == amount


@pytest.mark.parametrize(
    ("text", "currency", "needle"),
    [("100.505", "USD", "at most 2 decimal places for USD"),
     ("0.001", "EUR", "at most 2 decimal places for EUR"),
     ("100.5", "JPY", "whole number for JPY"),
     ("0.1", "KRW", "whole number for KRW"),
     ("1.0001", "KWD", "at most 3 decimal places for KWD"),
     ("1.00001", "CLF", "at most 4 decimal places for CLF"),
     ("0." + "0" * 31 + "1", "USD", "decimal places"),
     ("1.0000000000000000000000000000001", "USD", "decimal places"),
     ("1E-1000027", "USD", "decimal places"),
     ("1E+15", "JPY", "15 integer digits"),
     ("1E+999999999999999999", "USD", "15 integer digits"),
     ("0E+5", "USD", "greater than zero"),
     ("-5", "USD", "negative")],
)
def test_check_amount_refuses_for_currency(text: str, currency: str, needle: str) -> None:
    with pytest.raises(money.AmountError, match=needle):
        money.check_amount(Decimal(text), currency)
    with pytest.raises(money.AmountError):
        money.parse_amount(text, currency)
    with pytest.raises(money.AmountError):
        money.canonical_amount(Decimal(text), currency)


@pytest.mark.parametrize(
    ("text", "currency", "canonical"),
    [("100.5", "USD", "100.50"), ("100.50000", "USD", "100.50"), ("100", "USD", "100.00"),
     ("1E+2", "USD", "100.00"), ("100", "JPY", "100"), ("100.0", "JPY", "100"),
     ("1E+3", "JPY", "1000"), ("7", "KWD", "7.000"), ("7.1", "BHD", "7.100"),
     ("1", "CLF", "1.0000"), ("999999999999999.9999", "CLF", "999999999999999.9999"),
     ("1" + "0" * 40 + "E-40", "USD", "1.00")],
)
def test_canonical_amount(text: str, currency: str, canonical: str) -> None:
    result = money.canonical_amount(Decimal(text), currency)
    assert str(result) == canonical
    assert codec.dumps(result) == canonical.encode()


def test_canonical_amount_ignores_the_callers_decimal_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3  # would round 100.50 to 100 in context arithmetic
        ctx.traps[decimal.Inexact] = True
        assert str(money.canonical_amount(Decimal("100.5"), "USD")) == "100.50"
        assert money.check_amount(Decimal("12345.6789")) == Decimal("12345.6789")
        with pytest.raises(money.AmountError):
            money.check_amount(Decimal("1234.56789"))


def test_check_amount_refuses_non_decimals() -> None:
    for value in (True, 1.5, "1", None):
        with pytest.raises(money.AmountError):
            money.check_amount(value)  # type: ignore[arg-type]
    assert money.check_amount(7) == Decimal(7)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1_000", " 1", "1 ", "+", "1e", ".", "١٢", "1e" + "9" * 30])
def test_parse_amount_refuses_what_json_would_not_write(text: str) -> None:
    with pytest.raises(money.AmountError):
        money.parse_amount(text)


# --- properties: any decimal, any currency -----------------------------------------------------


def _decimal_from(sign: int, digits: tuple[int, ...], exponent: int) -> Decimal:
    try:
        return Decimal((sign, digits, exponent))
    except (ValueError, ArithmeticError):  # an exponent beyond what Decimal holds
        return Decimal((sign, digits, 0))


#: Every kind of Decimal: ordinary ones, long coefficients, exponents up to Decimal's limits,
#: NaN, sNaN (with payloads), infinities, negative zero.
any_decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(
        _decimal_from,
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=60).map(tuple),
        st.integers(-(10**18), 10**18) | st.integers(-40, 20),
    ),
    st.sampled_from(["NaN", "-NaN", "sNaN", "-sNaN", "sNaN123", "Infinity", "-Infinity",
                     "-0", "0E-1000000", "1E+999999999999999999", "1E-999999999999999999",
                     "9" * 100, "0.1" + "0" * 80]).map(Decimal),
)
any_currencies = st.sampled_from([*sorted(ISO_EXPONENTS), "XXX", "usd", "", "ZZZ"]) | st.text(
    max_size=5
)


@settings(max_examples=1000, deadline=None)
@given(amount=any_decimals, currency=any_currencies | st.none())
def test_check_never_raises_anything_but_amount_error(
    amount: Decimal, currency: str | None
) -> None:
    try:
        checked = money.check_amount(amount, currency)
    except money.AmountError:
        return
    assert checked is amount
    assert amount > 0 and amount < Decimal(10) ** 15
    if currency is None:
        return
    canonical = money.canonical_amount(amount, currency)
    assert canonical == amount  # the same value ...
    # ... with exactly the currency's exponent
    assert canonical.as_tuple().exponent == -money.minor_unit(currency)
    assert money.canonical_amount(canonical, currency).as_tuple() == canonical.as_tuple()


@settings(max_examples=500, deadline=None)
@given(amount=any_decimals, currency=any_currencies)
def test_canonical_never_raises_anything_but_amount_error(amount: Decimal, currency: str) -> None:
    with contextlib.suppress(money.AmountError):
        money.canonical_amount(amount, currency)


#: Valid amounts for a currency, in every textual form: its own places or fewer, padded with
#: any number of trailing zeros, sometimes written with an exponent.
@st.composite
def valid_amounts(draw: st.DrawFn) -> tuple[Decimal, str]:
    currency = draw(st.sampled_from(sorted(ISO_EXPONENTS)))
    places = ISO_EXPONENTS[currency]
    used = draw(st.integers(0, places))
    units = draw(st.integers(1, 10 ** (15 + used) - 1))
    zeros = draw(st.integers(0, 30))
    amount = Decimal(units * 10**zeros).scaleb(-(used + zeros))
    return amount, currency


@settings(max_examples=500, deadline=None)
@given(valid=valid_amounts())
def test_valid_amounts_are_accepted_and_canonicalised_exactly(
    valid: tuple[Decimal, str],
) -> None:
    amount, currency = valid
    assert money.check_amount(amount, currency) is amount
    canonical = money.canonical_amount(amount, currency)
    assert canonical == amount
    assert canonical.as_tuple().exponent == -ISO_EXPONENTS[currency]
    assert str(codec.loads(codec.dumps(canonical))) == str(canonical)
    assert money.parse_amount(str(amount), currency) == amount


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=30) | st.from_regex(r"-?[0-9]{0,30}(\.[0-9]{0,30})?(e-?[0-9]{1,25})?",
                                                 fullmatch=True),
       currency=any_currencies | st.none())
def test_parse_amount_never_raises_anything_but_amount_error(
    text: str, currency: str | None
) -> None:
    with contextlib.suppress(money.AmountError):
        money.parse_amount(text, currency)


# --- codec: odd inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"1e99999999999999999999999", b'{"amount":1e99999999999999999999999}',
     b"[-1E-99999999999999999999999]", b"9" * 5000, b'{"a":' + b"1" * 4301 + b"}",
     b"[" * 100_000, b'{"a":' * 50_000, b"\xff", b'"\xed\xa0\x80"', b"", b"\x00"],
    ids=["huge-exponent", "huge-exponent-in-object", "tiny-exponent-in-array",
         "5000-digit-integer", "4301-digit-integer", "deep-array", "deep-object",
         "invalid-utf8", "encoded-surrogate", "empty", "nul"],
)
def test_codec_decoding_errors_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(raw)


def test_codec_number_errors_have_their_own_class() -> None:
    with pytest.raises(codec.NumberError, match="out of range"):
        codec.loads(b"1e99999999999999999999999")
    assert issubclass(codec.NumberError, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"1e-1000027", Decimal("1E-1000027")), (b"1E+999999999999999999",
                                              Decimal("1E+999999999999999999")),
     (b"-0.0", Decimal("-0.0")), (b'"\u0000"', "\x00"), (b'"\ud800"', "\ud800"),
     (b"9" * 4300, int("9" * 4300))],
)
def test_codec_decodes_odd_but_valid_json_exactly(raw: bytes, expected: Any) -> None:
    value = codec.loads(raw)
    assert type(value) is type(expected)
    assert value == expected if not isinstance(value, Decimal) else (
        value.as_tuple() == expected.as_tuple()
    )


def test_codec_decodes_regardless_of_the_decimal_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.traps[decimal.InvalidOperation] = False  # Decimal() would give NaN
        with pytest.raises(codec.NumberError):
            codec.loads(b"1e99999999999999999999999")


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=200))
def test_codec_loads_raises_only_value_errors(raw: bytes) -> None:
    with contextlib.suppress(ValueError):
        codec.loads(raw)


# --- the fast encoder writes what the exact one writes ----------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits: the exact path
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.text(),  # non-ASCII and lone surrogates included
)
_json_like = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=500)
@given(_json_like)
def test_dumps_writes_the_exact_encoders_bytes(value: Any) -> None:
    assert codec.dumps(value) == codec.exact_dumps(value)


@settings(max_examples=300)
@given(st.recursive(st.floats(allow_nan=False, allow_infinity=False) | _scalars,
                    lambda inner: st.lists(inner, max_size=5), max_leaves=20))
def test_dumps_of_floats_reads_back_as_the_exact_encoders(value: Any) -> None:
    # Float notation may differ (1e16 against 1e+16); the number never does.
    assert codec.loads(codec.dumps(value)) == codec.loads(codec.exact_dumps(value))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"),
                                   Decimal("-Infinity"), Decimal("sNaN")])
def test_dumps_refuses_non_finite_numbers_deep_inside(value: object) -> None:
    with pytest.raises(ValueError):
        codec.dumps({"a": [1, None, {"b": [value]}]})


def test_dumps_keeps_a_payment_row_as_the_exact_encoder_does() -> None:
    from tests.benchmark_util import load_benchmark

    row = load_benchmark("memory").completed_payment(Decimal("100.50"), "cust-é", "m-1")
    value = codec.loads(row)
    assert b"\\u00e9" in codec.dumps(value)
    assert codec.dumps(value) == codec.exact_dumps(value)
    del value["customer_id"]  # now pure ASCII: the fast path's own bytes
    assert codec.dumps(value) == codec.exact_dumps(value)


def test_dumps_finds_a_non_finite_float_in_subclasses_sets_and_records() -> None:
    from collections import OrderedDict

    from orchestrator_app.domain.records import Command

    command = Command(kind="TIMER", payment_id="p-1", command_id="c-1",
                      issued_at="2026-12-03T00:00:00Z", retry_after=float("nan"))
    for value in (OrderedDict(a=float("inf")), {"s": {float("nan")}}, {"c": command}, command):
        with pytest.raises(ValueError):
            codec.dumps(value)
    finite = Command(kind="TIMER", payment_id="p-1", command_id="c-1",
                     issued_at="2026-12-03T00:00:00Z", retry_after=1.5)
    assert codec.dumps({"c": finite}) == codec.exact_dumps({"c": finite})


def test_dumps_of_an_enum_beside_a_null_is_simplejsons() -> None:
    import enum

    class Kind(enum.StrEnum):  # its member's attributes lead back to itself
        A = "a"

    value = {"kind": Kind.A, "none": None, "f": 1.5}
    assert codec.dumps(value) == codec.exact_dumps(value) == b'{"kind":"a","none":null,"f":1.5}'
