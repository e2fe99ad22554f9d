"""``GET /dashboard``: the consumer-lag dashboard every worker serves, for the whole group.

* ``GET /dashboard`` — one HTML file (`dashboard.html`, script and styles inline, nothing
  fetched from elsewhere) that polls ``/dashboard/data.json`` every few seconds;
* ``GET /dashboard/data.json`` — the group: this worker asks every member of the consumer
  group (the URLs the table router knows, as the state API forwards) for its
  ``/dashboard/worker.json`` and merges the answers; a member that does not answer within
  ``PEER_TIMEOUT`` is listed with its error, the rest is still shown;
* ``GET /dashboard/worker.json`` — this worker alone.

Every number is read from this process's Prometheus registry (`metrics.REGISTRY`), the same
source ``GET /metrics`` renders, so the page and ``/metrics`` agree. No payment data: only
counts, offsets, durations and states.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import aiohttp
from faust import web
from yarl import URL

from orchestrator_app import metrics
from orchestrator_app.app import app
from orchestrator_app.web.routing import json_response

__all__ = [
    "HISTOGRAMS",
    "PEER_TIMEOUT",
    "dashboard",
    "dashboard_data",
    "group_view",
    "percentile",
    "worker_snapshot",
    "worker_view",
]

PEER_TIMEOUT = 2.0
#: Histograms shown as latency percentiles: dashboard name -> metric name.
HISTOGRAMS = {
    "saga_step": "payment_state_transition_duration_seconds",
    "fraud_check": "payment_fraud_check_duration_seconds",
    "processing": "payment_processing_duration_seconds",
}
#: Funnel stage -> the state a transition enters.
FUNNEL = {
    "created": "NEW", "approved": "APPROVED", "completed": "COMPLETED",
    "rejected": "REJECTED", "review": "MANUAL_REVIEW", "compensated": "COMPENSATED",
    "refunded": "REFUNDED",
}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
PEER_PATH = "/dashboard/worker.json"


def percentile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` on cumulative ``(le, count)`` buckets (pure)."""
    if not buckets:
        return None
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def _samples() -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            found[sample.name].append((dict(sample.labels), sample.value))
    return found


def worker_snapshot(now: float | None = None) -> dict[str, Any]:
    """This worker's numbers, straight from the registry (what /metrics shows)."""
    samples = _samples()
    lag_seconds = {(labels["topic"], labels["partition"]): value
                   for labels, value in samples["kafka_consumer_lag_seconds"]}
    lag = [{"topic": labels["topic"], "partition": int(labels["partition"]),
            "records": value,
            "seconds": lag_seconds.get((labels["topic"], labels["partition"]), 0.0)}
           for labels, value in samples["kafka_consumer_lag"]]
    processed: dict[str, float] = defaultdict(float)
    for labels, value in samples["kafka_messages_processed_total"]:
        processed[labels["topic"]] += value
    entered: dict[str, float] = defaultdict(float)
    for labels, value in samples["payment_state_transitions_total"]:
        entered[labels["to_state"]] += value
    # Cumulative buckets by upper bound, as strings ("+Inf" is not JSON as a number).
    histograms: dict[str, list[tuple[str, float]]] = {}
    for name, metric in HISTOGRAMS.items():
        merged: dict[str, float] = defaultdict(float)
        for labels, value in samples[f"{metric}_bucket"]:
            merged[labels["le"]] += value
        histograms[name] = sorted(merged.items(), key=lambda pair: float(pair[0]))
    census: dict[str, Any] | None = None
    if samples["payment_current_state_gauge"]:
        census = {
            "states": {labels["state"]: value
                       for labels, value in samples["payment_current_state_gauge"]},
            "oldest_seconds": {labels["state"]: value
                               for labels, value in samples["payment_waiting_oldest_seconds"]},
            "stuck": {labels["state"]: value for labels, value in samples["payment_stuck"]},
            "success_rate": next((value for _, value in samples["payment_success_rate"]),
                                 None),
            "dead_letters": {labels["topic"]: value for labels, value
                             in samples["payment_dead_letter_topic_depth"]},
        }
    return {
        "worker": str(app.conf.canonical_url),
        "taken_at": time.time() if now is None else now,
        "lag": sorted(lag, key=lambda row: (row["topic"], row["partition"])),
        "processed": dict(processed),
        "entered": dict(entered),
        "histograms": histograms,
        "breakers": {labels["service"]: value
                     for labels, value in samples["payment_circuit_breaker_state"]},
        "sink_lag": {labels["partition"]: value
                     for labels, value in samples["payment_sink_lag_records"]},
        "nats_in_flight": {labels["kind"]: value
                           for labels, value in samples["payment_nats_calls_in_flight"]},
        "census": census,
    }


