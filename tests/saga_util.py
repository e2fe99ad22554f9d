"""Helpers for saga tests: build payment.created events and wait on the state API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_app.domain import codec
from tests.workers import WorkerProcess


def created_event(
    payment_id: str, amount: Decimal | str, customer_id: str = "customer-1",
    merchant_id: str = "merchant-1", currency: str = "USD",
) -> bytes:
    """A valid payment.created value; the amount is an exact JSON number."""
    return codec.dumps({
        "payment_id": payment_id, "amount": Decimal(amount), "currency": currency,
        "customer_id": customer_id, "merchant_id": merchant_id, "status": "NEW",
        "created_at": "2026-11-27T10:00:00Z",
    })


def partition_of(key: str, partitions: int = 4) -> int:
    """The partition Kafka's default partitioner (and so Faust) picks for `key`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def get_state(worker: WorkerProcess, payment_id: str) -> tuple[int, dict[str, Any]]:
    status, body = worker.get(f"/payments/{payment_id}/state")
    try:
        return status, json.loads(body, parse_float=Decimal)
    except ValueError:
        return status, {"raw": body.decode(errors="replace")}


def wait_for_states(
    worker: WorkerProcess,
    expected: dict[str, str],
    timeout: float = 60.0,
    accept: Callable[[str, dict[str, Any]], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll the API until every payment is in its expected state; return the bodies."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for payment_id, state in expected.items():
            if payment_id in done:
                continue
            try:
                status, body = get_state(worker, payment_id)
            except OSError:
                continue
            last[payment_id] = (status, body)
            if status == 200 and body["current_state"] == state and (
                accept is None or accept(payment_id, body)
            ):
                done[payment_id] = body
        if len(done) == len(expected):
            return done
        time.sleep(0.2)
    missing = {pid: last.get(pid) for pid in expected if pid not in done}
    sample = dict(list(missing.items())[:5])
    raise AssertionError(
        f"{len(missing)} of {len(expected)} payments not in their expected state; "
        f"e.g. {sample}\n{worker.log_tail(30)}"
    )


def states(history: Iterable[dict[str, Any]]) -> list[str]:
    return [entry["state"] for entry in history]


async def await_states(
    worker: WorkerProcess, expected: dict[str, str], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """`wait_for_states` without blocking the test's event loop."""
    return await asyncio.to_thread(wait_for_states, worker, expected, timeout)


def metric_samples(worker: WorkerProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric on the worker's /metrics, by sorted label items."""
    status, body = worker.get("/metrics")
    assert status == 200, body[:500]
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics (0 when absent)."""
    return metric_samples(worker, name).get(tuple(sorted(labels.items())), 0.0)
