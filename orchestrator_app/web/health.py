"""``GET /health`` (liveness, the spec's shape) and ``GET /ready`` (readiness)."""

from __future__ import annotations

from faust import web

from orchestrator_app import supervision
from orchestrator_app.app import app
from orchestrator_app.web.routing import error, json_response, recovering

__all__ = ["SERVICE_NAME", "health", "ready"]

SERVICE_NAME = "payment-orchestrator"


@app.page("/health")
async def health(self: web.View, request: web.Request) -> web.Response:
    """Liveness, in the spec's exact shape; 503 once an agent crashed (the worker is about
    to exit): never a live-looking worker with a dead agent."""
    problems = supervision.problems()
    if problems:
        return json_response(self, {"status": "failing", "service": SERVICE_NAME,
                                    "problems": problems}, status=503)
    return self.json({"status": "ok", "service": SERVICE_NAME})


@app.page("/ready")
async def ready(self: web.View, request: web.Request) -> web.Response:
    """Readiness: partitions assigned, tables recovered, every agent alive."""
    problems = supervision.problems()
    if problems:
        return error(self, 503, "not_ready", "; ".join(problems))
    if recovering():
        return error(self, 503, "not_ready", "worker is recovering or rebalancing")
    return self.json({"status": "ready", "service": SERVICE_NAME})
