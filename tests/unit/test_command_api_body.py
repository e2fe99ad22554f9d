"""``web.commands.parse_body``: the pure check of a command's JSON body.

Text PostgreSQL cannot store is refused with 400 (the caller can fix and resend): U+0000,
the other C0 controls except tab / newline / carriage return, and unpaired surrogates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_app.auth import ApiError
from orchestrator_app.web.commands import parse_body


def refused(action: str, raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_body(action, raw)
    return info.value


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b",
                                  "\x1f"])
@pytest.mark.parametrize("action", ["refund", "retry", "review"])
def test_reason_with_control_characters_is_refused(action: str, char: str) -> None:
    body = {"reason": f"customer{char}asked"}
    if action == "review":
        body["decision"] = "approve"
    error = refused(action, json.dumps(body).encode())
    assert (error.status, error.code, error.message) == (
        400, "invalid_body", "reason must not contain control characters",
    )


def test_raw_nul_escape_is_refused() -> None:
    error = refused("refund", b'{"reason":"a\\u0000b"}')
    assert (error.status, error.code) == (400, "invalid_body")


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udc00\ud800"])
def test_reason_with_unpaired_surrogates_is_refused(text: str) -> None:
    error = refused("refund", json.dumps({"reason": text}).encode())
    assert (error.status, error.code) == (400, "invalid_body")
    assert "surrogate" in error.message


@pytest.mark.parametrize("text", ["line one\nline two", "tab\there", "crlf\r\n",
                                  "caf\u00e9 \U0001f4b8 \u202e", "\x7f DEL is not C0", ""])
def test_reason_with_ordinary_text_is_accepted(text: str) -> None:
    assert parse_body("refund", json.dumps({"reason": text}).encode()) == {"reason": text}


def test_review_body_is_checked_as_before() -> None:
    body = parse_body("review", b'{"decision":"reject","reason":"fraud\\nconfirmed"}')
    assert body == {"decision": "reject", "reason": "fraud\nconfirmed"}
    assert refused("review", b'{"decision":"reject"}').message == "a review needs a reason"
    assert parse_body("retry", b"") == {}


@pytest.mark.parametrize(
    "raw",
    [b"[" * 10_000, b'{"reason":1e99999999999999999999999}', b"\xff", b"{",
     b'{"reason":' + b"9" * 5000 + b"}"],
    ids=["deep", "huge-exponent", "invalid-utf8", "truncated", "5000-digit-integer"],
)
def test_odd_bodies_are_400_not_a_crash(raw: bytes) -> None:
    assert refused("refund", raw).status == 400


@settings(max_examples=300, deadline=None)
@given(reason=st.text(st.characters(codec=None) | st.sampled_from(["\x00", "\ud800"]),
                      max_size=40),
       action=st.sampled_from(["refund", "retry", "review", "process"]))
def test_accepted_reasons_are_storable(reason: str, action: str) -> None:
    body: dict[str, Any] = {"reason": reason}
    if action == "review":
        body["decision"] = "approve"
    try:
        parsed = parse_body(action, json.dumps(body).encode())
    except ApiError as error:
        assert error.status == 400
        return
    text = parsed.get("reason")
    assert text == reason
    assert "\x00" not in reason
    assert all(ch >= " " or ch in "\t\n\r" for ch in reason)
    reason.encode("utf-8")  # no unpaired surrogates
