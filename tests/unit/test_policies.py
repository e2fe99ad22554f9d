"""Retry policy and circuit breaker (``domain/policies.py``) against the spec's numbers
(DESIGN §2: max 3 retries, 1 s initial, 30 s max, factor 2; breaker opens after 5
consecutive failures, half-open after 60 s, 1 trial), driven by a fake clock.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_app.domain.policies import (
    RETRYABLE_ERRORS,
    BreakerState,
    CircuitBreaker,
    RetryPolicy,
)

# --- retry policy -----------------------------------------------------------------------


def test_spec_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.max_delay, policy.factor) == (
        3, 1.0, 30.0, 2.0,
    )
    assert frozenset({"timeout", "connection_error"}) == RETRYABLE_ERRORS


def test_delay_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(n) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert all(type(d) is float for d in delays)


def test_delay_with_other_settings() -> None:
    policy = RetryPolicy(initial_delay=0.5, factor=3.0, max_delay=10.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert RetryPolicy(factor=1.0).delay(7) == 1.0  # constant backoff
    assert RetryPolicy(initial_delay=50.0).delay(1) == 30.0  # the cap applies at once


def test_delay_for_absurd_retry_numbers_is_the_cap() -> None:
    policy = RetryPolicy()
    for n in (64, 65, 1000, 10**9):
        assert policy.delay(n) == 30.0


@pytest.mark.parametrize("retry_number", [0, -1, -100])
def test_retry_numbers_start_at_one(retry_number: int) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        RetryPolicy().delay(retry_number)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 200),
    initial=st.floats(0.01, 10, allow_nan=False),
    factor=st.floats(1.0, 4.0, allow_nan=False),
    cap=st.floats(0.01, 120, allow_nan=False),
)
def test_delay_is_monotonic_and_capped(n: int, initial: float, factor: float,
                                       cap: float) -> None:
    policy = RetryPolicy(initial_delay=initial, factor=factor, max_delay=cap)
    delay, following = policy.delay(n), policy.delay(n + 1)
    assert math.isfinite(delay)
    assert 0 < delay <= cap
    assert following >= delay
    if n <= 30:
        assert delay == pytest.approx(min(initial * factor ** (n - 1), cap))


@pytest.mark.parametrize(
    ("retries_done", "retryable", "expected"),
    [
        (0, True, True),
        (1, True, True),
        (2, True, True),
        (3, True, False),  # the fourth retry is one too many
        (4, True, False),
        (0, False, False),  # a permanent error is never retried
        (2, False, False),
    ],
)
def test_should_retry(retries_done: int, retryable: bool, expected: bool) -> None:
    assert RetryPolicy().should_retry(retries_done, retryable) is expected


def test_should_retry_with_no_budget() -> None:
    assert RetryPolicy(max_retries=0).should_retry(0, True) is False
    assert RetryPolicy(max_retries=1).should_retry(0, True) is True


# --- circuit breaker --------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def opened(threshold: int = 5, reset_timeout: float = 60.0, half_open_max: int = 1,
           clock: FakeClock | None = None) -> tuple[CircuitBreaker, FakeClock]:
    clock = clock or FakeClock()
    breaker = CircuitBreaker(threshold=threshold, reset_timeout=reset_timeout,
                             half_open_max=half_open_max)
    for _ in range(threshold):
        breaker.record_failure(clock.now)
    assert breaker.state(clock.now) is BreakerState.OPEN
    return breaker, clock


def test_breaker_defaults_and_gauge_values() -> None:
    breaker = CircuitBreaker()
    assert (breaker.threshold, breaker.reset_timeout, breaker.half_open_max) == (5, 60.0, 1)
    assert (int(BreakerState.CLOSED), int(BreakerState.OPEN), int(BreakerState.HALF_OPEN)) == (
        0, 1, 2,
    )


def test_a_new_breaker_is_closed() -> None:
    breaker, clock = CircuitBreaker(), FakeClock()
    assert breaker.state(clock.now) is BreakerState.CLOSED
    assert all(breaker.allow(clock.now) for _ in range(100))
    assert breaker.retry_after(clock.now) == 0.0


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_opens_after_exactly_threshold_consecutive_failures(threshold: int) -> None:
    breaker, clock = CircuitBreaker(threshold=threshold), FakeClock()
    for _ in range(threshold - 1):
        breaker.record_failure(clock.advance(1))
        assert breaker.state(clock.now) is BreakerState.CLOSED
        assert breaker.allow(clock.now)
    breaker.record_failure(clock.advance(1))
    assert breaker.state(clock.now) is BreakerState.OPEN
    assert not breaker.allow(clock.now)


def test_a_success_in_between_resets_the_count() -> None:
    breaker, clock = CircuitBreaker(threshold=5), FakeClock()
    for _ in range(4):
        breaker.record_failure(clock.advance(1))
    breaker.record_success(clock.advance(1))
    for _ in range(4):
        breaker.record_failure(clock.advance(1))
    assert breaker.state(clock.now) is BreakerState.CLOSED  # 4 + 4, never 5 in a row
    breaker.record_failure(clock.advance(1))
    assert breaker.state(clock.now) is BreakerState.OPEN


def test_open_breaker_refuses_and_counts_down() -> None:
    breaker, clock = opened(reset_timeout=60.0)
    opened_at = clock.now
    waits = []
    for step in (0.0, 10.0, 30.0, 19.5):
        clock.advance(step)
        assert breaker.state(clock.now) is BreakerState.OPEN
        assert breaker.allow(clock.now) is False
        waits.append(breaker.retry_after(clock.now))
    assert waits == [60.0, 50.0, 20.0, 0.5]
    assert clock.now - opened_at == 59.5
    # refusals while open are not trials: the half-open window still has its trial
    clock.advance(0.5)
    assert breaker.state(clock.now) is BreakerState.HALF_OPEN
    assert breaker.retry_after(clock.now) == 0.0
    assert breaker.allow(clock.now) is True


def test_late_failures_while_open_do_not_extend_the_wait() -> None:
    breaker, clock = opened()
    clock.advance(30)
    for _ in range(10):
        breaker.record_failure(clock.now)  # answers to calls made before it opened
    clock.advance(30)
    assert breaker.state(clock.now) is BreakerState.HALF_OPEN


@pytest.mark.parametrize("half_open_max", [1, 3])
def test_half_open_lets_exactly_half_open_max_trials_through(half_open_max: int) -> None:
    breaker, clock = opened(half_open_max=half_open_max)
    clock.advance(60)
    assert breaker.state(clock.now) is BreakerState.HALF_OPEN
    allowed = [breaker.allow(clock.advance(0.1)) for _ in range(half_open_max + 5)]
    assert allowed == [True] * half_open_max + [False] * 5
    assert breaker.state(clock.now) is BreakerState.HALF_OPEN


def test_a_trial_success_closes_the_breaker() -> None:
    breaker, clock = opened(threshold=3)
    clock.advance(60)
    assert breaker.allow(clock.now)
    breaker.record_success(clock.advance(2))
    assert breaker.state(clock.now) is BreakerState.CLOSED
    assert breaker.retry_after(clock.now) == 0.0
    assert all(breaker.allow(clock.now) for _ in range(10))
    # and it counts from zero again: threshold - 1 failures do not open it
    breaker.record_failure(clock.now)
    breaker.record_failure(clock.now)
    assert breaker.state(clock.now) is BreakerState.CLOSED


def test_a_trial_failure_reopens_with_a_new_window() -> None:
    breaker, clock = opened(reset_timeout=60.0)
    clock.advance(75)
    assert breaker.allow(clock.now)
    failed_at = clock.advance(3)
    breaker.record_failure(failed_at)
    assert breaker.state(clock.now) is BreakerState.OPEN
    assert breaker.retry_after(clock.now) == 60.0  # the new window starts at the failure
    assert breaker.allow(clock.now) is False
    clock.advance(59.9)
    assert breaker.state(clock.now) is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state(clock.now) is BreakerState.HALF_OPEN
    assert breaker.allow(clock.now) is True  # a fresh trial
    assert breaker.allow(clock.now) is False


def test_retry_after_is_positive_whenever_allow_refuses() -> None:
    breaker, clock = opened(half_open_max=1)
    clock.advance(60)
    assert breaker.allow(clock.now)  # the one trial is in flight
    assert breaker.allow(clock.now) is False
    assert breaker.retry_after(clock.now) > 0


# --- any sequence of operations ---------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 10.0, 29.5, 30.0, 61.0])),
        st.tuples(st.just("success"), st.none()),
        st.tuples(st.just("failure"), st.none()),
        st.tuples(st.just("allow"), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, threshold=st.integers(1, 4), reset_timeout=st.sampled_from([30.0, 60.0]),
       half_open_max=st.integers(1, 3))
def test_breaker_state_is_consistent_for_any_operations(
    ops: list[tuple[str, float | None]], threshold: int, reset_timeout: float,
    half_open_max: int,
) -> None:
    breaker = CircuitBreaker(threshold=threshold, reset_timeout=reset_timeout,
                             half_open_max=half_open_max)
    clock = FakeClock()
    #: failures since the last success (what "consecutive" means while closed)
    consecutive = 0
    #: trials let through in the current half-open window
    trials = 0
    #: when the breaker last went OPEN, per our observation
    opened_at: float | None = None
    wait_before: float | None = None

    for op, arg in ops:
        before = breaker.state(clock.now)
        if op == "advance":
            assert arg is not None
            clock.advance(arg)
        elif op == "success":
            breaker.record_success(clock.now)
            consecutive, trials, opened_at = 0, 0, None
            # closed after any success
            assert breaker.state(clock.now) is BreakerState.CLOSED
        elif op == "failure":
            breaker.record_failure(clock.now)
            consecutive += 1
            after = breaker.state(clock.now)
            if before is BreakerState.CLOSED:
                # opens exactly when the threshold of consecutive failures is reached
                assert (after is BreakerState.OPEN) == (consecutive >= threshold)
            elif before is BreakerState.HALF_OPEN:
                assert after is BreakerState.OPEN  # a failed trial reopens it
            else:
                assert after is BreakerState.OPEN  # late failures keep it open, no longer
            if after is BreakerState.OPEN and before is not BreakerState.OPEN:
                opened_at, trials = clock.now, 0
        else:
            allowed = breaker.allow(clock.now)
            if before is BreakerState.CLOSED:
                assert allowed
            elif before is BreakerState.OPEN:
                assert not allowed
            else:
                assert allowed == (trials < half_open_max)
                trials += allowed
            # never more trials than half_open_max in one half-open window
            assert trials <= half_open_max

        state = breaker.state(clock.now)
        wait = breaker.retry_after(clock.now)
        assert 0.0 <= wait <= reset_timeout
        if state is BreakerState.CLOSED:
            assert wait == 0.0 and opened_at is None
        elif state is BreakerState.OPEN:
            assert opened_at is not None
            assert wait == pytest.approx(opened_at + reset_timeout - clock.now, rel=0, abs=1e-9)
            assert wait > 0
            if wait_before is not None and op in ("advance", "allow"):
                assert wait <= wait_before  # counts down, refusals change nothing
        else:
            assert opened_at is not None and clock.now - opened_at >= reset_timeout
            if trials < half_open_max:
                assert wait == 0.0  # a trial may go out now
            # with every trial in flight, see test_retry_after_is_positive_whenever_allow_refuses
        wait_before = wait if state is BreakerState.OPEN else None
