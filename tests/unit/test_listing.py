"""``GET /payments`` parameters: every bad value is refused with a precise reason, good ones
parse, cursors round-trip exactly and refuse any alteration, and the SQL binds every value."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_app.clients.postgres import ListQuery, list_sql
from orchestrator_app.domain.state_machine import State
from orchestrator_app.web.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListingError,
    decode_cursor,
    encode_cursor,
    list_item,
    parse_list_query,
    single_values,
)

MOMENT = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
BAD_CURSOR = "cursor is invalid (altered or truncated): pass next_cursor back unchanged"


def reason(params: dict[str, str]) -> str:
    with pytest.raises(ListingError) as info:
        parse_list_query(params)
    assert str(info.value) == info.value.reason
    return info.value.reason


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- good queries ---------------------------------------------------------------------------


def test_no_parameters_is_the_default_query() -> None:
    assert parse_list_query({}) == ListQuery(limit=DEFAULT_LIMIT)
    assert DEFAULT_LIMIT == 50 and MAX_LIMIT == 200


def test_every_parameter_parses() -> None:
    cursor = encode_cursor(MOMENT, "pay-1")
    query = parse_list_query({
        "state": "COMPLETED", "customer_id": "cust-1", "merchant_id": "m:1@x",
        "since": "2026-11-27T09:00:00+01:00", "until": "2026-11-28T00:00:00Z",
        "limit": "4", "cursor": cursor,
    })
    assert query == ListQuery(
        state="COMPLETED", customer_id="cust-1", merchant_id="m:1@x",
        since=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
        until=datetime(2026, 11, 28, tzinfo=UTC),
        limit=4, cursor=(MOMENT, "pay-1"),
    )
    # Normalised to UTC, so the SQL and the cursor see one time zone.
    assert query.since is not None and query.since.utcoffset() == timedelta(0)


@pytest.mark.parametrize("state", [s.value for s in State])
def test_every_state_is_accepted(state: str) -> None:
    assert parse_list_query({"state": state}).state == state


@pytest.mark.parametrize("limit, expected", [("1", 1), ("200", 200), ("007", 7)])
def test_limits_in_range(limit: str, expected: int) -> None:
    assert parse_list_query({"limit": limit}).limit == expected


def test_since_equal_to_until_is_allowed() -> None:
    query = parse_list_query({"since": "2026-01-01T00:00:00Z",
                              "until": "2026-01-01T01:00:00+01:00"})
    assert query.since == query.until


def test_ids_of_255_characters_are_allowed() -> None:
    assert parse_list_query({"customer_id": "c" * 255}).customer_id == "c" * 255


# --- bad queries: one precise reason each ---------------------------------------------------


def test_unknown_parameters_are_named() -> None:
    assert reason({"status": "NEW", "offset": "5", "state": "NEW"}) == (
        "unknown parameter(s): 'offset', 'status'; allowed: state, customer_id, merchant_id,"
        " since, until, limit, cursor"
    )


@pytest.mark.parametrize("state", ["", "completed", "DONE", " COMPLETED", "NEW,REJECTED"])
def test_bad_state(state: str) -> None:
    assert reason({"state": state}) == (
        "state must be one of NEW, FRAUD_CHECK, APPROVED, REJECTED, MANUAL_REVIEW, PROCESSING,"
        f" COMPLETED, FAILED, RETRY, REFUNDED, COMPENSATED; got {state!r}"
    )


@pytest.mark.parametrize("name", ["customer_id", "merchant_id"])
def test_bad_ids(name: str) -> None:
    assert reason({name: ""}) == f"{name} must not be empty"
    assert reason({name: "x" * 256}) == f"{name} is 256 characters; at most 255"


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "1700000000",
                                   "2026-11-27T25:00:00Z"])
def test_bad_timestamps(name: str, value: str) -> None:
    assert reason({name: value}) == (
        f"{name} must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-27T10:00:00Z;"
        f" got {value!r}"
    )


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["2026-11-27T10:00:00", "2026-11-27"])
def test_naive_timestamps_are_refused(name: str, value: str) -> None:
    assert reason({name: value}) == (
        f"{name} needs a time zone (e.g. a Z or +01:00 suffix); got {value!r}"
    )


def test_an_unencoded_plus_gets_a_hint() -> None:
    # "?since=2026-11-27T10:00:00+01:00" arrives as "... 01:00": '+' is a space in a query.
    assert reason({"since": "2026-11-27T10:00:00 01:00"}).endswith(
        "(a '+' in a query string means a space: write the offset's '+' as %2B)"
    )


@pytest.mark.parametrize("name", ["since", "until"])
def test_empty_and_out_of_range_timestamps(name: str) -> None:
    assert reason({name: ""}) == f"{name} must not be empty"
    assert reason({name: "0001-01-01T00:00:00+01:00"}) == (
        f"{name} is out of range: '0001-01-01T00:00:00+01:00'"
    )


def test_since_after_until() -> None:
    assert reason({"since": "2026-11-28T00:00:00Z", "until": "2026-11-27T00:00:00Z"}) == (
        "since (2026-11-28T00:00:00Z) must not be later than until (2026-11-27T00:00:00Z)"
    )


@pytest.mark.parametrize("limit", ["0", "201", "-1", "+5", " 5", "5.0", "1e2", "", "ten",
                                   "\u0665", "99999999999999999999"])
def test_bad_limits(limit: str) -> None:
    assert reason({"limit": limit}) == f"limit must be an integer from 1 to 200; got {limit!r}"


def test_long_values_are_shortened_in_messages() -> None:
    message = reason({"state": "X" * 500})
    assert "'" + "X" * 60 + "…'" in message and len(message) < 250


def test_repeated_parameters_are_refused() -> None:
    assert single_values([("state", "NEW"), ("limit", "5")]) == {"state": "NEW", "limit": "5"}
    with pytest.raises(ListingError, match=r"^parameter\(s\) given more than once: limit, state$"):
        single_values([("state", "NEW"), ("limit", "5"), ("state", "NEW"), ("limit", "6"),
                       ("state", "X")])


# --- cursors --------------------------------------------------------------------------------


def test_cursor_round_trip_is_exact_to_the_microsecond() -> None:
    cursor = encode_cursor(MOMENT, "pay-1")
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == (MOMENT, "pay-1")
    # Another time zone, same instant: the same cursor.
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert encode_cursor(plus_two, "pay-1") == cursor
    assert json.loads(base64.urlsafe_b64decode(cursor + "==")) == {
        "c": "2026-11-27T10:00:00.123456+00:00", "p": "pay-1"}


def test_encode_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        encode_cursor(datetime(2026, 1, 1), "p")


def _tampered() -> list[str]:
    good = encode_cursor(MOMENT, "pay-1")
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    return [
        good[:-3],                                            # truncated
        good + "A",                                           # extended
        flipped,                                              # one character changed
        good + "=",                                           # padding is not ours
        good.replace("-", "+") + "+/",                        # not the URL-safe alphabet
        "%%%",
        "x" * 2000,                                           # far too long
        b64(b"not json"),
        b64(b"\xff\xfe"),                                     # not UTF-8
        b64(b"[1, 2]"),                                       # not an object
        b64(b'{"c": "2026-11-27T10:00:00+00:00"}'),           # missing p
        b64(b'{"c":"2026-11-27T10:00:00+00:00","p":"a","x":1}'),  # extra key
        b64(b'{"c":"2026-11-27T10:00:00+00:00","p":5}'),       # p not a string
        b64(b'{"c":1764237600,"p":"a"}'),                      # c not a string
        b64(b'{"c":"2026-11-27T10:00:00+00:00","p":""}'),      # empty id
        b64(json.dumps({"c": "2026-11-27T10:00:00+00:00", "p": "p" * 256}).encode()),
        b64(b'{"c":"2026-11-27T10:00:00","p":"a"}'),           # naive time
        b64(b'{"c":"soon","p":"a"}'),                          # not a time
        b64(b'{"c":"0001-01-01T00:00:00+01:00","p":"a"}'),     # out of range
        b64(b'{"c":"2026-11-27T10:00:00+00:00","p":"\\ud800"}'),  # lone surrogate
        # Well-formed but not spelt as we spell it: re-ordered keys, spaces, other offsets.
        b64(b'{"p":"pay-1","c":"2026-11-27T10:00:00.123456+00:00"}'),
        b64(b'{"c": "2026-11-27T10:00:00.123456+00:00", "p": "pay-1"}'),
        b64(b'{"c":"2026-11-27T11:00:00.123456+01:00","p":"pay-1"}'),
        b64(b'{"c":"2026-11-27T10:00:00.123456Z","p":"pay-1"}'),
    ]


@pytest.mark.parametrize("cursor", _tampered())
def test_tampered_cursors_are_refused(cursor: str) -> None:
    assert reason({"cursor": cursor}) == BAD_CURSOR


def test_empty_cursor() -> None:
    assert reason({"cursor": ""}) == "cursor must not be empty"


# Any aware instant PostgreSQL and Python both hold, any id of the right length.
instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                               timezone(timedelta(hours=-8))]),
)
ids = st.text(min_size=1, max_size=255)


@given(instants, ids)
def test_cursor_round_trip_property(moment: datetime, payment_id: str) -> None:
    cursor = encode_cursor(moment, payment_id)
    decoded_moment, decoded_id = decode_cursor(cursor)
    assert decoded_moment == moment and decoded_id == payment_id
    assert decoded_moment.utcoffset() == timedelta(0)
    assert parse_list_query({"cursor": cursor}).cursor == (moment, payment_id)


@given(instants, ids, st.integers(min_value=0), st.integers(min_value=1, max_value=63))
def test_any_single_character_change_is_refused(
    moment: datetime, payment_id: str, position: int, shift: int
) -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    cursor = encode_cursor(moment, payment_id)
    i = position % len(cursor)
    changed = cursor[:i] + alphabet[(alphabet.index(cursor[i]) + shift) % 64] + cursor[i + 1:]
    try:
        decoded = decode_cursor(changed)
    except ListingError:
        return
    # A change that still decodes must be a different, canonical position — never the
    # same one spelt differently.
    assert decoded != (moment, payment_id)
    assert encode_cursor(*decoded) == changed


# --- the SQL --------------------------------------------------------------------------------


def test_sql_without_filters() -> None:
    sql, params = list_sql(ListQuery(limit=10))
    assert "WHERE" not in sql
    assert sql.endswith("ORDER BY created_at DESC, payment_id DESC LIMIT $1")
    assert params == [11]  # one more than asked: is there a next page?


def test_sql_binds_every_value_and_never_embeds_one() -> None:
    nasty = "x'; DROP TABLE payment_states; --"
    query = ListQuery(state="NEW", customer_id=nasty, merchant_id=nasty,
                      since=MOMENT, until=MOMENT, limit=3, cursor=(MOMENT, nasty))
    sql, params = list_sql(query)
    assert nasty not in sql and "DROP" not in sql
    assert ("WHERE current_state = $1 AND customer_id = $2 AND merchant_id = $3"
            " AND created_at >= $4 AND created_at < $5"
            " AND (created_at, payment_id) < ($6, $7)"
            " ORDER BY created_at DESC, payment_id DESC LIMIT $8") in sql
    assert params == ["NEW", nasty, nasty, MOMENT, MOMENT, MOMENT, nasty, 4]


def test_list_item_shape() -> None:
    row = {
        "payment_id": "p1", "current_state": "COMPLETED", "previous_state": "PROCESSING",
        "amount": Decimal("100.5000"), "currency": "USD", "customer_id": "c",
        "merchant_id": "m", "metadata": '{"fraud_score": 0.0550, "n": 1}', "version": 5,
        "created_at": MOMENT, "updated_at": MOMENT + timedelta(seconds=1),
    }
    item = list_item(row)
    assert item == {
        "payment_id": "p1", "current_state": "COMPLETED", "previous_state": "PROCESSING",
        "amount": Decimal("100.5000"), "currency": "USD", "customer_id": "c",
        "merchant_id": "m", "metadata": {"fraud_score": Decimal("0.0550"), "n": 1},
        "version": 5, "created_at": "2026-11-27T10:00:00.123Z",
        "updated_at": "2026-11-27T10:00:01.123Z",
    }
    assert str(item["metadata"]["fraud_score"]) == "0.0550"
    assert list_item({**row, "metadata": None})["metadata"] == {}