def group_view(snapshots: Iterable[Mapping[str, Any]], failures: Mapping[str, str],
               asked: str, now: float) -> dict[str, Any]:
    """Merge the workers' snapshots into what the page shows (pure)."""
    workers: list[dict[str, Any]] = []
    lag: list[dict[str, Any]] = []
    processed: dict[str, float] = defaultdict(float)
    entered: dict[str, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    breakers: list[dict[str, Any]] = []
    sink_lag = 0.0
    census: Mapping[str, Any] | None = None
    for snap in snapshots:
        worker = snap["worker"]
        workers.append({"worker": worker, "ok": True,
                        "partitions": sorted({row["partition"] for row in snap["lag"]})})
        lag.extend({**row, "worker": worker} for row in snap["lag"])
        for topic, value in snap["processed"].items():
            processed[topic] += value
        for state, value in snap["entered"].items():
            entered[state] += value
        for name, pairs in snap["histograms"].items():
            for le, count in pairs:
                buckets[name][float(le)] += count
        breakers.extend({"worker": worker, "service": service, "state": state}
                        for service, state in sorted(snap["breakers"].items()))
        sink_lag += sum(snap["sink_lag"].values())
        if snap.get("census") is not None:
            census = snap["census"]
    workers.extend({"worker": url, "ok": False, "error": why}
                   for url, why in sorted(failures.items()))
    latency = {}
    for name in HISTOGRAMS:
        pairs = sorted(buckets[name].items())
        latency[name] = {"count": pairs[-1][1] if pairs else 0.0,
                         **{key: percentile(pairs, q) for key, q in QUANTILES.items()}}
    return {
        "asked": asked,
        "taken_at": now,
        "workers": sorted(workers, key=lambda w: w["worker"]),
        "lag": sorted(lag, key=lambda row: (row["topic"], row["partition"])),
        "processed": dict(sorted(processed.items())),
        "funnel": {stage: entered.get(state, 0.0) for stage, state in FUNNEL.items()},
        "latency": latency,
        "breakers": breakers,
        "sink_lag_records": sink_lag,
        "census": census,
    }


def _peers() -> list[str]:
    """Every member's URL the table router knows (this worker's own included)."""
    here = str(app.conf.canonical_url)
    urls = {here}
    with contextlib.suppress(AttributeError, KeyError):  # no assignment yet
        urls.update(app.router.tables_metadata().keys())
    return sorted(urls)


async def _ask(url: str) -> dict[str, Any]:
    target = URL(url).with_path(PEER_PATH)
    async with app.http_client.get(
            target, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT)) as response:
        if response.status != 200:
            raise RuntimeError(f"answered {response.status}")
        body: dict[str, Any] = await response.json()
        return body


async def dashboard_data() -> dict[str, Any]:
    """The group's view, as this worker sees it now."""
    here = str(app.conf.canonical_url)
    peers = [url for url in _peers() if url != here]
    answers = await asyncio.gather(*(_ask(url) for url in peers), return_exceptions=True)
    snapshots = [worker_snapshot()]
    failures: dict[str, str] = {}
    for url, answer in zip(peers, answers, strict=True):
        if isinstance(answer, BaseException):
            failures[url] = f"not reachable ({answer.__class__.__name__})"
        else:
            snapshots.append(answer)
    return group_view(snapshots, failures, here, time.time())


_PAGE: bytes | None = None


def _page() -> bytes:
    global _PAGE
    if _PAGE is None:
        _PAGE = resources.files("orchestrator_app.web").joinpath("dashboard.html").read_bytes()
    return _PAGE


@app.page("/dashboard")
async def dashboard(self: web.View, request: web.Request) -> web.Response:
    return self.bytes(_page(), content_type="text/html")


@app.page("/dashboard/data.json")
async def dashboard_json(self: web.View, request: web.Request) -> web.Response:
    return json_response(self, await dashboard_data())


@app.page(PEER_PATH)
async def worker_view(self: web.View, request: web.Request) -> web.Response:
    return json_response(self, worker_snapshot())
