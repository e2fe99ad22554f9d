"""The long-lived clients of a worker, created once and stopped with the app."""

from __future__ import annotations

from orchestrator_app.app import app, settings
from orchestrator_app.clients.nats import NatsClient
from orchestrator_app.clients.postgres import PaymentStore
from orchestrator_app.clients.redis import RedisClient

__all__ = ["nats_client", "payment_store", "redis_client"]

nats_client = NatsClient(settings.nats_url, flush_delay=settings.nats_flush_delay)
payment_store = PaymentStore(settings.database_url)
redis_client = RedisClient(settings.redis_url)

# Faust starts (and stops) these with the app; both also connect lazily on first use,
# because Faust starts extra services only after the agents.
app.service(nats_client)  # type: ignore[arg-type]
app.service(payment_store)  # type: ignore[arg-type]
app.service(redis_client)  # type: ignore[arg-type]
