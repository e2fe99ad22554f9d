"""Input generators (hypothesis) and reference oracles for the fuzz tests.

The oracles implement the documented contracts (README "Contracts") independently of the
product's code: exact arithmetic on the JSON number's own digits (never a Decimal context),
the ISO 4217 minor units written out here, strict JSON (RFC 8259, UTF-8). Where the README
leaves a point open, the oracle says so (`AMBIGUOUS`) and such a case is not generated.

Cases are generated up front through `collect` (a fixed number of derandomized examples),
then pushed through the real broker / NATS / HTTP in one batch: a round trip per example
would not fit the time budget.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import pycountry
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

T = TypeVar("T")

GOOD, BAD, AMBIGUOUS = "good", "bad", "ambiguous"

ID_CHARS = frozenset(string.ascii_letters + string.digits + "._:@-")
ALNUM = frozenset(string.ascii_letters + string.digits)
MAX_EVENT_BYTES = 65536

#: ISO 4217 minor units other than 2 (the "exponent" column of the ISO 4217 list).
ISO_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
#: Codes whose ISO minor unit is "N.A." (metals, funds, units of account): the README does
#: not say how many places they allow.
NO_MINOR_UNIT = frozenset(["XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT",
                           "XSU", "XUA"])
#: ISO codes that are not money ("no currency", the test code).
NOT_PAYABLE = frozenset({"XXX", "XTS"})


def collect(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """`n` derandomized examples of `strategy` (the same ones every run)."""
    out: list[T] = []

    @settings(derandomize=True, max_examples=n, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(example: T) -> None:
        out.append(example)

    run()
    return out


# --- exact JSON -------------------------------------------------------------------------


class Num(str):
    """A JSON number kept as its literal text (no float, no Decimal context)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_text(value: Any) -> bool:
    """A JSON string (a `Num` is a str subclass, but a number)."""
    return isinstance(value, str) and not isinstance(value, Num)


