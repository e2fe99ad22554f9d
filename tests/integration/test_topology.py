"""The worker has every agent, table and topic it should (discovery failures are silent)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_app.topology import (
    EXPECTED_AGENTS,
    EXPECTED_SERVICES,
    EXPECTED_TABLES,
)

PROBE = """
import json
from orchestrator_app import topology
app = topology.load()
print(json.dumps({
    "agents": sorted(app.agents),
    "guarded": sorted(name for name, agent in app.agents.items()
                      if agent._on_error.__qualname__ == "on_agent_error"),
    "services": sorted(f"{m}.{n}" for m, n in
                       (x.rsplit(".", 1) for x in topology.EXPECTED_SERVICES)
                       if getattr(__import__(m, fromlist=[n]), n) in app._extra_services),
    "tables": sorted(app.tables),
    "debug_pages": [app.conf.web_tables_enabled, app.conf.web_stats_enabled,
                    app.conf.web_router_enabled],
    "routing_key": app.tables["payments"].changelog_topic.prepare_key("p-1", None)[0].decode(),
    "changelog": app.tables["payments"].changelog_topic.get_topic_name(),
    "acks": app.producer.acks,
    "replication": app.conf.topic_replication_factor,
    "changelog_config": dict(app.tables["payments"].changelog_topic.config or {}),
}))
"""


def _clean_env() -> dict[str, str]:
    """The environment without settings of the tests' own (defaults are checked here)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TOPIC_", "PRODUCER_ACKS"))}


@pytest.mark.parametrize("direct", ["false", "true"])
def test_app_has_every_agent_and_table(direct: str) -> None:
    # A fresh interpreter: the app is built from the environment at import.
    env = dict(_clean_env(), APP_ID="payment-orchestrator", KAFKA_BROKERS="127.0.0.1:9",
               DATABASE_URL="postgresql://h/db", REDIS_URL="redis://h:1", NATS_URL="nats://h:1",
               INGEST_DIRECT=direct)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert set(found["agents"]) == EXPECTED_AGENTS
    # Faust's default hook would commit and leave the worker running without the agent.
    assert set(found["guarded"]) == EXPECTED_AGENTS
    assert set(found["services"]) == EXPECTED_SERVICES
    assert set(found["tables"]) == EXPECTED_TABLES
    assert found["debug_pages"] == [False, False, False]
    # Table routing hashes the changelog key: it must be the raw payment id, exactly like
    # the key of the commands topic, or requests go to a replica that lacks the payment.
    assert found["routing_key"] == "p-1"
    assert found["changelog"] == "payment-orchestrator-payments-changelog"
    # Production defaults: every replica acknowledges, 3 replicas, 2 in sync.
    assert found["acks"] == -1
    assert found["replication"] == 3
    assert found["changelog_config"] == {"min.insync.replicas": "2"}


def test_replication_settings_reach_faust() -> None:
    env = dict(_clean_env(), APP_ID="payment-orchestrator", KAFKA_BROKERS="127.0.0.1:9",
               DATABASE_URL="postgresql://h/db", REDIS_URL="redis://h:1", NATS_URL="nats://h:1",
               PRODUCER_ACKS="1", TOPIC_REPLICATION_FACTOR="1", TOPIC_MIN_INSYNC_REPLICAS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert (found["acks"], found["replication"]) == (1, 1)
    assert found["changelog_config"] == {"min.insync.replicas": "1"}


ROOT = Path(__file__).resolve().parents[2]
#: Package → packages it must never import (app, config, domain ← tables ← agents, web).
FORBIDDEN = {
    "orchestrator_app/web": ("agents", "orchestrator_app.dev"),
    "agents": ("orchestrator_app.web", "orchestrator_app.dev"),
    "tables": ("agents", "orchestrator_app.web", "orchestrator_app.dev"),
    "orchestrator_app/domain": ("agents", "tables", "orchestrator_app"),
}
#: The app level (every module of orchestrator_app outside web/ and dev/) imports neither
#: wing, nor the dev tooling (the runtime image leaves orchestrator_app/dev out).
APP_LEVEL_FORBIDDEN = ("agents", "orchestrator_app.web", "orchestrator_app.dev")
#: Modules that sit at the top on purpose: they import every wing to assemble the worker.
ASSEMBLERS = {"orchestrator_app/topology.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _hits(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    if str(path.relative_to(ROOT)).startswith("orchestrator_app/domain"):
        # the domain may import itself
        return sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden
                      and not m.startswith("orchestrator_app.domain"))
    return sorted(m for m in imported_modules(path)
                  if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_imports_flow_one_way() -> None:
    """app, config, domain ← tables ← agents, web ← dev: no package imports one above it."""
    wrong: dict[str, list[str]] = {}
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if hits := _hits(path, forbidden):
                wrong[str(path.relative_to(ROOT))] = hits
    for path in sorted((ROOT / "orchestrator_app").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(("orchestrator_app/web/", "orchestrator_app/domain/",
                           "orchestrator_app/dev/")) \
                or rel in ASSEMBLERS:
            continue
        if hits := _hits(path, APP_LEVEL_FORBIDDEN):
            wrong[rel] = hits
    assert wrong == {}
