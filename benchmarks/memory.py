"""Memory of a worker whose table holds many payments (not a test: prints, asserts nothing).

Writes --payments (1,000,000) COMPLETED payments straight onto the payments table's
changelog (``<APP_ID>-payments-changelog``, compacted, key = the raw payment id, value =
`Payment(...).dumps()` of a payment the pure saga drove NEW -> COMPLETED with the
simulator's replies) with raw aiokafka, then starts one worker with that APP_ID and
measures: the time until /ready is 200 (table recovery), its RSS after recovery, and its
RSS after --extra (1,000) more real payments through the saga. For comparison it first
starts a worker with an empty table (skip with --no-empty).

    .venv/bin/python benchmarks/memory.py [--payments 1000000] [--store rocksdb://]

Servers as in bench.py (orchestrator_app.dev.stack, or the *_URL / KAFKA_BROKERS settings).
Every process started here is stopped at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (puts the repository root on sys.path)
from bench import (  # noqa: E402
    CLI,
    SIMULATOR,
    Children,
    RunError,
    Watcher,
    create_database,
    create_topics,
    drop_database,
    say,
    tree_mb,
    wait_http_ready,
    wait_log_line,
)

from orchestrator_app.dev.procs import free_port  # noqa: E402
from orchestrator_app.dev.simulator import Rules, fraud_reply, process_reply  # noqa: E402
from orchestrator_app.dev.stack import Stack  # noqa: E402
from orchestrator_app.domain import codec, replies, saga  # noqa: E402
from orchestrator_app.domain.records import (  # noqa: E402
    Command,
    CommandKind,
    PaymentCreated,
    SourceRef,
)

MARKER = "MEMTEMPLATE0000000000"
BUDGET_MB = 500


def completed_payment(amount: Decimal, customer: str, merchant: str) -> bytes:
    """`Payment.dumps()` of a payment the saga took NEW -> COMPLETED (id = MARKER), with
    the simulator's own fraud and processor replies: the value the saga agent stores."""
    pid = MARKER
    fields = {"payment_id": pid, "amount": amount, "currency": "USD", "customer_id": customer,
              "merchant_id": merchant, "status": "NEW", "created_at": "2026-12-01T10:00:00Z"}
    t = ["2026-12-01T10:00:00.004Z", "2026-12-01T10:00:00.019Z", "2026-12-01T10:00:00.031Z"]
    create = Command(kind=CommandKind.CREATE.value, payment_id=pid,
                     command_id=saga.create_command_id(pid), issued_at=t[0],
                     payment=PaymentCreated(**fields),
                     source=SourceRef(topic="payment.created", partition=0, offset=0),
                     raw=codec.dumps(fields).decode())
    out = saga.apply(None, create, t[0])
    fraud = out.fraud_requests[0]
    answer = codec.dumps(fraud_reply(replies.fraud_wire_body(fraud)))
    out = saga.apply(out.payment, replies.fraud_result(pid, answer, t[1]), t[1])
    request = out.process_requests[0]
    answer = codec.dumps(process_reply(replies.process_wire_body(request), Rules()))
    out = saga.apply(out.payment, replies.process_result(request, answer, t[2]), t[2])
    assert out.payment is not None and out.payment.state == "COMPLETED"
    return bytes(out.payment.dumps())


async def fill_changelog(brokers: str, topic: str, run_id: str, n: int) -> dict[str, Any]:
    templates = [completed_payment(Decimal(1000 + 37 * i) / 100, f"mem-c{i}", f"mem-m{i % 5}")
                 for i in range(16)]
    marker = MARKER.encode()
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5,
                                max_batch_size=256 * 1024, acks="all")
    await producer.start()
    total = 0
    t0 = time.monotonic()
    try:
        chunk: list[asyncio.Future[Any]] = []
        for i in range(n):
            pid = f"m-{run_id}-{i:07d}".encode()
            value = templates[i % len(templates)].replace(marker, pid)
            total += len(value)
            chunk.append(await producer.send(topic, value, key=pid))
            if len(chunk) >= 50_000:
                await asyncio.gather(*chunk)
                chunk = []
                if (i + 1) % 200_000 == 0:
                    say(f"  {i + 1:,} written ({time.monotonic() - t0:.0f}s)")
        await asyncio.gather(*chunk)
    finally:
        await producer.stop()
    seconds = time.monotonic() - t0
    return {"records": n, "bytes": total, "mean_bytes": round(total / max(1, n)),
            "produce_s": round(seconds, 1), "records_per_s": round(n / seconds)}


def get_state(port: int, pid: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/payments/{pid}/state",
                                    timeout=10) as r:
            return r.status, json.loads(r.read())["current_state"]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")[:80]
    except OSError as e:
        return 0, str(e)


def du_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return round(total / 2**20, 1)


def start_worker(children: Children, name: str, env: dict[str, str]) -> tuple[int, float]:
    """Start a worker; return its port and the seconds until /ready answered 200."""
    port = free_port()
    t0 = time.monotonic()
    children.spawn(name, [CLI, "worker", "-l", "warn"],
                   dict(env, PORT=str(port), DATA_DIR=str(children.log_dir / f"{name}-data")))
    wait_http_ready(port, children, timeout=3600)
    return port, time.monotonic() - t0


async def extra_payments(brokers: str, prefix: str, run_id: str, n: int, partitions: int,
                         children: Children) -> dict[str, Any]:
    watcher = Watcher(brokers, f"{prefix}payment.state.changed", partitions)
    await watcher.start()
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5)
    await producer.start()
    try:
        ids = [f"x-{run_id}-{i:06d}" for i in range(n)]
        t0 = time.monotonic()
        futures = [await producer.send(f"{prefix}payment.created", bench.created_event(p, i),
                                       key=p.encode()) for i, p in enumerate(ids)]
        await asyncio.gather(*futures)
        complete = await watcher.wait(ids, children, timeout=600, stall=60)
        done = sum(1 for p in ids if p in watcher.seen_at)
        return {"payments": n, "terminal": done, "complete": complete,
                "seconds": round(time.monotonic() - t0, 1)}
    finally:
        await producer.stop()
        await watcher.stop()


