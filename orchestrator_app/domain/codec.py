"""JSON that keeps money exact: numbers decode to `Decimal`, `Decimal` encodes as a number.

Faust's built-in ``json`` codec writes a Decimal as a *string*; the contracts say amounts
are JSON numbers (``"amount": 100.50``). ``simplejson`` with ``use_decimal`` does both
directions exactly, so we register it as the ``decimal_json`` codec for every record.

Encoding goes through ``orjson`` first (a Decimal as a raw `orjson.Fragment` of its exact
text): a payment row took 40 us with simplejson and 13 us this way, and every row, event and
NATS request is encoded on the hot path. Its output is kept only when it is what simplejson
writes (pure ASCII, no non-finite float turned into ``null``); anything else — non-ASCII
text, integers beyond 64 bits, non-string keys, NaN or Infinity — takes the simplejson path,
so the bytes and the refusals are simplejson's either way (except that orjson also encodes
UUIDs and plain enums, which simplejson refuses; no record holds one).
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal, DecimalException
from typing import Any

import orjson
import simplejson
from faust.serializers import codecs

__all__ = ["CODEC_NAME", "DecimalJSONCodec", "NumberError", "dumps", "exact_dumps", "loads"]

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


#: What orjson must hand to `_fast_default` rather than encode its own way: datetimes
#: (isoformat, like the exact path) and dataclasses (refused, like the exact path).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _fast_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if obj.is_finite():
            return orjson.Fragment(str(obj))  # simplejson's use_decimal writes str() too
        raise TypeError("non-finite Decimal")  # the exact path refuses it
    return _default(obj)


_SCALARS = frozenset({str, int, bool, type(None), Decimal})


def _has_non_finite_float(obj: Any) -> bool:
    """Does `obj` hold a NaN or infinite float anywhere orjson reaches (it writes them as
    null): containers, their subclasses, and records (what `_default` encodes)."""
    pending = [obj]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        elif kind in _SCALARS:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif hasattr(item, "to_representation"):  # a record, as `_default` encodes it:
            pending.extend(vars(item).values())  # its fields, without building its dict
        # anything else orjson encoded itself is a scalar (an enum, a UUID, a str or int
        # subclass); walking its attributes could loop (an enum member's class holds it)
    return False


def exact_dumps(obj: Any) -> bytes:
    """`dumps` through simplejson alone: the reference for what `dumps` writes."""
    text: str = simplejson.dumps(
        obj, use_decimal=True, default=_default, separators=(",", ":"), allow_nan=False
    )
    return text.encode()


def dumps(obj: Any) -> bytes:
    """Encode to compact JSON (non-ASCII as ``\\u`` escapes); Decimal stays an exact
    JSON number; NaN and Infinity are refused (`ValueError`)."""
    try:
        out = orjson.dumps(obj, default=_fast_default, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: the exact path encodes or refuses it
        return exact_dumps(obj)
    if out.isascii() and not (b"null" in out and _has_non_finite_float(obj)):
        return out
    return exact_dumps(obj)


#: What ``simplejson.loads`` with these hooks builds on every call (~20 % of a decode).
_DECODER = simplejson.JSONDecoder(parse_float=_parse_decimal, parse_int=_parse_int,
                                  parse_constant=_reject_constant)


def loads(data: bytes | str) -> Any:
    """Decode JSON; every non-integer number becomes a `Decimal`; NaN/Infinity are refused.

    Every failure is a `ValueError`: malformed JSON (`simplejson.JSONDecodeError`), bytes
    that are not UTF-8 (`UnicodeDecodeError`), numbers beyond `Decimal` or `int`
    (`NumberError`), and nesting deeper than the interpreter allows ("nested too deeply"),
    so a caller that catches `ValueError` can never be crashed by what it decodes.
    """
    try:
        # UTF-8, strictly, as simplejson does with bytes (a bad byte: UnicodeDecodeError)
        return _DECODER.decode(data.decode() if isinstance(data, bytes) else data)
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
