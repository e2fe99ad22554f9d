"""Settings → policies, in one place: what the saga agent applies and what the command API's
dry run checks against (they must be the same), and each circuit breaker's thresholds.

Both `agents/` and `orchestrator_app.web` import from here; nothing here imports them.
"""

from __future__ import annotations

from orchestrator_app.app import settings
from orchestrator_app.config import Settings
from orchestrator_app.domain.policies import CircuitBreaker, RetryPolicy
from orchestrator_app.domain.saga import SagaPolicy

__all__ = ["POLICY", "circuit_breaker", "saga_policy"]


def saga_policy(s: Settings) -> SagaPolicy:
    """Deadlines sit well above the NATS timeouts: they only catch lost requests."""
    watchdog = max(s.watchdog_seconds, 2 * max(s.fraud_timeout, s.processor_timeout,
                                               s.refund_timeout))
    return SagaPolicy(
        auto_process=s.auto_process,
        retry=RetryPolicy(
            max_retries=s.retry_max_attempts,
            initial_delay=s.retry_initial_delay,
            max_delay=s.retry_max_delay,
            factor=s.retry_backoff_factor,
        ),
        fraud_deadline=watchdog,
        processing_deadline=watchdog,
        refund_deadline=watchdog,
        max_circuit_waits=s.max_circuit_waits,
    )


def circuit_breaker(s: Settings) -> CircuitBreaker:
    """A fresh breaker (closed) with the configured thresholds; one per downstream."""
    return CircuitBreaker(
        threshold=s.breaker_failure_threshold,
        reset_timeout=s.breaker_reset_timeout,
        half_open_max=s.breaker_half_open_max_requests,
    )


#: The saga policy of this process (the saga agent and the command API's dry run).
POLICY = saga_policy(settings)