def main() -> None:
    signal.signal(signal.SIGTERM, bench._on_signal)
    signal.signal(signal.SIGINT, bench._on_signal)
    parser = argparse.ArgumentParser(description="RSS of a worker holding many payments")
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--extra", type=int, default=1000)
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--store", default="rocksdb://", help="TABLE_STORE of the worker")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-empty", action="store_true",
                        help="skip the empty-table worker measured first for comparison")
    parser.add_argument("--out", default="memory-results.json")
    args = parser.parse_args()
    out: dict[str, Any] = {"args": vars(args)}
    with Stack(log=lambda m: print(m, file=sys.stderr, flush=True)) as stack:
        env = dict(os.environ)
        env.update(KAFKA_BROKERS=stack.broker(args.broker), DATABASE_URL=stack.postgres(),
                   REDIS_URL=stack.redis(), NATS_URL=stack.nats())
        env.update(stack.env())  # and replication 1 for a one-broker Kafka
        brokers, admin_url = env["KAFKA_BROKERS"], env["DATABASE_URL"]
        run_id = uuid.uuid4().hex[:8]
        db_name = f"bench_mem_{run_id}"
        children = Children(stack.run_dir / f"memory-{run_id}")
        base = dict(env, TOPIC_PARTITIONS=str(args.partitions), TABLE_STORE=args.store,
                    WEB_HOST="127.0.0.1", LOG_LEVEL="WARNING")
        say(f"memory: {args.payments:,} payments, broker {args.broker}, store {args.store}; "
            f"logs under {children.log_dir}")
        try:
            base["DATABASE_URL"] = asyncio.run(create_database(admin_url, db_name))
            subprocess.run([CLI, "migrate"], env=base, check=True, capture_output=True)
            children.spawn("simulator", SIMULATOR, dict(base, PYTHONUNBUFFERED="1"))
            wait_log_line(children, "simulator", "simulator answering", 60)
            if not args.no_empty:
                empty = dict(base, APP_ID=f"mem-empty-{run_id}",
                             TOPIC_PREFIX=f"mem{run_id}e.")
                port, ready_s = start_worker(children, "worker-empty", empty)
                pid = children.procs["worker-empty"].pid
                out["empty"] = {"ready_s": round(ready_s, 1), "rss_mb": tree_mb(pid, "VmRSS"),
                                "peak_rss_mb": tree_mb(pid)}
                say(f"  empty table: ready in {ready_s:.1f}s, RSS {out['empty']['rss_mb']} MB")
                _only(children, "worker-empty").stop_all()
            app_id, prefix = f"mem-{run_id}", f"mem{run_id}."
            changelog = f"{app_id}-payments-changelog"
            asyncio.run(create_topics(brokers, [changelog], args.partitions,
                                      {"cleanup.policy": "compact"}))
            fill = asyncio.run(fill_changelog(brokers, changelog, run_id, args.payments))
            out["changelog"] = fill
            say(f"  wrote {fill['records']:,} payments ({fill['mean_bytes']} B each, "
                f"{fill['bytes'] / 1e9:.2f} GB) onto {changelog} in {fill['produce_s']}s "
                f"({fill['records_per_s']:,}/s)")
            wenv = dict(base, APP_ID=app_id, TOPIC_PREFIX=prefix)
            port, ready_s = start_worker(children, "worker", wenv)
            pid = children.procs["worker"].pid
            recovered = {"ready_s": round(ready_s, 1), "rss_mb": tree_mb(pid, "VmRSS"),
                         "peak_rss_mb": tree_mb(pid)}
            sample = f"m-{run_id}-{args.payments // 2:07d}"
            recovered["sample_state"] = get_state(port, sample)
            out["recovered"] = recovered
            say(f"  {args.payments:,} payments: /ready after {ready_s:.1f}s (table recovery); "
                f"RSS {recovered['rss_mb']} MB, peak {recovered['peak_rss_mb']} MB; "
                f"GET /payments/{sample}/state -> {recovered['sample_state']}")
            extra = asyncio.run(extra_payments(brokers, prefix, run_id, args.extra,
                                               args.partitions, children))
            after = {**extra, "rss_mb": tree_mb(pid, "VmRSS"), "peak_rss_mb": tree_mb(pid),
                     "data_dir_mb": du_mb(children.log_dir / "worker-data")}
            out["after_extra"] = after
            say(f"  after {extra['terminal']:,}/{extra['payments']:,} more payments through "
                f"the saga ({extra['seconds']}s): RSS {after['rss_mb']} MB, peak "
                f"{after['peak_rss_mb']} MB; table data dir {after['data_dir_mb']} MB on disk")
            peak = max(v for v in (recovered["peak_rss_mb"], after["peak_rss_mb"]) if v)
            say(f"  peak RSS {peak} MB against the {BUDGET_MB} MB budget: "
                f"{'under' if peak < BUDGET_MB else 'OVER'}")
        except RunError as e:
            say(f"memory: failed: {e}")
            out["error"] = str(e)
        finally:
            children.stop_all()
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(admin_url, db_name))
            Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    say(f"results: {args.out}")


def _only(children: Children, name: str) -> Children:
    """A view of one child, to stop it alone (and forget it)."""
    one = Children(children.log_dir)
    one.procs[name] = children.procs.pop(name)
    return one


if __name__ == "__main__":
    main()
