"""Money: exact `Decimal` amounts within DECIMAL(19,4) and ISO 4217 currency codes.

Why not float: 0.1 + 0.2 != 0.3 in binary floating point, and a payment platform that
rounds differently from its ledger loses money one cent at a time.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pycountry

__all__ = [
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "AmountError",
    "CurrencyError",
    "check_amount",
    "check_currency",
    "is_currency",
    "parse_amount",
]

#: DECIMAL(19,4): 15 integer digits and 4 fraction digits.
MAX_INTEGER_DIGITS = 15
MAX_FRACTION_DIGITS = 4
_UPPER_BOUND = Decimal(10) ** MAX_INTEGER_DIGITS

#: In ISO 4217 but not money anyone pays with: "no currency" and the testing code.
_NOT_PAYABLE = frozenset({"XXX", "XTS"})


class AmountError(ValueError):
    """The amount is not a valid payment amount."""


class CurrencyError(ValueError):
    """The currency is not an active ISO 4217 code."""


def check_amount(amount: Decimal) -> Decimal:
    """Return `amount` unchanged if it is a payable amount, else raise `AmountError`."""
    if not amount.is_finite():
        raise AmountError("amount must be a finite number")
    if amount <= 0:
        raise AmountError("amount must be greater than zero")
    if amount >= _UPPER_BOUND:
        raise AmountError(f"amount must have at most {MAX_INTEGER_DIGITS} integer digits")
    # Judge precision by value, so 100.50000 (trailing zeros) is as good as 100.5.
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > MAX_FRACTION_DIGITS:
        raise AmountError(f"amount must have at most {MAX_FRACTION_DIGITS} decimal places")
    return amount


def parse_amount(text: str) -> Decimal:
    """Parse a decimal string (never via float) and check it."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise AmountError(f"amount {text[:40]!r} is not a decimal number") from None
    return check_amount(amount)


def is_currency(code: str) -> bool:
    return (
        len(code) == 3
        and code.isascii()
        and code.isupper()
        and code not in _NOT_PAYABLE
        and pycountry.currencies.get(alpha_3=code) is not None
    )


def check_currency(code: str) -> str:
    if not is_currency(code):
        raise CurrencyError(f"currency {code[:10]!r} is not an ISO 4217 currency code")
    return code
