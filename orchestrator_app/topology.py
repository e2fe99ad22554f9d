"""What flows where: importing this module registers every topic, table, agent and view.

Explicit imports rather than Faust's autodiscovery: a discovered module that fails to
import is only logged and its agent silently vanishes; here it fails loudly.
"""

from __future__ import annotations

import importlib

import faust

__all__ = [
    "EXPECTED_AGENTS",
    "EXPECTED_SERVICES",
    "EXPECTED_TABLES",
    "MODULES",
    "load",
]

#: What a complete worker has (a test checks it), whatever INGEST_DIRECT says.
EXPECTED_AGENTS = frozenset({"agents.ingest.ingest", "agents.saga.saga"})
#: Services that are not Faust agents: the sink is its own Kafka consumer (its docstring
#: says why); the range reader reads again what an agent's stream skipped.
EXPECTED_SERVICES = frozenset({"agents.postgres_sink.postgres_sink",
                               "agents.continuity.range_reader"})
EXPECTED_TABLES = frozenset({"payments"})


#: Every module that registers something with the app, in dependency order.
MODULES = (
    "orchestrator_app.topics",
    "orchestrator_app.resources",
    "orchestrator_app.lag",
    "orchestrator_app.census",
    "tables.payments",
    "tables.timers",
    "agents.fraud",
    "agents.processor",
    "agents.outbound",
    "agents.continuity",
    "agents.saga",
    "agents.ingest",
    "agents.timers",
    "agents.unstick",
    "agents.postgres_sink",
    "orchestrator_app.web.health",
    "orchestrator_app.web.views",
    "orchestrator_app.web.commands",
    "orchestrator_app.web.dashboard",
)


def load() -> faust.App:
    """Import every part of the topology and return the app."""
    for module in MODULES:
        importlib.import_module(module)
    from orchestrator_app.app import app

    return app
