"""Money stays exact: ``Decimal`` in, the same digits on the wire, ``Decimal`` out.

DESIGN §3: amount > 0, at most 4 decimal places, at most 15 integer digits (DECIMAL(19,4)),
currency an ISO 4217 code; JSON numbers are parsed as decimals, never binary floats.
"""

from __future__ import annotations

from decimal import Decimal

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
