"""Money: exact `Decimal` amounts within DECIMAL(19,4) and ISO 4217 currency codes.

Why not float: 0.1 + 0.2 != 0.3 in binary floating point, and a payment platform that
rounds differently from its ledger loses money one cent at a time.

Why no decimal context: every check here reads the decimal's own sign, digits and exponent
(`Decimal.as_tuple`, `Decimal.adjusted`), which is exact whatever its size. Arithmetic or
comparison in a context rounds to its precision (28 digits by default) and raises on
exponents beyond its limits, so ``0.1000…0001`` with 32 places would pass as ``0.1`` and
``1e99999999999999999999999`` would crash the caller.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Underflow

import pycountry

__all__ = [
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "MINOR_UNITS",
    "AmountError",
    "CurrencyError",
    "canonical_amount",
    "check_amount",
    "check_currency",
    "is_currency",
    "minor_unit",
    "parse_amount",
]

#: DECIMAL(19,4): 15 integer digits and 4 fraction digits.
MAX_INTEGER_DIGITS = 15
MAX_FRACTION_DIGITS = 4

#: ISO 4217 minor units (the "exponent" column of the ISO 4217 list, maintained by SIX
#: for ISO: https://www.six-group.com/en/products-services/financial-information/data-standards.html)
#: for the currencies whose minor unit is not 2; every other currency has 2.
#: pycountry carries the codes but not their minor units, hence this table. The codes
#: ISO 4217 lists with minor unit "N.A." (metals XAU XAG XPD XPT, bond units XBA-XBD, XDR,
#: XSU, XUA) are not listed: they get the default 2 (a choice; none is a card currency).
MINOR_UNITS: dict[str, int] = {
    # 0: no minor unit; amounts are whole numbers.
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
         "VND", "VUV", "XAF", "XOF", "XPF"),
        0,
    ),
    # 3: thousandths.
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    # 4: Unidad de Fomento (CLF) and Unidad Previsional (UYW).
    **dict.fromkeys(("CLF", "UYW"), 4),
}
_DEFAULT_MINOR_UNIT = 2

#: In ISO 4217 but not money anyone pays with: "no currency" and the testing code.
_NOT_PAYABLE = frozenset({"XXX", "XTS"})

#: A plain decimal number as JSON writes one (no underscores, no NaN/Infinity, no spaces).
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

#: Enough precision for any valid amount (15 + 4 digits), with every lossy signal trapped,
#: so `canonical_amount` can never round silently.
_EXACT = Context(
    prec=MAX_INTEGER_DIGITS + MAX_FRACTION_DIGITS,
    traps=[InvalidOperation, Inexact, Overflow, Underflow],
)


class AmountError(ValueError):
    """The amount is not a valid payment amount."""


class CurrencyError(ValueError):
    """The currency is not an active ISO 4217 code."""


def minor_unit(currency: str | None) -> int:
    """Decimal places of `currency` (ISO 4217 exponent); at most `MAX_FRACTION_DIGITS`.
    None (currency unknown to the caller) allows the storage limit, 4."""
    if currency is None:
        return MAX_FRACTION_DIGITS
    return min(MINOR_UNITS.get(currency, _DEFAULT_MINOR_UNIT), MAX_FRACTION_DIGITS)


def check_amount(amount: Decimal, currency: str | None = None) -> Decimal:
    """Return `amount` unchanged if it is a payable amount in `currency`, else raise
    `AmountError` (and nothing else, whatever the input).

    Payable: finite; > 0; at most 15 integer digits; no significant digit beyond the
    currency's minor unit (trailing zeros are fine: USD 100.500 is 100.50, JPY 100.0 is
    100). Judged on the digits and exponent alone, never in a rounding context.
    `currency` only chooses the minor unit (`check_currency` checks the code itself).
    """
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise AmountError(f"amount must be a decimal number, got {type(amount).__name__}")
    if isinstance(amount, int):
        amount = Decimal(amount)
    if not amount.is_finite():
        raise AmountError("amount must be a finite number")
    if amount.is_zero():
        raise AmountError("amount must be greater than zero")
    if amount.is_signed():
        raise AmountError("amount must be greater than zero (it is negative)")
    # adjusted(): the exponent of the leading digit, so integer digits = adjusted() + 1.
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise AmountError(f"amount must have at most {MAX_INTEGER_DIGITS} integer digits")
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    places = minor_unit(currency)
    # The last `beyond` digits sit below the minor unit: they must all be zeros.
    beyond = -exponent - places
    if beyond > 0 and any(digits[-beyond:]):
        raise AmountError(_places_detail(places, currency))
    return amount


def canonical_amount(amount: Decimal, currency: str) -> Decimal:
    """The one form of a valid `amount` that goes on every wire and into the database:
    exactly the currency's minor unit of decimal places (USD 100.5 -> 100.50, JPY 1E+2 ->
    100). Raises `AmountError` for an invalid amount; never rounds."""
    checked = check_amount(amount, currency)
    places = minor_unit(currency)
    try:
        return checked.quantize(Decimal((0, (1,), -places)), context=_EXACT)
    except ArithmeticError:  # unreachable after the check; never a silent rounding
        raise AmountError(_places_detail(places, currency)) from None


def parse_amount(text: str, currency: str | None = None) -> Decimal:
    """Parse a decimal string (never via float) and check it (`check_amount`); the parsed
    value is returned as written (`canonical_amount` gives the wire form)."""
    if not isinstance(text, str) or not _DECIMAL_TEXT.fullmatch(text):
        shown = text[:40] if isinstance(text, str) else type(text).__name__
        raise AmountError(f"amount {shown!r} is not a decimal number")
    try:
        amount = Decimal(text)
    except (ArithmeticError, ValueError):  # an exponent beyond what Decimal can hold
        raise AmountError(f"amount {text[:40]!r} is out of range") from None
    return check_amount(amount, currency)


def is_currency(code: str) -> bool:
    return (
        isinstance(code, str)
        and len(code) == 3
        and code.isascii()
        and code.isupper()
        and code not in _NOT_PAYABLE
        and pycountry.currencies.get(alpha_3=code) is not None
    )


def check_currency(code: str) -> str:
    if not is_currency(code):
        raise CurrencyError(f"currency {str(code)[:10]!r} is not an ISO 4217 currency code")
    return code


def _places_detail(places: int, currency: str | None) -> str:
    where = f" for {currency}" if currency is not None else ""
    if places == 0:
        return f"amount must be a whole number{where} (no minor unit)"
    return f"amount must have at most {places} decimal places{where}"
