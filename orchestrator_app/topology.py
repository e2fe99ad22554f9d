"""What flows where: importing this module registers every topic, table, agent and view.

Explicit imports rather than Faust's autodiscovery: a discovered module that fails to
import is only logged and its agent silently vanishes; here it fails loudly.
"""

from __future__ import annotations

import faust

__all__ = ["EXPECTED_AGENTS", "EXPECTED_TABLES", "load"]

#: What a complete worker has (a test checks it).
EXPECTED_AGENTS = frozenset({
    "agents.ingest.ingest",
    "agents.saga.saga",
    "agents.fraud.fraud_check",
    "agents.processor.processor",
    "agents.postgres_sink.postgres_sink",
})
EXPECTED_TABLES = frozenset({"payments"})


def load() -> faust.App:
    """Import every part of the topology and return the app."""
    import agents.fraud
    import agents.ingest
    import agents.postgres_sink
    import agents.processor
    import agents.saga  # noqa: F401
    import tables.payments  # noqa: F401
    from orchestrator_app import resources, topics, web  # noqa: F401
    from orchestrator_app.app import app

    return app
