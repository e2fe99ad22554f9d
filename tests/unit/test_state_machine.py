"""Exhaustive tests of the payment state machine against DESIGN §2.

The expected table (``design_table.py``) is written out from DESIGN §2 on purpose — it must
not be derived from ``state_machine.TRANSITIONS``, or the test would only check the table
against itself.
"""

from __future__ import annotations

import itertools

import pytest

from orchestrator_app.domain.state_machine import (
    TERMINAL_STATES,
    InvalidTransition,
    State,
    Trigger,
    allowed_triggers,
    is_allowed,
    next_state,
)

from .design_table import EXPECTED, EXPECTED_TERMINAL

S, T = State, Trigger

ALL_PAIRS = list(itertools.product(State, Trigger))


def test_enums_are_the_documented_ones() -> None:
    assert {s.value for s in State} == {
        "NEW", "FRAUD_CHECK", "APPROVED", "REJECTED", "MANUAL_REVIEW", "PROCESSING",
        "COMPLETED", "FAILED", "RETRY", "REFUNDED", "COMPENSATED",
    }
    # every trigger of the table is used by at least one documented row
    assert {t for _, t in EXPECTED} == set(Trigger)


def test_table_has_thirteen_rows() -> None:
    assert len(EXPECTED) == 13
    assert sum(is_allowed(s, t) for s, t in ALL_PAIRS) == len(EXPECTED)


@pytest.mark.parametrize(
    ("state", "trigger"), ALL_PAIRS, ids=[f"{s.value}-{t.value}" for s, t in ALL_PAIRS]
)
def test_every_pair(state: State, trigger: Trigger) -> None:
    if (state, trigger) in EXPECTED:
        assert is_allowed(state, trigger) is True
        assert next_state(state, trigger) is EXPECTED[(state, trigger)]
        assert trigger in allowed_triggers(state)
    else:
        assert is_allowed(state, trigger) is False
        assert trigger not in allowed_triggers(state)
        with pytest.raises(InvalidTransition) as info:
            next_state(state, trigger)
        assert info.value.state is state
        assert info.value.trigger is trigger
        assert state.value in str(info.value)
        assert trigger.value in str(info.value)


@pytest.mark.parametrize("state", list(State), ids=[s.value for s in State])
def test_allowed_triggers_match_table(state: State) -> None:
    assert allowed_triggers(state) == {t for (s, t) in EXPECTED if s is state}


@pytest.mark.parametrize("state", sorted(EXPECTED_TERMINAL), ids=str)
def test_terminal_states_have_no_triggers(state: State) -> None:
    assert allowed_triggers(state) == frozenset()
    for trigger in Trigger:
        assert not is_allowed(state, trigger)
        with pytest.raises(InvalidTransition):
            next_state(state, trigger)


def test_terminal_states_constant() -> None:
    assert set(TERMINAL_STATES) == EXPECTED_TERMINAL


def test_every_state_is_reachable_from_new() -> None:
    reached = {S.NEW}
    frontier = [S.NEW]
    while frontier:
        current = frontier.pop()
        for trigger in allowed_triggers(current):
            target = next_state(current, trigger)
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)

