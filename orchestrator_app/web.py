"""HTTP endpoints served by every worker's Faust web server."""

from __future__ import annotations

from faust import web

from orchestrator_app import metrics
from orchestrator_app.app import app

__all__ = ["health", "prometheus_metrics"]

SERVICE_NAME = "payment-orchestrator"


@app.page("/health")
async def health(self: web.View, request: web.Request) -> web.Response:
    """Liveness, in the spec's exact shape."""
    return self.json({"status": "ok", "service": SERVICE_NAME})


@app.page("/metrics")
async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
    return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
