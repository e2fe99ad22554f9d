"""One circuit breaker per downstream service, per worker process, visible in /metrics."""

from __future__ import annotations

import time

from orchestrator_app import metrics
from orchestrator_app.app import settings
from orchestrator_app.policy import circuit_breaker

__all__ = ["Breaker", "fraud_breaker", "processor_breaker"]


class Breaker:
    """A `CircuitBreaker` on the wall clock that publishes its state as a gauge."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.policy = circuit_breaker(settings)
        self._publish()

    def allow(self) -> bool:
        allowed = self.policy.allow(time.time())
        self._publish()
        return allowed

    def retry_after(self) -> float:
        return self.policy.retry_after(time.time())

    def success(self) -> None:
        self.policy.record_success(time.time())
        self._publish()

    def failure(self) -> None:
        self.policy.record_failure(time.time())
        self._publish()

    def _publish(self) -> None:
        metrics.breaker_state.labels(service=self.service).set(
            int(self.policy.state(time.time()))
        )


fraud_breaker = Breaker("fraud")
processor_breaker = Breaker("processor")
