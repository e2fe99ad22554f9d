"""Our own subcommands of the ``payment-orchestrator`` CLI (Faust's CLI hosts them)."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.cli import AppCommand, option

from orchestrator_app import telemetry
from orchestrator_app.app import app, settings
from orchestrator_app.schema import migrate as run_migrations
from orchestrator_app.simulator import Rules, Simulator

__all__ = ["migrate", "simulate"]


@app.command()
async def migrate(self: AppCommand) -> Any:
    """Apply pending database migrations (safe to run from several replicas at once)."""
    applied = await run_migrations(settings.database_url)
    if applied:
        for name in applied:
            self.say(f"applied {name}")
    else:
        self.say("database schema is up to date")


@app.command(
    option("--hold-seconds", type=float, default=3.0, show_default=True,
           help="How long fraud replies for customers 'slow-…' are held."),
    option("--latency", type=float, default=0.0, show_default=True,
           help="Delay added to every reply, in seconds."),
    option("--failure-rate", type=float, default=0.0, show_default=True,
           help="Share of processing attempts that fail retryably (deterministic)."),
)
async def simulate(
    self: AppCommand, hold_seconds: float, latency: float, failure_rate: float
) -> Any:
    """Run the reference fraud, processor and refund responders on NATS until stopped."""
    if settings.trace_endpoint:
        telemetry.setup_tracing(settings.trace_endpoint, service="payment-simulator")
    simulator = Simulator(settings.nats_url, Rules(hold_seconds, latency, failure_rate))
    await simulator.start()
    self.say(f"simulator answering fraud.check, payment.process, payment.refund "
             f"on {settings.nats_url}")
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
        telemetry.shutdown_tracing()
