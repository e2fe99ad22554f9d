"""JSON that keeps money exact: numbers decode to `Decimal`, `Decimal` encodes as a number.

Faust's built-in ``json`` codec writes a Decimal as a *string*; the contracts say amounts
are JSON numbers (``"amount": 100.50``). ``simplejson`` with ``use_decimal`` does both
directions exactly, so we register it as the ``decimal_json`` codec for every record.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, DecimalException
from typing import Any

import simplejson
from faust.serializers import codecs

__all__ = ["CODEC_NAME", "DecimalJSONCodec", "NumberError", "dumps", "loads"]

CODEC_NAME = "decimal_json"


class NumberError(ValueError):
    """A JSON number that cannot be decoded (an exponent beyond what `Decimal` holds, or
    more digits than Python converts to int)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _parse_decimal(text: str) -> Decimal:
    """A JSON fraction or exponent number, exactly; any failure is a `NumberError`."""
    try:
        value = Decimal(text)
    except (DecimalException, ArithmeticError, ValueError):
        raise NumberError(f"number {text[:40]!r} is out of range") from None
    if not value.is_finite():  # only if a caller's context does not trap the error
        raise NumberError(f"number {text[:40]!r} is out of range")
    return value


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise NumberError(f"integer of {len(text)} digits is too long") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    to_rep = getattr(obj, "to_representation", None)
    if callable(to_rep):  # a faust Record nested in a plain structure
        return to_rep()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    """Encode to compact UTF-8 JSON; Decimal stays an exact JSON number."""
    text: str = simplejson.dumps(
        obj, use_decimal=True, default=_default, separators=(",", ":"), allow_nan=False
    )
    return text.encode()


def loads(data: bytes | str) -> Any:
    """Decode JSON; every non-integer number becomes a `Decimal`; NaN/Infinity are refused.

    Every failure is a `ValueError`: malformed JSON (`simplejson.JSONDecodeError`), bytes
    that are not UTF-8 (`UnicodeDecodeError`), numbers beyond `Decimal` or `int`
    (`NumberError`), and nesting deeper than the interpreter allows ("nested too deeply"),
    so a caller that catches `ValueError` can never be crashed by what it decodes.
    """
    try:
        return simplejson.loads(data, parse_float=_parse_decimal, parse_int=_parse_int,
                                parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (DecimalException, ArithmeticError) as exc:  # belt and braces
        raise NumberError(f"number out of range: {type(exc).__name__}") from None


class DecimalJSONCodec(codecs.Codec):
    """Faust codec around `dumps` / `loads`."""

    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return loads(s)


def _register() -> None:
    if CODEC_NAME not in codecs.codecs:
        codecs.register(CODEC_NAME, DecimalJSONCodec())


_register()
