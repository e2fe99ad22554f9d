"""`clock.now`: the contract's timestamp form, cached per millisecond, never stale."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import nats.aio.client

from orchestrator_app import clock
from orchestrator_app.clients import nats as nats_module  # noqa: F401  (installs the token)
from orchestrator_app.domain.saga import format_timestamp


def test_now_is_the_current_millisecond_in_the_contract_form() -> None:
    for _ in range(2000):
        before = format_timestamp(datetime.now(UTC))
        now = clock.now()
        after = format_timestamp(datetime.now(UTC))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
        assert before <= now <= after  # same form, so text order is time order


def test_a_new_millisecond_gives_a_new_timestamp() -> None:
    first = clock.now()
    time.sleep(0.002)
    assert clock.now() > first


def test_nats_request_tokens_keep_their_form() -> None:
    tokens = {nats.aio.client.token_hex(2) for _ in range(500)}
    assert all(re.fullmatch(r"[0-9a-f]{4}", t) for t in tokens)
    assert len(tokens) > 400  # random, not constant
