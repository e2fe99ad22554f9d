"""``GET /payments``, no I/O: query parameters parsed and validated into a `ListQuery`, and
the rows the database returns shaped into the API's JSON items (`list_item`).

Every refusal is a `ListingError` whose text says which parameter is wrong and why; the web
view returns it as a 400. Nothing from the query string reaches SQL as text: the store
binds each validated value as a parameter.

The cursor is opaque to clients: URL-safe base64 (no padding) of the JSON
``{"c": created_at, "p": payment_id}`` of the last item of the previous page, with
``created_at`` to the microsecond (the API shows milliseconds; the keyset needs the exact
stored value). It is not signed: a client that forges a well-formed cursor only chooses
where its own listing starts, which the filters allow anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator_app.clients.postgres import ListQuery
from orchestrator_app.domain import codec
from orchestrator_app.domain.saga import format_timestamp
from orchestrator_app.domain.state_machine import State

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CURSOR_LENGTH",
    "MAX_LIMIT",
    "PARAMETERS",
    "ListingError",
    "decode_cursor",
    "encode_cursor",
    "list_item",
    "parse_list_query",
    "single_values",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: VARCHAR(255) in the schema.
MAX_ID_LENGTH = 255
#: A cursor of a 255-character id is about 400 characters; anything far longer is not ours.
MAX_CURSOR_LENGTH = 1024
PARAMETERS = ("state", "customer_id", "merchant_id", "since", "until", "limit", "cursor")

_STATES = tuple(state.value for state in State)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]{1,6}")
_FROM_URLSAFE = str.maketrans("-_", "+/")


class ListingError(ValueError):
    """A query parameter is wrong; ``reason`` says which and why (the 400's message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The query string's (name, value) pairs as a dict; a parameter given twice is refused.

    (``?state=A&state=B`` is ambiguous: we do not guess which one was meant.)
    """
    values: dict[str, str] = {}
    repeated: list[str] = []
    for name, value in pairs:
        if name in values and name not in repeated:
            repeated.append(name)
        values[name] = value
    if repeated:
        raise ListingError(f"parameter(s) given more than once: {', '.join(sorted(repeated))}")
    return values


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """Validate every parameter; the first problem found raises `ListingError`."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ListingError(
            f"unknown parameter(s): {', '.join(_show(name) for name in unknown)}; "
            f"allowed: {', '.join(PARAMETERS)}"
        )
    state = params.get("state")
    if state is not None and state not in _STATES:
        raise ListingError(f"state must be one of {', '.join(_STATES)}; got {_show(state)}")
    customer_id = _id("customer_id", params.get("customer_id"))
    merchant_id = _id("merchant_id", params.get("merchant_id"))
    since = _timestamp("since", params.get("since"))
    until = _timestamp("until", params.get("until"))
    if since is not None and until is not None and since > until:
        raise ListingError(
            f"since ({params['since']}) must not be later than until ({params['until']})"
        )
    limit = _limit(params.get("limit"))
    raw_cursor = params.get("cursor")
    cursor = decode_cursor(raw_cursor) if raw_cursor is not None else None
    return ListQuery(state=state, customer_id=customer_id, merchant_id=merchant_id,
                     since=since, until=until, limit=limit, cursor=cursor)


def list_item(row: Any) -> dict[str, Any]:
    """A payment_states row as the API shows it: exact decimals, ISO 8601 UTC times."""
    metadata = row["metadata"]
    return {
        "payment_id": row["payment_id"],
        "current_state": row["current_state"],
        "previous_state": row["previous_state"],
        "amount": row["amount"],
        "currency": row["currency"],
        "customer_id": row["customer_id"],
        "merchant_id": row["merchant_id"],
        "metadata": codec.loads(metadata) if metadata is not None else {},
        "version": row["version"],
        "created_at": format_timestamp(row["created_at"]),
        "updated_at": format_timestamp(row["updated_at"]),
    }


def encode_cursor(created_at: datetime, payment_id: str) -> str:
    """The opaque cursor of a page that ends at (created_at, payment_id)."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be time-zone aware")
    text = json.dumps({"c": created_at.astimezone(UTC).isoformat(), "p": payment_id},
                      separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, payment_id) a cursor stands for; `ListingError` if it was altered."""
    bad = "cursor is invalid (altered or truncated): pass next_cursor back unchanged"
    if not cursor:
        raise ListingError("cursor must not be empty")
    if len(cursor) > MAX_CURSOR_LENGTH or not _BASE64URL.fullmatch(cursor):
        raise ListingError(bad)
    try:
        raw = base64.b64decode(cursor.translate(_FROM_URLSAFE) + "=" * (-len(cursor) % 4),
                               validate=True)
        data: Any = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise ListingError(bad) from None
    if not isinstance(data, dict) or set(data) != {"c", "p"}:
        raise ListingError(bad)
    created, payment_id = data["c"], data["p"]
    if not isinstance(created, str) or not isinstance(payment_id, str):
        raise ListingError(bad)
    if not 1 <= len(payment_id) <= MAX_ID_LENGTH:
        raise ListingError(bad)
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        raise ListingError(bad) from None
    if moment.tzinfo is None:
        raise ListingError(bad)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise ListingError(bad) from None
    # Only the exact bytes encode_cursor writes are accepted (no re-spelt JSON, other
    # offsets, stray base64 bits): anything else did not come from us.
    try:
        canonical = encode_cursor(moment, payment_id)
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
        raise ListingError(bad) from None
    if canonical != cursor:
        raise ListingError(bad)
    return moment, payment_id


def _show(value: str, limit: int = 60) -> str:
    """A user value quoted for an error message, shortened when long."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _id(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value:
        raise ListingError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ListingError(f"{name} is {len(value)} characters; at most {MAX_ID_LENGTH}")
    return value


def _timestamp(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    if not value:
        raise ListingError(f"{name} must not be empty")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        hint = ""
        if " " in value.strip():
            hint = " (a '+' in a query string means a space: write the offset's '+' as %2B)"
        raise ListingError(
            f"{name} must be an ISO 8601 timestamp with a time zone, e.g. "
            f"2026-11-27T10:00:00Z; got {_show(value)}{hint}"
        ) from None
    if moment.tzinfo is None:
        raise ListingError(
            f"{name} needs a time zone (e.g. a Z or +01:00 suffix); got {_show(value)}"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ListingError(f"{name} is out of range: {_show(value)}") from None


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ListingError(f"limit must be an integer from 1 to {MAX_LIMIT}; got {_show(value)}")
    return int(value)
