"""docker/prometheus and docker/grafana against a real Prometheus scraping a real worker under
load: promtool accepts the config and the rules, Prometheus loads the five alerts, and every
Grafana panel's and every alert's expression returns data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator_app.dev.procs import free_port, stop_group
from orchestrator_app.domain.records import Command
from tests.debian_tools import debian_tool
from tests.kafka_util import produce
from tests.load_util import run_load, start_group
from tests.saga_util import wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "payment-orchestrator.json"
ALERTS = {"HighStateTransitionFailures", "FraudCheckTimeouts", "OrchestratorKafkaLag",
          "LowPaymentSuccessRate", "OrchestratorKafkaTimeLag"}
#: An alert's condition, without its threshold: the part that must return data.
THRESHOLD = re.compile(r"^(?P<query>.*?)\s*(?:>|<|>=|<=|==|!=)\s*[0-9.eE+-]+\s*$", re.S)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
             for target in panel["targets"]]
    assert found
    return found


def test_promtool_accepts_config_and_rules() -> None:
    promtool = debian_tool("promtool", "prometheus")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    datasource = (ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "uid: prometheus" in datasource and "type: prometheus" in datasource
    provider = (ROOT / "docker/grafana/provisioning/dashboards/dashboards.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
    compose = (ROOT / "docker/compose.yaml").read_text()
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in compose
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]


def local_config(target: str) -> dict[str, Any]:
    """docker/prometheus/prometheus.yml for one local worker: the compose stack finds its
    workers by DNS (the service name); here the job scrapes `target` instead, faster, and
    keeps everything else (the relabelling that adds service="orchestrator", the rules)."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "payment-orchestrator"
    assert job.pop("dns_sd_configs")[0]["names"] == ["orchestrator"]
    job["static_configs"] = [{"targets": [target]}]
    return config


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        config_dir = workdir / "prometheus"
        config_dir.mkdir()
        (config_dir / "prometheus.yml").write_text(yaml.safe_dump(local_config(target)))
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", config_dir / "alerts.yml")
        self.log_path = workdir / "prometheus.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        result: list[Any] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        stop_group(self.proc, 15, 20.0)


def refused_command(payment_id: str) -> bytes:
    """A retry for a payment that is not FAILED: the saga refuses it (a transition error)."""
    command = Command(kind="retry", payment_id=payment_id,
                      command_id=f"{payment_id}:test:retry:{uuid.uuid4().hex[:6]}",
                      issued_at="2026-11-27T10:00:00.000Z")
    data: bytes = command.dumps()
    return data


def test_prometheus_scrapes_a_worker_and_every_panel_and_alert_has_data(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], tmp_path: Path,
) -> None:
    binary = debian_tool("prometheus", "prometheus")
    env, (worker,) = start_group(kafka_brokers, worker_env, spawn_worker, spawn_simulator, 1)
    prefix = env["TOPIC_PREFIX"]
    prometheus = Prometheus(binary, tmp_path, f"127.0.0.1:{worker.port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                up = prometheus.query('up{job="payment-orchestrator",service="orchestrator"}')
                if up and up[0]["value"][1] == "1":
                    break
            except OSError:
                pass
            assert prometheus.proc.poll() is None, prometheus.log_path.read_text()
            assert time.monotonic() < deadline, prometheus.log_path.read_text()[-3000:]
            time.sleep(0.5)

        # Load: every path, twice (rates need samples on both sides of a window), and a
        # command the saga refuses.
        for _ in range(2):
            expected = run_load(kafka_brokers, f"{prefix}payment.created", per_kind=6)
            wait_for_states(worker, expected, timeout=120)
            completed = next(p for p, s in expected.items() if s == "COMPLETED")
            asyncio.run(produce(kafka_brokers, f"{prefix}orchestrator-commands",
                                [(completed.encode(), refused_command(completed))]))

        rules = prometheus.api("rules")["groups"]
        alerts = {rule["name"]: rule for group in rules for rule in group["rules"]
                  if rule["type"] == "alerting"}
        assert set(alerts) == ALERTS
        assert all(rule["health"] != "err" for rule in alerts.values()), alerts

        queries = panel_queries()
        for name, rule in sorted(alerts.items()):
            match = THRESHOLD.match(rule["query"])
            assert match, rule["query"]
            queries.append((f"alert {name}", match.group("query")))

        missing: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            missing = {title: expr for title, expr in queries
                       if not prometheus.query(expr)}
            if not missing:
                break
            time.sleep(1.0)
        assert not missing, missing
    finally:
        prometheus.stop()
