"""Throughput benchmark: payments per second through the whole saga (not a test).

Starts the servers it needs (orchestrator_app.devstack), a simulator and N workers as real
processes, produces P payments as fast as it can, and reports how long until every one
reached COMPLETED (seen on payment.state.changed). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/throughput.py --payments 5000 --workers 1 --broker kafka
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator_app.devstack import Stack, free_port  # noqa: E402
from orchestrator_app.domain import codec  # noqa: E402

CLI = str(Path(sys.executable).parent / "payment-orchestrator")


def event(pid: str, i: int) -> bytes:
    return codec.dumps({
        "payment_id": pid, "amount": Decimal(1000 + i % 5000) / 100, "currency": "USD",
        "customer_id": f"bench-c{i % 97}", "merchant_id": f"bench-m{i % 13}",
        "status": "NEW", "created_at": "2026-11-27T10:00:00Z",
    })


def wait_ready(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"worker on {port} not ready")


async def run(brokers: str, prefix: str, payments: int) -> float:
    ids = [f"b{uuid.uuid4().hex[:10]}" for _ in range(payments)]
    consumer = AIOKafkaConsumer(f"{prefix}payment.state.changed", bootstrap_servers=brokers,
                                auto_offset_reset="latest", group_id=None)
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # position at the end before producing
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    futures = [await producer.send(f"{prefix}payment.created", event(pid, i), key=pid.encode())
               for i, pid in enumerate(ids)]
    await asyncio.gather(*futures)
    produced = time.monotonic() - started
    await producer.stop()
    done: set[str] = set()
    deadline = started + 600
    while len(done) < payments and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
        for records in batch.values():
            for r in records:
                if b'"current_state":"COMPLETED"' in r.value:
                    done.add(json.loads(r.value)["payment_id"])
    elapsed = time.monotonic() - started
    await consumer.stop()
    print(f"produced {payments} in {produced:.1f}s; {len(done)} COMPLETED in {elapsed:.1f}s "
          f"-> {len(done) / elapsed:.0f} payments/s")
    return elapsed


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop what we started


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--store", default="rocksdb://")
    args = parser.parse_args()
    children: list[subprocess.Popen[bytes]] = []
    with Stack() as stack:
        tmp = str(stack.run_dir)
        env = dict(os.environ)
        env.update(KAFKA_BROKERS=stack.broker(args.broker), DATABASE_URL=stack.postgres(),
                   REDIS_URL=stack.redis(), NATS_URL=stack.nats())
        run_id = uuid.uuid4().hex[:6]
        env.update(TOPIC_PREFIX=f"bench{run_id}.", APP_ID=f"bench-{run_id}",
                   TABLE_STORE=args.store, WEB_HOST="127.0.0.1", LOG_LEVEL="WARNING")
        try:
            subprocess.run([CLI, "migrate"], env=env, check=True, capture_output=True)
            children.append(subprocess.Popen([CLI, "simulate"], env=env, start_new_session=True,
                                             stdout=subprocess.DEVNULL))
            ports = []
            for i in range(args.workers):
                port = free_port()
                ports.append(port)
                wenv = dict(env, PORT=str(port), DATA_DIR=f"{tmp}/w{i}")
                with open(f"{tmp}/w{i}.log", "wb") as log:
                    children.append(subprocess.Popen(
                        [CLI, "worker", "-l", "warn"], env=wenv, start_new_session=True,
                        stdout=log, stderr=subprocess.STDOUT))
            for port in ports:
                wait_ready(port)
            time.sleep(2 if args.workers > 1 else 0.5)
            print(f"broker={args.broker} workers={args.workers} store={args.store} "
                  f"payments={args.payments}")
            asyncio.run(run(env["KAFKA_BROKERS"], env["TOPIC_PREFIX"], args.payments))
        finally:
            for child in children:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