def strict_loads(raw: bytes) -> tuple[bool, Any]:
    """(ok, value): RFC 8259 JSON in UTF-8, numbers as `Num` literals."""
    try:
        text = raw.decode("utf-8")
        return True, json.loads(text, parse_float=Num, parse_int=Num,
                                parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False, None


_EXTREME = re.compile(r"[eE][+-]?0*\d{18,}")


def has_extreme_number(value: Any) -> bool:
    """A number beyond what a JSON parser must accept anywhere in `value`: RFC 8259 §6
    lets implementations limit range and precision, and the README sets no rule for
    fields it ignores, so a document that is valid only if such a number is read is
    AMBIGUOUS (an exponent of 18+ digits, or a literal of 4,000+ characters)."""
    if isinstance(value, Num):
        return len(value) >= 4000 or bool(_EXTREME.search(value))
    if isinstance(value, dict):
        return any(has_extreme_number(v) for v in value.values())
    if isinstance(value, list):
        return any(has_extreme_number(v) for v in value)
    return False


_NUMBER = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?")


@dataclass(frozen=True)
class Exact:
    """A JSON number as sign, significant digits (no leading/trailing zeros) and exponent:
    value = (-1)^negative * int(digits) * 10^exponent; digits == "" means zero."""

    negative: bool
    digits: str
    exponent: int | None  # None: an exponent too large to matter (|e| > 10^30)

    @property
    def zero(self) -> bool:
        return not self.digits

    def integer_digits(self) -> int:
        assert self.exponent is not None
        return max(0, len(self.digits) + self.exponent)

    def places(self) -> int:
        assert self.exponent is not None
        return max(0, -self.exponent)

    def decimal(self) -> Decimal:
        assert self.exponent is not None and self.digits
        return Decimal((1 if self.negative else 0, tuple(int(c) for c in self.digits),
                        self.exponent))


def exact(literal: str) -> Exact:
    m = _NUMBER.fullmatch(literal)
    assert m, literal
    sign, whole, frac, exp_text = m.groups()
    frac = frac or ""
    digits = (whole + frac).lstrip("0")
    stripped = digits.rstrip("0")
    if not stripped:
        return Exact(bool(sign), "", 0)
    if exp_text and len(exp_text.lstrip("+-")) > 30:
        return Exact(bool(sign), stripped, None)
    exponent = int(exp_text or 0) - len(frac) + (len(digits) - len(stripped))
    return Exact(bool(sign), stripped, exponent)


# --- payment.created: the contract ---------------------------------------------------------


def _id_verdict(value: Any) -> str:
    # The README: 1-255 characters of letters, digits and . _ : @ - (ASCII). Whether the
    # first may be punctuation it does not say (the code says no): such ids are AMBIGUOUS.
    if not (is_text(value) and 1 <= len(value) <= 255 and set(value) <= ID_CHARS):
        return BAD
    return GOOD if value[0] in ALNUM else AMBIGUOUS


def minor_unit(code: str) -> int:
    return ISO_MINOR_UNITS.get(code, 2)


def classify_created(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """(GOOD, the payment) / (BAD, None) / (AMBIGUOUS, None) for a payment.created value."""
    if len(raw) > MAX_EVENT_BYTES:
        return BAD, None
    ok, data = strict_loads(raw)
    if not ok or not isinstance(data, dict):
        return BAD, None
    fields = ("payment_id", "amount", "currency", "customer_id", "merchant_id", "status",
              "created_at")
    if any(data.get(f) is None for f in fields):
        return BAD, None
    ids = [_id_verdict(data[f]) for f in ("payment_id", "customer_id", "merchant_id")]
    if BAD in ids:
        return BAD, None
    currency = data["currency"]
    if not (is_text(currency) and len(currency) == 3 and currency.isascii()
            and currency.isalpha() and currency.isupper()
            and pycountry.currencies.get(alpha_3=currency) is not None
            and currency not in NOT_PAYABLE):
        return BAD, None
    if currency in NO_MINOR_UNIT:
        return AMBIGUOUS, None
    amount = data["amount"]
    if not isinstance(amount, Num):
        return BAD, None
    value = exact(amount)
    if value.zero or value.negative or value.exponent is None:
        return BAD, None
    if value.integer_digits() > 15 or value.places() > minor_unit(currency):
        return BAD, None
    if not is_text(data["status"]) or data["status"] != "NEW":
        return BAD, None
    created_at = data["created_at"]
    if not is_text(created_at):
        return BAD, None
    try:
        parsed = datetime.fromisoformat(created_at)
    except ValueError:
        return BAD, None
    if parsed.tzinfo is None:
        return BAD, None
    if AMBIGUOUS in ids or has_extreme_number(data):
        return AMBIGUOUS, None
    return GOOD, {"payment_id": data["payment_id"], "amount": value.decimal(),
                  "currency": currency, "customer_id": data["customer_id"],
                  "merchant_id": data["merchant_id"]}


def expected_final(payment: dict[str, Any], fraud_timeout_shorter_than_hold: bool = True
                   ) -> str:
    """The final state of a valid payment under the simulator's rules (README)."""
    customer, merchant = payment["customer_id"], payment["merchant_id"]
    if customer.startswith("noreply-"):
        return "MANUAL_REVIEW"
    if customer.startswith("fraud-") or payment["amount"] >= 10000:
        return "REJECTED"
    if customer.startswith("slow-") and fraud_timeout_shorter_than_hold:
        return "MANUAL_REVIEW"
    if merchant.startswith(("fail-", "down-", "noreply-")):
        return "COMPENSATED"
    return "COMPLETED"


# --- generators ---------------------------------------------------------------------------

SPECIAL_NUMBERS = [
    "1e99999999999999999999999", "-1e99999999999999999999999", "1e-1000027", "1E+400",
    "1e-400", "0e99999999999999999999", "0E-1000027", "1." + "0" * 31 + "1",
    "12.34567890123456789012345678901234", "9" * 40, "0", "-0", "-0.0", "-1", "-0.01",
    "0.001", "100.5", "100.50", "100.500", "100.501", "1e2", "1E-2", "0.0001", "0.00001",
    "999999999999999", "1000000000000000", "99999999999999.99", "999999999999999.99",
    "1" + "0" * 5000, "0." + "0" * 5000 + "1", "1.0e1", "10000", "9999.99",
]
NOT_NUMBERS = ["NaN", "Infinity", "-Infinity", '"NaN"', '"10.00"', "true", "false", "null",
               "[]", "{}", '{"value": 10}', "[10]", '""']
SPECIAL_STRINGS = [
    '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff"', '"x\\udbff"', '"\\ud83d\\ude00"',
    '"\\u202e\\u200b"', '"\\ufeff"', '"\\uffff"', '"\\t\\n\\r"', '"\\\\"', '"\\"quoted\\""',
    json.dumps("é" * 300, ensure_ascii=False), json.dumps("x" * 256), '""',
]


def _decimal_json(d: Decimal) -> str:
    return str(d)  # Decimal's str is a valid JSON number for finite values


json_numbers = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(_decimal_json),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-999, 999), st.integers(-(10**30), 10**30)),
)
json_strings = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(max_size=30).map(json.dumps),
    st.text(max_size=30).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3).map(json.dumps),
)
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
).map(json.dumps)
json_fragments = st.one_of(json_numbers, json_strings, json_trees,
                           st.sampled_from(NOT_NUMBERS))

