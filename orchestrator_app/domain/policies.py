"""Retry and circuit-breaker policies (spec defaults; all configurable). Pure: the caller
passes the clock, so the behaviour is testable without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

__all__ = ["BreakerState", "CircuitBreaker", "RetryPolicy"]

#: Processor error codes that are retryable whatever the reply's ``retryable`` flag says.
RETRYABLE_ERRORS = frozenset({"timeout", "connection_error"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: initial * factor^(n-1), capped; only for retryable errors."""

    max_retries: int = 3
    initial_delay: float = 1.0
    max_delay: float = 30.0
    factor: float = 2.0

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 for the first retry)."""
        if retry_number < 1:
            raise ValueError("retry numbers start at 1")
        exponent = min(retry_number - 1, 64)  # no float overflow for absurd numbers
        return float(min(self.initial_delay * self.factor**exponent, self.max_delay))

    def should_retry(self, retries_done: int, retryable: bool) -> bool:
        return retryable and retries_done < self.max_retries


class BreakerState(IntEnum):
    """Values of the ``payment_circuit_breaker_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_timeout` lets
    `half_open_max` trial calls through; one success closes it, one failure reopens it.
    """

    threshold: int = 5
    reset_timeout: float = 60.0
    half_open_max: int = 1
    _failures: int = field(default=0, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _trials: int = field(default=0, init=False)

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """May a call go out now? Counts a half-open trial when it says yes."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._trials < self.half_open_max:
            self._trials += 1
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until calls may go out again (0 when they may now)."""
        if self._opened_at is None:
            return 0.0
        remaining = self._opened_at + self.reset_timeout - now
        if remaining <= 0 and self._trials >= self.half_open_max:
            # Half-open with every trial slot taken: calls are still refused.
            return self.reset_timeout
        return max(0.0, remaining)

    def record_success(self, now: float) -> None:
        self._failures = 0
        self._opened_at = None
        self._trials = 0

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        if state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self._failures += 1
        if state is BreakerState.CLOSED and self._failures >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._trials = 0
        self._failures = 0
