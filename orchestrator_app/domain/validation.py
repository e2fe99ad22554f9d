"""Validation of a ``payment.created`` event: a valid `PaymentCreated` or a precise reason.

Why a result value and not an exception: the ingest agent must never crash on input; every
bad event becomes a dead letter carrying `Invalid.code` (for counting) and `Invalid.detail`
(for the human who reads the dead-letter topic).

The amount is judged against the currency's ISO 4217 minor unit (`money.check_amount`) and
handed on in its one canonical form (`money.canonical_amount`: USD ``100.5`` becomes
``100.50``), so every topic and the database see the same digits for the same amount.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from . import money
from .codec import loads
from .records import PaymentCreated

__all__ = ["MAX_ID_LENGTH", "Invalid", "validate_created"]

#: VARCHAR(255) in the schema.
MAX_ID_LENGTH = 255
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\-]*")
_REQUIRED = ("payment_id", "amount", "currency", "customer_id", "merchant_id", "status",
             "created_at")


@dataclass(frozen=True)
class Invalid:
    """Why an event was refused. `code` is a short stable label (a metric label too)."""

    code: str
    detail: str


def validate_created(raw: bytes, max_bytes: int = 65536) -> PaymentCreated | Invalid:
    """Decode and check one raw ``payment.created`` value. Never raises: anything that goes
    wrong while decoding or checking (however odd the input) is an `Invalid`."""
    try:
        return _validate(raw, max_bytes)
    except RecursionError:
        return Invalid("malformed_json", "JSON nested too deeply")
    except Exception as exc:  # the ingest agent must never crash on input
        return Invalid("malformed_json", f"could not be decoded: {type(exc).__name__}")


def _validate(raw: bytes, max_bytes: int) -> PaymentCreated | Invalid:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return Invalid("malformed_json", f"expected bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        return Invalid("too_large", f"payload is {len(raw)} bytes, limit {max_bytes}")
    try:
        data = loads(bytes(raw))
    except RecursionError:
        return Invalid("malformed_json", "JSON nested too deeply")
    except (ValueError, ArithmeticError) as exc:  # UnicodeDecodeError is a ValueError
        return Invalid("malformed_json", f"not valid JSON: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return Invalid("not_an_object", f"expected a JSON object, got {_json_type(data)}")

    missing = [name for name in _REQUIRED if data.get(name) is None]
    if missing:
        return Invalid("missing_field", f"missing field(s): {', '.join(missing)}")

    for name in ("payment_id", "customer_id", "merchant_id"):
        problem = _check_id(name, data[name])
        if problem:
            return problem

    # The currency first: it decides how many decimal places the amount may have.
    currency = data["currency"]
    if not isinstance(currency, str):
        return Invalid("invalid_type", f"currency must be a string, got {_json_type(currency)}")
    if not money.is_currency(currency):
        return Invalid("invalid_currency", f"{currency[:10]!r} is not an ISO 4217 currency code")

    amount = data["amount"]
    # bool is an int subclass; a JSON true is not an amount.
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal)):
        return Invalid("invalid_type", f"amount must be a JSON number, got {_json_type(amount)}")
    try:
        canonical = money.canonical_amount(Decimal(amount), currency)
    except money.AmountError as exc:
        return Invalid("invalid_amount", str(exc))

    status = data["status"]
    if status != "NEW":
        return Invalid("invalid_status", f"status must be 'NEW', got {str(status)[:20]!r}")

    created_at = data["created_at"]
    if not isinstance(created_at, str):
        return Invalid("invalid_type", f"created_at must be a string, got {_json_type(created_at)}")
    try:
        parsed = datetime.fromisoformat(created_at)
    except ValueError:
        return Invalid("invalid_timestamp", f"created_at {created_at[:40]!r} is not ISO 8601")
    if parsed.tzinfo is None:
        return Invalid("invalid_timestamp", "created_at must include a time zone (e.g. 'Z')")

    return PaymentCreated.trusted(
        payment_id=data["payment_id"],
        amount=canonical,
        currency=currency,
        customer_id=data["customer_id"],
        merchant_id=data["merchant_id"],
        status=status,
        created_at=created_at,
    )


def _check_id(name: str, value: Any) -> Invalid | None:
    if not isinstance(value, str):
        return Invalid("invalid_type", f"{name} must be a string, got {_json_type(value)}")
    if not value or len(value) > MAX_ID_LENGTH:
        return Invalid("invalid_id", f"{name} must be 1-{MAX_ID_LENGTH} characters")
    if not _ID_PATTERN.fullmatch(value):
        return Invalid(
            "invalid_id", f"{name} may hold only letters, digits and . _ : @ - characters"
        )
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