_ID_ALPHABET = [*sorted(ID_CHARS), "/", " ", "é", "\x00", "+", "#"]
id_fragments = st.one_of(
    st.builds(lambda p, s: json.dumps(p + s),
              st.sampled_from(["", "noreply-", "fraud-", "slow-", "fail-", "down-", "flaky-"]),
              st.text(alphabet=st.sampled_from(_ID_ALPHABET), max_size=12)
              .filter(lambda s: not s or s[0] in ALNUM or s[0] not in ID_CHARS)),
    json_fragments,
)
FIELD_FRAGMENTS: dict[str, st.SearchStrategy[str]] = {
    "payment_id": id_fragments,
    "customer_id": id_fragments,
    "merchant_id": id_fragments,
    "amount": st.one_of(json_numbers, st.sampled_from(NOT_NUMBERS), json_strings),
    "currency": st.one_of(
        st.sampled_from(['"usd"', '"US"', '"USDD"', '"XXX"', '"XTS"', '"JPY"', '"KWD"',
                         '"CLF"', '"EUR"', '"ZZZ"', '"EUR "', "840", '"€"', '"\\uff35SD"',
                         '"U\\u0000D"', '"BHD"', '"CHF"']),
        json_fragments),
    "status": st.one_of(st.sampled_from(['"new"', '"NEW "', '"COMPLETED"', '"NEW\\u0000"',
                                         '""', '"NEW"']), json_fragments),
    "created_at": st.one_of(
        st.sampled_from(['"2026-11-27T10:00:00"', '"2026-11-27"', '"2026-11-27T10:00:00+25:00"',
                         '"not a date"', '"2026-02-30T10:00:00Z"',
                         '"2026-11-27T10:00:00.123456+05:30"', '"2026-11-27 10:00:00Z"',
                         "1764237600", '"2026-11-27T10:00:00Z\\u0000"']),
        json_fragments),
}
#: Base amounts valid in each currency (2, 2, 0, 3 places).
BASES = {"USD": "10.50", "EUR": "100.5", "JPY": "1000", "KWD": "1.234"}


@dataclass(frozen=True)
class CreatedCase:
    kind: str  # bytes | json | near
    data: bytes | str = b""
    field: str = ""
    fragment: str = ""
    currency: str = "USD"

    def materialize(self, payment_id: str) -> bytes:
        if self.kind == "bytes":
            assert isinstance(self.data, bytes)
            return self.data
        if self.kind == "json":
            assert isinstance(self.data, str)
            return self.data.encode()
        fields = {
            "payment_id": json.dumps(payment_id), "amount": BASES[self.currency],
            "currency": json.dumps(self.currency), "customer_id": '"fuzz-customer"',
            "merchant_id": '"fuzz-merchant"', "status": '"NEW"',
            "created_at": '"2026-11-27T10:00:00Z"',
        }
        if self.field.startswith("drop:"):
            del fields[self.field[5:]]
        elif self.field.startswith("extra:"):
            fields[self.field[6:]] = self.fragment
        else:
            fields[self.field] = self.fragment
        return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items())
                + "}").encode()


created_cases = st.one_of(
    st.builds(CreatedCase, kind=st.just("bytes"), data=st.binary(max_size=200)),
    st.builds(CreatedCase, kind=st.just("json"), data=json_fragments),
    st.sampled_from(sorted(FIELD_FRAGMENTS)).flatmap(lambda f: st.builds(
        CreatedCase, kind=st.just("near"), field=st.just(f), fragment=FIELD_FRAGMENTS[f],
        currency=st.sampled_from(sorted(BASES)))),
    st.builds(CreatedCase, kind=st.just("near"),
              field=st.sampled_from([f"drop:{f}" for f in sorted(FIELD_FRAGMENTS)]
                                    + ["extra:note", "extra:amount_text", "extra:\x00"]),
              fragment=json_fragments, currency=st.sampled_from(sorted(BASES))),
)


