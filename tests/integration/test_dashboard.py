"""``GET /dashboard`` in a real headless Chromium, against two real workers: the page shows
the whole group whichever worker it asks, and its numbers are the workers' ``/metrics``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.debian_tools import debian_tool
from tests.load_util import (
    census_count,
    census_reporter,
    run_load,
    settled,
    start_group,
    wait,
)
from tests.saga_util import metric, metric_samples, wait_for_states
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
def output_dir() -> Path:
    """Where screenshots go: ``TEST_OUTPUT_DIR``, else ``.stack/test-output`` (kept with the
    servers' logs of the run, ignored by git)."""
    out = Path(os.environ.get("TEST_OUTPUT_DIR") or ROOT / ".stack" / "test-output")
    out.mkdir(parents=True, exist_ok=True)
    return out


class MetricCells(HTMLParser):
    """Every element with a ``data-metric`` attribute: (metric, key) -> attributes, text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self._open: list[tuple[str, str] | None] = []
        self._text: dict[tuple[str, str], str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = values
        if "data-metric" in values:
            key = values.get("data-key") or ":".join(
                filter(None, (values.get("data-topic"), values.get("data-partition"))))
            ident = (values["data-metric"], key)
            self.cells[ident] = values
            self._text[ident] = ""
            self._open.append(ident)
        else:
            self._open.append(None)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident is not None:
                self._text[ident] += data

    def value(self, metric_name: str, key: str) -> float:
        return float(self.cells[(metric_name, key)]["data-value"])


def dump_dom(chromium: str, url: str, budget_ms: int) -> str:
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    return result.stdout


def screenshot(chromium: str, url: str, path: Path) -> None:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--hide-scrollbars", "--window-size=1400,1500", "--virtual-time-budget=8000",
         f"--screenshot={path}", url],
        capture_output=True, timeout=120, check=False)


def test_dashboard_in_chromium_matches_metrics(
    kafka_brokers: str, worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess], tmp_path: Path,
) -> None:
    chromium = debian_tool("chromium", "chromium")
    env, workers = start_group(kafka_brokers, worker_env, spawn_worker, spawn_simulator, 2)
    prefix = env["TOPIC_PREFIX"]
    before = census_count(census_reporter(workers), "COMPLETED")
    expected = run_load(kafka_brokers, f"{prefix}payment.created", per_kind=8)
    wait_for_states(workers[0], expected, timeout=120)
    wait(lambda: settled(workers), "lag 0 on both workers")
    wait(lambda: any(
        census_count(w, "COMPLETED") == before + 8
        and metric(w, "payment_dead_letter_topic_depth", topic=f"{prefix}payment.created.dlq")
        == 1 for w in workers), "the census of the load")
    reporter = census_reporter(workers)

    # Whichever worker is asked, the JSON covers the group: every partition once.
    for worker in workers:
        status, body = worker.get("/dashboard/data.json")
        assert status == 200, body[:300]
        data = json.loads(body)
        assert [w["ok"] for w in data["workers"]] == [True, True], data["workers"]
        commands = sorted(r["partition"] for r in data["lag"]
                          if r["topic"] == f"{prefix}orchestrator-commands")
        assert commands == [0, 1, 2, 3], data["lag"]

    # The page, from the worker that is NOT the reporter: it must ask its peer.
    asked = next(w for w in workers if w is not reporter)
    url = asked.url("/dashboard")
    cells = MetricCells()
    for budget in (6000, 12000, 24000):  # bounded: until the first poll has rendered
        cells = MetricCells()
        cells.feed(dump_dom(chromium, url, budget))
        if int(cells.body.get("data-loaded") or 0) >= 1:
            break
    assert int(cells.body.get("data-loaded") or 0) >= 1, "the page never rendered data"
    assert cells.value("workers", "") == 2

    # Lag per topic and partition, offsets and seconds: the owners' /metrics.
    for name, cell_name in (("kafka_consumer_lag", "lag_records"),
                            ("kafka_consumer_lag_seconds", "lag_seconds")):
        from_metrics: dict[str, float] = {}
        for worker in workers:
            for labels, value in metric_samples(worker, name).items():
                d = dict(labels)
                from_metrics[f"{d['topic']}:{d['partition']}"] = value
        on_page = {key: float(attrs["data-value"]) for (m, key), attrs in cells.cells.items()
                   if m == cell_name}
        assert on_page == from_metrics
        assert len(on_page) == 8  # payment.created and the commands, 4 partitions each

    # The funnel: transitions entering each state, summed over the workers.
    def entered(state: str) -> float:
        return sum(v for w in workers
                   for labels, v in metric_samples(w, "payment_state_transitions_total").items()
                   if dict(labels)["to_state"] == state)

    for key, state in (("created", "NEW"), ("approved", "APPROVED"),
                       ("completed", "COMPLETED"), ("rejected", "REJECTED"),
                       ("review", "MANUAL_REVIEW"), ("compensated", "COMPENSATED")):
        assert cells.value("funnel", key) == entered(state), key
    assert cells.value("funnel", "created") == len(expected)

    # Group gauges: the reporter's /metrics.
    # (the database is shared by the run's tests: the rate covers their payments too)
    assert cells.value("success_rate", "") == metric(reporter, "payment_success_rate")
    assert 0 < metric(reporter, "payment_success_rate") < 1
    for state in ("COMPLETED", "REJECTED", "MANUAL_REVIEW", "COMPENSATED", "FRAUD_CHECK"):
        assert cells.value("state", state) == metric(
            reporter, "payment_current_state_gauge", state=state)
    assert cells.value("dlq", f"{prefix}payment.created.dlq") == 1
    assert cells.value("stuck", "FRAUD_CHECK") == metric(reporter, "payment_stuck",
                                                         state="FRAUD_CHECK")
    # Breakers of both workers, and the latency counts (histogram totals).
    for worker in workers:
        for service in ("fraud", "processor"):
            key = f"http://127.0.0.1:{worker.port}|{service}"
            assert cells.value("breaker", key) == metric(
                worker, "payment_circuit_breaker_state", service=service)
    fraud_count = sum(metric(w, "payment_fraud_check_duration_seconds_count") for w in workers)
    assert cells.value("latency_count", "fraud_check") == fraud_count > 0

    shot = tmp_path / "dashboard.png"
    screenshot(chromium, url, shot)
    assert shot.exists() and shot.stat().st_size > 10_000
    kept = output_dir() / "dashboard.png"
    shutil.copy(shot, kept)
    print(f"dashboard screenshot: {kept}")
