"""What flows where: importing this module registers every topic, table, agent and view.

Explicit imports rather than Faust's autodiscovery: a discovered module that fails to
import is only logged and its agent silently vanishes; here it fails loudly.
"""

from __future__ import annotations

import faust

__all__ = ["EXPECTED_AGENTS", "EXPECTED_TABLES", "load"]

#: What a complete worker has (a test checks it).
EXPECTED_AGENTS = frozenset({"agents.ingest.ingest"})
EXPECTED_TABLES = frozenset({"payments"})


def load() -> faust.App:
    """Import every part of the topology and return the app."""
    import agents.ingest  # noqa: F401
    import tables.payments  # noqa: F401
    from orchestrator_app import topics, web  # noqa: F401
    from orchestrator_app.app import app

    return app