# --- NATS replies -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCase:
    kind: str  # bytes | json | near
    data: bytes | str = b""
    field: str = ""
    fragment: str = ""
    flag: bool = True  # the base reply's approved / success

    def materialize(self, payment_id: str, base: Callable[[str, bool], dict[str, str]]
                    ) -> bytes:
        if self.kind == "bytes":
            assert isinstance(self.data, bytes)
            return self.data
        if self.kind == "json":
            assert isinstance(self.data, str)
            return self.data.encode()
        fields = base(payment_id, self.flag)
        if self.field.startswith("drop:"):
            fields.pop(self.field[5:], None)
        elif self.field.startswith("extra:"):
            fields[self.field[6:]] = self.fragment
        else:
            fields[self.field] = self.fragment
        return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items())
                + "}").encode()


def fraud_base(payment_id: str, approved: bool) -> dict[str, str]:
    return {"payment_id": json.dumps(payment_id), "approved": json.dumps(approved),
            "risk_score": "0.1234", "reason": '"Low risk transaction"'}


def process_base(payment_id: str, success: bool) -> dict[str, str]:
    if success:
        return {"payment_id": json.dumps(payment_id), "success": "true",
                "confirmation_id": '"conf-fuzz"', "error_code": "null",
                "error_message": "null", "retryable": "false"}
    return {"payment_id": json.dumps(payment_id), "success": "false",
            "confirmation_id": "null", "error_code": '"card_declined"',
            "error_message": '"Card declined"', "retryable": "false"}


_BOOLISH = st.sampled_from(['"true"', "1", "0", "null", '"yes"', "true", "false", "[]"])
FRAUD_FRAGMENTS: dict[str, st.SearchStrategy[str]] = {
    "payment_id": st.one_of(st.sampled_from(['"someone-else"', "1", "null", '""']),
                            json_fragments),
    "approved": st.one_of(_BOOLISH, json_fragments),
    "risk_score": st.one_of(json_numbers, json_fragments),
    "reason": st.one_of(json_strings, st.text(min_size=400, max_size=2000).map(json.dumps),
                        json_fragments),
}
PROCESS_FRAGMENTS: dict[str, st.SearchStrategy[str]] = {
    "payment_id": FRAUD_FRAGMENTS["payment_id"],
    "success": st.one_of(_BOOLISH, json_fragments),
    "confirmation_id": st.one_of(json_strings, json_fragments),
    "error_code": st.one_of(st.sampled_from(['"timeout"', '"connection_error"',
                                             '"card_declined"', '"x\\u0000y"']), json_strings,
                            json_fragments),
    "error_message": st.one_of(json_strings, json_fragments),
    "retryable": st.one_of(_BOOLISH, json_fragments),
}


