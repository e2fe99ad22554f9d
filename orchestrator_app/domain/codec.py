"""JSON that keeps money exact: numbers decode to `Decimal`, `Decimal` encodes as a number.

Faust's built-in ``json`` codec writes a Decimal as a *string*; the contracts say amounts
are JSON numbers (``"amount": 100.50``). ``simplejson`` with ``use_decimal`` does both
directions exactly, so we register it as the ``decimal_json`` codec for every record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import simplejson
from faust.serializers import codecs

__all__ = ["CODEC_NAME", "DecimalJSONCodec", "dumps", "loads"]

CODEC_NAME = "decimal_json"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


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
    """Decode JSON; every non-integer number becomes a `Decimal`; NaN/Infinity are refused."""
    return simplejson.loads(data, use_decimal=True, parse_constant=_reject_constant)


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