def reply_cases(fragments: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[ReplyCase]:
    return st.one_of(
        st.builds(ReplyCase, kind=st.just("bytes"), data=st.binary(max_size=120)),
        st.builds(ReplyCase, kind=st.just("json"), data=json_fragments),
        st.sampled_from(sorted(fragments)).flatmap(lambda f: st.builds(
            ReplyCase, kind=st.just("near"), field=st.just(f), fragment=fragments[f],
            flag=st.booleans())),
        st.builds(ReplyCase, kind=st.just("near"),
                  field=st.sampled_from([f"drop:{f}" for f in sorted(fragments)]
                                        + ["extra:note"]),
                  fragment=json_fragments, flag=st.booleans()),
    )


def _sane_score(value: Any) -> bool:
    if not isinstance(value, Num):
        return False
    e = exact(value)
    if e.zero:
        return True
    return (not e.negative and e.exponent is not None and e.places() <= 4
            and e.integer_digits() <= 1 and e.decimal() <= 1)


def fraud_outcomes(raw: bytes, payment_id: str) -> set[str]:
    """Acceptable final states of a normal payment whose fraud check got `raw` back.
    Unreadable (not JSON, not an object, another payment, `approved` not a boolean,
    `risk_score` not a number, `reason` not text) → MANUAL_REVIEW, nothing else. A readable
    reply decides (approved → COMPLETED, else REJECTED); one with an odd score (outside
    [0, 1], over 4 places) or no reason may also be refused (MANUAL_REVIEW)."""
    ok, data = strict_loads(raw)
    if not ok or not isinstance(data, dict) or data.get("payment_id") != payment_id:
        return {"MANUAL_REVIEW"}
    approved = data.get("approved")
    if not isinstance(approved, bool) or not isinstance(data.get("risk_score"), Num):
        return {"MANUAL_REVIEW"}
    if "reason" in data and not is_text(data["reason"]):
        return {"MANUAL_REVIEW"}
    decision = "COMPLETED" if approved else "REJECTED"
    if _sane_score(data["risk_score"]) and "reason" in data and not has_extreme_number(data):
        return {decision}
    return {decision, "MANUAL_REVIEW"}


def process_outcomes(raw: bytes, payment_id: str) -> set[tuple[str, int]]:
    """Acceptable (final state, number of states) when the first processing attempt got
    `raw` back and every later attempt succeeds. Unreadable → a retryable failure, then the
    retry completes (8 states); success → COMPLETED (5); a failure that is retryable (flag,
    or a timeout/connection_error code) → retried (8); any other failure → COMPENSATED (6).
    Mistyped optional fields may be read either way."""
    retried = ("COMPLETED", 8)
    ok, data = strict_loads(raw)
    if not ok or not isinstance(data, dict) or data.get("payment_id") != payment_id \
            or not isinstance(data.get("success"), bool):
        return {retried}
    if has_extreme_number(data):
        return {retried, ("COMPLETED", 5), ("COMPENSATED", 6)}
    if data["success"]:
        if is_text(data.get("confirmation_id")) or data.get("confirmation_id") is None:
            return {("COMPLETED", 5)}
        return {("COMPLETED", 5), retried}
    code, flag = data.get("error_code"), data.get("retryable")
    message = data.get("error_message")
    typed = (is_text(code) or code is None) and isinstance(flag, (bool, type(None))) \
        and (is_text(message) or message is None)
    retryable = flag is True or code in ("timeout", "connection_error")
    if not typed:
        return {retried, ("COMPENSATED", 6)}
    return {retried} if retryable else {("COMPENSATED", 6)}


# --- POST /payments/{id}/review bodies ------------------------------------------------------


@dataclass(frozen=True)
class ReviewCase:
    body: bytes
    idempotency_key: str | None
    target: int  # which review payment


_decisions = st.one_of(st.sampled_from(['"approve"', '"reject"']), json_fragments,
                       st.sampled_from(['"APPROVE"', "null", "1", '"approve\\u0000"', '""']))
_reasons = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                                   exclude_categories=["Cs"]), min_size=1, max_size=40)
    .map(json.dumps),
    json_strings, st.sampled_from(['"verified by phone"', '""']),
    st.text(min_size=450, max_size=600).map(json.dumps), json_fragments,
)
_review_fields = st.fixed_dictionaries(
    {}, optional={"decision": _decisions, "reason": _reasons, "extra": json_fragments})
_valid_review = st.fixed_dictionaries({
    "decision": st.sampled_from(['"approve"', '"reject"']),
    "reason": st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                      min_size=1, max_size=30).map(json.dumps),
})
#: A valid body with one field replaced by something else.
_near_review = st.tuples(_valid_review, st.sampled_from(["decision", "reason"]),
                         st.one_of(_decisions, _reasons)).map(
    lambda t: {**t[0], t[1]: t[2]})


def _object(fields: dict[str, str]) -> bytes:
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()


review_bodies = st.one_of(
    st.binary(max_size=200),
    json_fragments.map(str.encode),
    _review_fields.map(_object),
    _near_review.map(_object),
    _valid_review.map(_object),
)
_KEY_ALPHABET = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
review_cases = st.builds(
    ReviewCase,
    body=review_bodies,
    idempotency_key=st.one_of(
        st.none(), st.none(), st.sampled_from(["fuzz-key-1", "fuzz-key-2", "fuzz-key-3"]),
        st.text(alphabet=_KEY_ALPHABET, min_size=1, max_size=300)),
    target=st.integers(0, 11),
)
