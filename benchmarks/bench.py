"""The benchmark: the orchestrator, the lock-per-event baseline and the platform ceiling,
measured from the outside, in one run. Prints figures and writes JSON; asserts nothing.

    .venv/bin/python benchmarks/bench.py                           # 20,000 payments, 2 workers
    .venv/bin/python benchmarks/bench.py --payments 5000 --workers 1,2 --designs orchestrator

Servers come from orchestrator_app.dev.stack (Apache Kafka unless --broker tansu; any of
KAFKA_BROKERS / DATABASE_URL / REDIS_URL / NATS_URL is used when set). Each design run gets
its own topic prefix, APP_ID / consumer group, database ``bench_<hex>`` (created through the
admin URL, dropped afterwards unless --keep-databases) and simulator process
(``python -m orchestrator_app.dev.simulator``, answering at once), so runs never share state.
``--tracing off,on`` runs each orchestrator run twice, the second with every worker and the
simulator exporting spans to a do-nothing OTLP receiver in this process: the cost of tracing.

Per run, after a few warm-up payments:

1. peak: all --payments produced at once; payments/s = payments / (last terminal event seen
   - first produced), latency = terminal event seen - that payment produced (p50/p95/p99);
2. rate: --rate-fraction (0.5) of that peak, for --rate-seconds (15), same latency figures,
   after --settle-seconds (0) of idling; each phase also keeps a latency timeline (per 0.5 s
   of send time: count, median, max) in the JSON;
3. after each phase, the time until PostgreSQL holds every payment at its final version;
   CPU seconds of the service processes (and the simulator) per payment, from
   /proc/<pid>/stat before and after; peak RSS (VmHWM) of each process, and of the servers
   this script started (sampled RSS/PSS of their process trees);
4. records the run produced on all its topics, changelogs included (topic end offsets), per
   payment; then the database counts: payments, history rows against the sum of final
   versions, duplicate (payment_id, version) keys, payments whose versions are not 1..final.

"Terminal" is the first COMPLETED / REJECTED / MANUAL_REVIEW / COMPENSATED / REFUNDED event
of a payment on ``<prefix>payment.state.changed``, read with a plain aiokafka consumer.
``--designs …,baseline-go`` adds the same baseline written in Go (benchmarks/baseline_go/: the
same design, contracts, settings and output, on franz-go, pgx, go-redis and nats.go): the
yardstick a team would write instead of the orchestrator. It is built once per bench run
(``go build`` into the run directory; skipped, with the reason, when ``go`` is missing or the
build fails) and run exactly like baseline.py (same environment, same
``--baseline-concurrency`` list, its own topic prefix, group and database); the ratio line is
then printed against the best Go baseline too.
The ceiling (benchmarks/ceiling.py) then pushes payments x records-per-payment records
through the broker with raw aiokafka. Every process started here is stopped by process group
at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import ceiling  # noqa: E402

from orchestrator_app.dev.procs import free_port, stop_groups  # noqa: E402
from orchestrator_app.dev.stack import Stack, tail  # noqa: E402
from orchestrator_app.domain import codec  # noqa: E402
from orchestrator_app.schema import migrate  # noqa: E402

CLI = str(Path(sys.executable).parent / "payment-orchestrator")
SIMULATOR = [sys.executable, "-m", "orchestrator_app.dev.simulator"]
BASELINE = HERE / "baseline.py"
BASELINE_GO = HERE / "baseline_go"
TERMINAL = frozenset({"COMPLETED", "REJECTED", "MANUAL_REVIEW", "COMPENSATED", "REFUNDED"})
STATE_RE = re.compile(rb'"current_state"\s*:\s*"([A-Z_]+)"')
PID_RE = re.compile(rb'"payment_id"\s*:\s*"([^"]+)"')
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RunError(RuntimeError):
    """A process of a run died or never became ready."""


# --- processes --------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    kids, out, i = _children_map(), [pid], 0
    while i < len(out):
        out.extend(kids.get(out[i], ()))
        i += 1
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process tree (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def tree_mb(pid: int, key: str = "VmHWM") -> float | None:
    """A /proc status figure (VmHWM: peak RSS, VmRSS: now) summed over a process tree."""
    values = [v for p in process_tree(pid) if (v := status_kb(p, key))]
    return round(sum(values) / 1024, 1) if values else None


def pss_mb(pid: int) -> float | None:
    """Proportional set size of a process tree (shared pages split, e.g. PostgreSQL's
    shared buffers); VmRSS where smaps_rollup is unreadable."""
    total = 0
    for p in process_tree(pid):
        kb = None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kb = int(line.split()[1])
                    break
        total += kb if kb is not None else (status_kb(p, "VmRSS") or 0)
    return round(total / 1024, 1) if total else None


GC_PAUSE = "python_gc_pause_seconds"
#: A pause longer than this counts as a stall (it holds up every payment in flight); a
#: bucket bound of the worker's histogram.
GC_STALL_S = 0.05


def gc_pauses(port: int) -> dict[str, float]:
    """A worker's GC pause histogram, read from its ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return parse_gc_pauses(answer.read().decode())


def parse_gc_pauses(text: str) -> dict[str, float]:
    """The GC pause histogram of a Prometheus text page, flattened: per generation the
    seconds (``gen2_s``) and collections (``gen2_n``), and the collections longer than
    `GC_STALL_S` (``stalls``)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != GC_PAUSE:
            continue
        for sample in family.samples:
            g = sample.labels.get("generation", "?")
            if sample.name == f"{GC_PAUSE}_sum":
                out[f"gen{g}_s"] = sample.value
            elif sample.name == f"{GC_PAUSE}_count":
                out[f"gen{g}_n"] = sample.value
                out["stalls"] = out.get("stalls", 0.0) + sample.value
            elif sample.name == f"{GC_PAUSE}_bucket" and \
                    float(sample.labels["le"]) == GC_STALL_S:
                out["stalls"] = out.get("stalls", 0.0) - sample.value
    return out


def gc_figures(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    """What the collector cost the workers between two scrapes: seconds in total and in
    generation 2, generation-2 collections, pauses longer than `GC_STALL_S`."""
    def delta(key: str) -> float:
        return sum(a.get(key, 0.0) - b.get(key, 0.0) for b, a in zip(before, after,
                                                                      strict=True))
    return {"gc_s": round(sum(delta(f"gen{g}_s") for g in range(3)), 3),
            "gc_gen2_s": round(delta("gen2_s"), 3),
            "gc_gen2_collections": int(delta("gen2_n")),
            "gc_stalls": int(delta("stalls"))}


class Sampler:
    """Samples the PSS of the servers' process trees; peak per name."""

    def __init__(self, targets: dict[str, int], interval: float = 1.0) -> None:
        self.targets, self.interval = targets, interval
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for name, pid in self.targets.items():
                if (mb := pss_mb(pid)) is not None:
                    self.peaks[name] = max(mb, self.peaks.get(name, 0.0))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Children:
    """Processes of one run, each in its own process group, logging to log_dir."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log(name), "ab") as out:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RunError(f"{name} exited with {proc.returncode}; log {self.log(name)}:\n"
                               f"{tail(self.log(name), 20)}")

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM each group, SIGKILL what outlives `timeout` (only while unreaped: only
        then is the pid surely still our group's id)."""
        stop_groups(list(reversed(self.procs.values())), timeout)


def wait_http_ready(port: int, children: Children, timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        children.check_alive()
        url = f"http://127.0.0.1:{port}/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return time.monotonic() - t0
        time.sleep(0.1)
    raise RunError(f"worker on port {port} not ready after {timeout:.0f}s")


def wait_log_line(children: Children, name: str, text: str, timeout: float = 90.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        children.check_alive()
        with contextlib.suppress(OSError):
            if text in children.log(name).read_text(errors="replace"):
                return time.monotonic() - t0
        time.sleep(0.1)
    raise RunError(f"{name} did not print {text!r} in {timeout:.0f}s; log {children.log(name)}:"
                   f"\n{tail(children.log(name), 20)}")


# --- servers ----------------------------------------------------------------------------

async def create_database(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def create_topics(brokers: str, names: Iterable[str], partitions: int,
                        configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    await admin.start()
    try:
        names = list(names)
        await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1,
                                            topic_configs=configs or {}) for n in names])
        deadline = time.monotonic() + 30
        while not set(names) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RunError(f"topics {names} not visible after 30s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(brokers: str, prefixes: tuple[str, ...]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    with contextlib.suppress(Exception):  # best effort (Tansu may refuse)
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if names:
            await admin.delete_topics(names)
    with contextlib.suppress(Exception):
        await admin.close()


async def topic_records(brokers: str, prefixes: tuple[str, ...]) -> dict[str, int]:
    """Records produced on every topic whose name starts with one of `prefixes` (the sum
    of the partitions' end offsets; on Tansu ListOffsets under-reports, DESIGN §7)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers, request_timeout_ms=10_000)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described
           for p in d["partitions"]]
    out = dict.fromkeys(topics, 0)
    if not tps:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            out[tp.topic] += end
        return out
    finally:
        await consumer.stop()


# --- the measurement --------------------------------------------------------------------

def created_event(pid: str, i: int) -> bytes:
    """A payment the simulator approves and processes: it ends COMPLETED."""
    return codec.dumps({
        "payment_id": pid, "amount": Decimal(1000 + i % 5000) / 100, "currency": "USD",
        "customer_id": f"bench-c{i % 97}", "merchant_id": f"bench-m{i % 13}",
        "status": "NEW", "created_at": "2026-12-01T10:00:00Z",
    })


class Watcher:
    """Reads payment.state.changed from its end; remembers each payment's first terminal
    event (when it was seen) and its final version."""

    def __init__(self, brokers: str, topic: str, partitions: int) -> None:
        self.brokers, self.topic, self.partitions = brokers, topic, partitions
        self.seen_at: dict[str, float] = {}
        self.final_version: dict[str, int] = {}
        self.terminal_state: dict[str, str] = {}
        self.states: Counter[str] = Counter()
        #: When each payment's FRAUD_CHECK / APPROVED event was seen (where latency goes).
        self.stage_at: dict[str, dict[str, float]] = {"FRAUD_CHECK": {}, "APPROVED": {}}
        self.events = 0
        self.value_bytes = 0
        self._waiting: list[set[str]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.brokers, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=50, max_partition_fetch_bytes=4 << 20)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    self._see(record.value, now)

    def _see(self, value: bytes | None, now: float) -> None:
        if not value:
            return
        self.events += 1
        self.value_bytes += len(value)
        match = STATE_RE.search(value)
        if match is None:
            return
        state = match.group(1).decode()
        self.states[state] += 1
        if state in self.stage_at:
            pid_match = PID_RE.search(value)
            if pid_match is not None:
                self.stage_at[state].setdefault(pid_match.group(1).decode(), now)
            return
        if state not in TERMINAL:
            return
        data = json.loads(value)
        pid, version = str(data["payment_id"]), int(data.get("version") or 0)
        if version > self.final_version.get(pid, 0):
            self.final_version[pid] = version
        if pid in self.seen_at:
            return
        self.seen_at[pid] = now
        self.terminal_state[pid] = state
        for remaining in self._waiting:
            remaining.discard(pid)

    async def wait(self, ids: Iterable[str], children: Children, timeout: float,
                   stall: float) -> bool:
        """Until every id was seen terminal; False after `timeout`, or after `stall`
        seconds without any state change at all (a burst can take minutes to produce its
        first terminal event, but state changes flow all along)."""
        remaining = set(ids) - self.seen_at.keys()
        self._waiting.append(remaining)
        try:
            start = last = time.monotonic()
            events = self.events
            while remaining:
                children.check_alive()
                if self._task is not None and self._task.done():
                    self._task.result()  # the watcher died: raise its error
                await asyncio.sleep(0.05)
                now = time.monotonic()
                if self.events != events:
                    events, last = self.events, now
                if now - last > stall or now - start > timeout:
                    return False
            return True
        finally:
            self._waiting = [w for w in self._waiting if w is not remaining]


#: Width of a `latency_timeline` slot, seconds of send time.
TIMELINE_SLOT_S = 0.5


def latency_timeline(sent_s: dict[str, float],
                     latency_ms: dict[str, float]) -> list[dict[str, float]]:
    """Latency by when a payment was sent, per `TIMELINE_SLOT_S` slot of the phase: how many,
    their median and their maximum. Periodic work that stalls the pipeline (commits, table
    flushes, census queries) shows as a maximum that recurs every so many slots."""
    slots: dict[int, list[float]] = {}
    for pid, at in sent_s.items():
        slots.setdefault(int(at // TIMELINE_SLOT_S), []).append(latency_ms[pid])
    return [{"t_s": round(i * TIMELINE_SLOT_S, 2), "n": len(v),
             "p50_ms": round(statistics.median(v), 1), "max_ms": round(max(v), 1)}
            for i, v in sorted(slots.items())]


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    s = sorted(values_ms)

    def rank(q: float) -> float | None:
        return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 1) if s else None

    return {"p50_ms": rank(0.50), "p95_ms": rank(0.95), "p99_ms": rank(0.99),
            "max_ms": round(s[-1], 1) if s else None}


async def wait_database(db_url: str, finals: dict[str, int], timeout: float) -> float | None:
    """Seconds until payment_states holds every payment at (at least) its final version."""
    ids = list(finals)
    versions = [finals[i] for i in ids]
    t0 = time.monotonic()
    conn = await asyncpg.connect(db_url)
    try:
        while True:
            n = await conn.fetchval(
                "SELECT count(*) FROM payment_states s JOIN unnest($1::text[], $2::int[]) "
                "AS f(id, v) ON s.payment_id = f.id AND s.version >= f.v", ids, versions)
            if n >= len(ids):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


COUNTS_SQL = """
WITH h AS (
    SELECT payment_id, count(*) AS n, count(DISTINCT version) AS d,
           min(version) AS lo, max(version) AS hi
    FROM payment_state_history GROUP BY payment_id)
SELECT
    (SELECT count(*) FROM payment_states) AS payments,
    (SELECT count(*) FROM payment_state_history) AS history_rows,
    (SELECT coalesce(sum(version), 0) FROM payment_states) AS sum_final_versions,
    (SELECT count(*) FROM (SELECT 1 FROM payment_state_history
                           GROUP BY payment_id, version HAVING count(*) > 1) d)
        AS duplicate_keys,
    (SELECT count(*) FROM payment_states s LEFT JOIN h USING (payment_id)
     WHERE h.payment_id IS NULL OR h.n <> s.version OR h.d <> s.version
        OR h.lo <> 1 OR h.hi <> s.version) AS gaps,
    (SELECT count(*) FROM h WHERE NOT EXISTS (
        SELECT 1 FROM payment_states s WHERE s.payment_id = h.payment_id))
        AS history_without_state
"""


async def database_counts(db_url: str, expected: int) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    try:
        row = dict(await conn.fetchrow(COUNTS_SQL))
        states = {r[0]: r[1] for r in await conn.fetch(
            "SELECT current_state, count(*) FROM payment_states GROUP BY 1 ORDER BY 2 DESC")}
    finally:
        await conn.close()
    row = {k: int(v) for k, v in row.items()}
    row["expected_payments"] = expected
    row["missing_payments"] = expected - row["payments"]
    row["excess_history_rows"] = row["history_rows"] - row["sum_final_versions"]
    row["states"] = states
    return row


class Run:
    """One design run: its processes, topics and database."""

    def __init__(self, args: argparse.Namespace, design: str, brokers: str, db_url: str,
                 run_id: str, children: Children, services: list[str],
                 servers: dict[str, int] | None = None,
                 metrics_ports: list[int] | None = None) -> None:
        self.args, self.design, self.brokers, self.db_url = args, design, brokers, db_url
        #: Workers' web ports, to read their GC pause histograms before and after a phase.
        self.metrics_ports = metrics_ports or []
        self.run_id, self.children, self.services = run_id, children, services
        #: Servers this script started (their CPU counts too: they share the cores).
        self.servers = servers or {}
        self.prefix = f"bench{run_id}."
        self.watcher = Watcher(brokers, f"{self.prefix}payment.state.changed", args.partitions)
        self.produced = 0

    def cpu(self) -> dict[str, float]:
        procs = {name: cpu_seconds(p.pid) for name, p in self.children.procs.items()}
        return procs | {f"server:{name}": cpu_seconds(pid) for name, pid in self.servers.items()}

    def cpu_figures(self, before: dict[str, float], after: dict[str, float],
                    payments: int) -> dict[str, Any]:
        delta = {n: round(after[n] - before[n], 2) for n in after if n in before}
        service = sum(delta[n] for n in self.services if n in delta)
        return {"cpu_s": delta,
                "service_cpu_ms_per_payment": round(1000 * service / payments, 3)
                if payments else None,
                "simulator_cpu_ms_per_payment": round(1000 * delta.get("simulator", 0)
                                                      / payments, 3) if payments else None,
                "server_cpu_ms_per_payment": {
                    n.split(":", 1)[1]: round(1000 * v / payments, 3)
                    for n, v in delta.items() if n.startswith("server:")} if payments else {}}

    async def send(self, producer: AIOKafkaProducer, ids: list[str], values: list[bytes],
                   sent: dict[str, float], rate: float | None = None) -> None:
        topic = f"{self.prefix}payment.created"
        futures = []
        start = time.monotonic()
        i = 0
        while i < len(ids):
            due = len(ids) if rate is None else \
                min(len(ids), int((time.monotonic() - start) * rate) + 1)
            while i < due:
                sent[ids[i]] = time.monotonic()
                futures.append(await producer.send(topic, values[i], key=ids[i].encode()))
                i += 1
            if rate is not None and i < len(ids):
                await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
        self.produced += len(ids)

    def ids(self, tag: str, n: int) -> tuple[list[str], list[bytes]]:
        ids = [f"{tag}-{self.run_id}-{i:06d}" for i in range(n)]
        return ids, [created_event(pid, i) for i, pid in enumerate(ids)]

    async def phase(self, producer: AIOKafkaProducer, tag: str, n: int,
                    rate: float | None) -> dict[str, Any]:
        ids, values = self.ids(tag, n)
        sent: dict[str, float] = {}
        cpu0 = self.cpu()
        gc0 = [gc_pauses(port) for port in self.metrics_ports]
        t0 = time.monotonic()
        await self.send(producer, ids, values, sent, rate)
        produced_s = time.monotonic() - t0
        complete = await self.watcher.wait(ids, self.children, self.args.timeout,
                                           self.args.stall)
        seen = self.watcher.seen_at
        done = [pid for pid in ids if pid in seen]
        last = max((seen[p] for p in done), default=t0)
        elapsed = last - t0
        finals = {pid: self.watcher.final_version[pid] for pid in done}
        db_start = time.monotonic()
        db_s = await wait_database(self.db_url, finals, self.args.timeout) if done else None
        cpu1 = self.cpu()
        gc1 = [gc_pauses(port) for port in self.metrics_ports]
        db_done = None if db_s is None else db_start + db_s
        out: dict[str, Any] = {
            "payments": n, "terminal": len(done), "complete": complete,
            "target_rate": round(rate, 1) if rate else None,
            "produce_s": round(produced_s, 2), "elapsed_s": round(elapsed, 2),
            "payments_per_s": round(len(done) / elapsed, 1) if elapsed > 0 else None,
            **percentiles([(seen[p] - sent[p]) * 1000 for p in done]),
            # from the first produce until PostgreSQL holds every payment at its final version
            "db_complete_s": None if db_done is None else round(db_done - t0, 2),
            # of which after the last terminal event was seen
            "db_lag_s": None if db_done is None else round(db_done - last, 2),
            "terminal_states": dict(Counter(self.watcher.terminal_state[p] for p in done)),
        }
        out.update(self.cpu_figures(cpu0, cpu1, len(done)))
        if self.metrics_ports:
            out.update(gc_figures(gc0, gc1))
        # Where the time goes: created -> FRAUD_CHECK (ingest, CREATE applied) -> APPROVED
        # (fraud call and its outcome) -> terminal (processor call and its outcome).
        fraud_at, approved_at = self.watcher.stage_at["FRAUD_CHECK"], \
            self.watcher.stage_at["APPROVED"]
        stages = {"created_to_fraud_check": [], "fraud_check_to_approved": [],
                  "approved_to_terminal": []}
        for pid in done:
            if pid in fraud_at and pid in approved_at:
                stages["created_to_fraud_check"].append((fraud_at[pid] - sent[pid]) * 1000)
                stages["fraud_check_to_approved"].append(
                    (approved_at[pid] - fraud_at[pid]) * 1000)
                stages["approved_to_terminal"].append((seen[pid] - approved_at[pid]) * 1000)
        out["stages_ms"] = {name: percentiles(v) for name, v in stages.items()}
        out["timeline"] = latency_timeline({p: sent[p] - t0 for p in done},
                                           {p: (seen[p] - sent[p]) * 1000 for p in done})
        return out

    async def measure(self) -> dict[str, Any]:
        await self.watcher.start()
        producer = AIOKafkaProducer(bootstrap_servers=self.brokers, linger_ms=5,
                                    max_batch_size=256 * 1024, acks="all")
        await producer.start()
        try:
            result: dict[str, Any] = {}
            if self.args.warmup:
                warm = await self.phase(producer, "w", self.args.warmup, None)
                if not warm["complete"]:
                    raise RunError(f"warm-up payments did not finish: {warm}")
            peak = await self.phase(producer, "p", self.args.payments, None)
            result["peak"] = peak
            say(f"  peak: {peak['terminal']}/{peak['payments']} terminal in "
                f"{peak['elapsed_s']}s = {peak['payments_per_s']}/s; p50 {peak['p50_ms']} ms "
                f"p99 {peak['p99_ms']} ms; PostgreSQL complete at {peak['db_complete_s']}s")
            say(f"    stages p50/p99 ms: {_stages(peak)}")
            if self.args.rate_seconds > 0 and (self.args.rate or peak["payments_per_s"]):
                rate = self.args.rate or peak["payments_per_s"] * self.args.rate_fraction
                n = max(1, round(rate * self.args.rate_seconds))
                await asyncio.sleep(self.args.settle_seconds)
                fixed = await self.phase(producer, "r", n, rate)
                result["rate"] = fixed
                say(f"  rate {fixed['target_rate']}/s for {n} payments: "
                    f"{fixed['payments_per_s']}/s, p50 {fixed['p50_ms']} ms "
                    f"p95 {fixed['p95_ms']} ms p99 {fixed['p99_ms']} ms")
                say(f"    stages p50/p99 ms: {_stages(fixed)}")
            result["state_changed_events"] = self.watcher.events
            result["state_changed_mean_bytes"] = round(
                self.watcher.value_bytes / max(1, self.watcher.events))
            return result
        finally:
            await producer.stop()
            await self.watcher.stop()


# --- the runs ---------------------------------------------------------------------------

def _stages(phase: dict[str, Any]) -> str:
    return ", ".join(f"{name} {v.get('p50_ms')}/{v.get('p99_ms')}"
                     for name, v in phase.get("stages_ms", {}).items())


def say(msg: str) -> None:
    print(msg, flush=True)


class OtlpSink:
    """A do-nothing OTLP/HTTP receiver: answers every export 200 and counts what it got.

    With it the workers pay the whole cost of tracing (spans built, batched, encoded and
    POSTed) and nothing else: the cost the bench's traced runs show.
    """

    def __init__(self) -> None:
        sink = self
        self.requests = self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def build_baseline_go(run_dir: Path) -> tuple[Path | None, str]:
    """``go build`` the Go baseline into the run directory, once: (binary, how long it took)
    or (None, why it is skipped)."""
    go = shutil.which("go")
    if go is None:
        return None, "go not found"
    if not (BASELINE_GO / "go.mod").exists():
        return None, f"{BASELINE_GO.relative_to(ROOT)}/go.mod not found"
    binary, t0 = run_dir / "baseline-go", time.monotonic()
    # the module is benchmarks/baseline_go (no go.mod at the root): build from inside it
    r = subprocess.run([go, "build", "-o", str(binary), "."], cwd=BASELINE_GO,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, "go build failed: " + " | ".join(r.stderr.strip().splitlines()[-3:])
    return binary, f"{time.monotonic() - t0:.1f}s"


def run_design(args: argparse.Namespace, stack: Stack, env: dict[str, str], design: str,
               workers: int = 1, concurrency: int = 0, otlp: OtlpSink | None = None,
               baseline_go: Path | None = None, variant: Variant | None = None,
               round_no: int = 0) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    brokers, admin_url = env["KAFKA_BROKERS"], env["DATABASE_URL"]
    label = f"orchestrator W={workers}" if design == "orchestrator" else \
        f"{design} C={concurrency}"
    if variant is not None:
        label += f" [{variant.name}]"
        env = dict(env, **variant.env)
    if otlp is not None:
        label += " traced"
        env = dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url)
        spans_before = (otlp.requests, otlp.bytes)
    config = label  # the same configuration in every round
    if round_no:
        label += f" #{round_no}"
    say(f"== {label} (run {run_id}) ==")
    db_name = f"bench_{run_id}"
    db_url = asyncio.run(create_database(admin_url, db_name))
    prefix, app_id = f"bench{run_id}.", f"bench-{run_id}"
    renv = dict(env, DATABASE_URL=db_url, TOPIC_PREFIX=prefix, APP_ID=app_id,
                TOPIC_PARTITIONS=str(args.partitions), TABLE_STORE=args.store,
                WEB_HOST="127.0.0.1", LOG_LEVEL="WARNING")
    children = Children(stack.run_dir / f"{design}-{run_id}")
    servers = {c.name: c.proc.pid for c in getattr(stack, "_children", [])}
    result: dict[str, Any] = {"design": design, "label": label, "config": config,
                              "round": round_no or None,
                              "variant": variant.name if variant else None,
                              "variant_env": variant.env if variant else None,
                              "run_id": run_id,
                              "workers": workers if design == "orchestrator" else None,
                              "concurrency": concurrency or None,
                              "tracing": otlp is not None,
                              "logs": str(children.log_dir),
                              # others' processes share the cores: keep the load beside the figures
                              "load_average_at_start": os.getloadavg()}
    try:
        with Sampler(servers) as sampler:
            services: list[str] = []
            ports: list[int] = []
            t0 = time.monotonic()
            if design == "orchestrator":
                subprocess.run([CLI, "migrate"], env=renv, check=True, capture_output=True)
            else:
                asyncio.run(migrate(db_url))
                asyncio.run(create_topics(brokers, [f"{prefix}payment.created",
                                                    f"{prefix}payment.state.changed"],
                                          args.partitions))
            children.spawn("simulator", SIMULATOR, dict(renv, PYTHONUNBUFFERED="1"))
            if design == "orchestrator":
                for i in range(workers):
                    port = free_port()
                    ports.append(port)
                    children.spawn(f"worker{i}", [CLI, "worker", "-l", "warn"],
                                   dict(renv, PORT=str(port),
                                        DATA_DIR=str(children.log_dir / f"worker{i}-data")))
                    services.append(f"worker{i}")
                for port in ports:
                    wait_http_ready(port, children)
                if workers > 1:  # the last joiner's rebalance: let it settle, check again
                    time.sleep(2)
                    for port in ports:
                        wait_http_ready(port, children)
            else:
                argv = [str(baseline_go)] if design == "baseline-go" else \
                    [sys.executable, str(BASELINE)]
                children.spawn("baseline", argv,
                               dict(renv, BASELINE_CONCURRENCY=str(concurrency),
                                    BASELINE_GROUP=f"bench-baseline-{run_id}",
                                    PYTHONUNBUFFERED="1"))
                services.append("baseline")
                wait_log_line(children, "baseline", "baseline ready")
            wait_log_line(children, "simulator", "simulator answering", 60)
            result["startup_s"] = round(time.monotonic() - t0, 1)
            run = Run(args, design, brokers, db_url, run_id, children, services, servers,
                      ports)
            result.update(asyncio.run(run.measure()))
            prefixes = (prefix, f"{app_id}-") if design == "orchestrator" else \
                (prefix, f"bench-baseline-{run_id}")
            records = asyncio.run(topic_records(brokers, prefixes))
            result["topic_records"] = records
            result["payments_produced"] = run.produced
            result["records_per_payment"] = round(sum(records.values()) / run.produced, 2)
            result["database"] = asyncio.run(database_counts(db_url, run.produced))
            result["peak_rss_mb"] = {n: tree_mb(p.pid) for n, p in children.procs.items()}
        result["server_peak_pss_mb"] = dict(sampler.peaks)
        if otlp is not None:
            result["otlp_exports"] = {"requests": otlp.requests - spans_before[0],
                                      "bytes": otlp.bytes - spans_before[1]}
        result["load_average_at_end"] = os.getloadavg()
    except RunError as e:
        say(f"  {label} failed: {e}")
        result["error"] = str(e)
    finally:
        children.stop_all()
        if not args.keep_databases:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(admin_url, db_name))
        if args.delete_topics:
            asyncio.run(delete_topics(brokers, (prefix, f"{app_id}-",
                                                f"bench-baseline-{run_id}")))
    return result


# --- report -----------------------------------------------------------------------------

def _lat(phase: dict[str, Any] | None) -> str:
    if not phase:
        return "-"
    return f"{phase['p50_ms']:.0f} / {phase['p95_ms']:.0f} / {phase['p99_ms']:.0f}" \
        if phase.get("p50_ms") is not None else "-"


def _db(phase: dict[str, Any] | None) -> str | None:
    """Seconds from the first produce until PostgreSQL held every payment at its final
    version, and (in brackets) how long after the last terminal event that was."""
    if not phase or phase.get("db_complete_s") is None:
        return None
    return f"{phase['db_complete_s']:.1f} (+{phase['db_lag_s']:.2f})"


def _gc(phase: dict[str, Any] | None) -> str | None:
    """The workers' collector time in a phase, all generations / generation 2, and (in
    brackets) how many pauses lasted longer than `GC_STALL_S`."""
    if not phase or phase.get("gc_s") is None:
        return None
    return f"{phase['gc_s']:.2f} / {phase['gc_gen2_s']:.2f} ({phase['gc_stalls']})"


def _g(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def report(runs: list[dict[str, Any]], ceil: dict[str, Any] | None) -> str:
    cols = [r["label"] for r in runs] + (["ceiling"] if ceil else [])
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, values: list[Any], ceiling_value: Any = None) -> None:
        cells = [_fmt(v) for v in values]
        if ceil:
            cells.append(_fmt(ceiling_value))
        rows.append((name, cells))

    row("payments (peak phase)", [_g(r, "peak", "payments") for r in runs])
    row("peak payments/s (ceiling: equiv.)", [_g(r, "peak", "payments_per_s") for r in runs],
        ceil and ceil.get("payments_per_s_equivalent"))
    row("  latency p50/p95/p99 ms", [_lat(r.get("peak")) for r in runs])
    row("  PostgreSQL complete s (lag)", [_db(r.get("peak")) for r in runs])
    row("  worker CPU ms/payment", [_g(r, "peak", "service_cpu_ms_per_payment") for r in runs])
    row("  worker GC s: all / gen 2 (stalls)", [_gc(r.get("peak")) for r in runs])
    row("  simulator CPU ms/payment",
        [_g(r, "peak", "simulator_cpu_ms_per_payment") for r in runs])
    for server in sorted({s for r in runs
                          for s in (_g(r, "peak", "server_cpu_ms_per_payment") or {})}):
        row(f"  {server} CPU ms/payment",
            [_g(r, "peak", "server_cpu_ms_per_payment", server) for r in runs])
    row("fixed rate: target/s", [_g(r, "rate", "target_rate") for r in runs])
    row("  achieved payments/s", [_g(r, "rate", "payments_per_s") for r in runs])
    row("  latency p50/p95/p99 ms", [_lat(r.get("rate")) for r in runs])
    row("  PostgreSQL complete s (lag)", [_db(r.get("rate")) for r in runs])
    row("  worker CPU ms/payment", [_g(r, "rate", "service_cpu_ms_per_payment") for r in runs])
    row("  worker GC s: all / gen 2 (stalls)", [_gc(r.get("rate")) for r in runs])
    if any(r.get("tracing") for r in runs):
        row("OTLP exports (KB)", [
            f"{r['otlp_exports']['requests']} ({r['otlp_exports']['bytes'] // 1024:,})"
            if r.get("otlp_exports") else None for r in runs])
    row("records/payment (all topics)", [r.get("records_per_payment") for r in runs],
        ceil and ceil.get("records_per_payment"))
    row("ceiling records (bytes each)", [None for _ in runs],
        ceil and f"{ceil['records']:,} ({ceil['value_bytes']} B)")
    row("  produce+consume records/s", [None for _ in runs], ceil and ceil.get("records_per_s"))
    row("  produce / consume records/s", [None for _ in runs],
        ceil and f"{ceil['produce_records_per_s']:,} / {ceil['consume_records_per_s']:,}")

    def rss(r: dict[str, Any], which: str) -> str | None:
        d = r.get("peak_rss_mb") or {}
        vals = [f"{v:.0f}" for n, v in d.items() if v is not None and
                (n == which if which != "service" else n.startswith(("worker", "baseline")))]
        return " + ".join(vals) if vals else None

    row("peak RSS MB: workers/baseline", [rss(r, "service") for r in runs])
    row("  simulator", [rss(r, "simulator") for r in runs])
    for server in sorted({s for r in runs for s in r.get("server_peak_pss_mb", {})}):
        row(f"  {server} (PSS, sampled)",
            [_g(r, "server_peak_pss_mb", server) for r in runs])
    row("DB payments / expected",
        [f"{_g(r, 'database', 'payments')} / {_g(r, 'database', 'expected_payments')}"
         if r.get("database") else None for r in runs])
    row("  history rows / sum(final v)",
        [f"{_g(r, 'database', 'history_rows')} / {_g(r, 'database', 'sum_final_versions')}"
         if r.get("database") else None for r in runs])
    row("  duplicate keys / gaps",
        [f"{_g(r, 'database', 'duplicate_keys')} / {_g(r, 'database', 'gaps')}"
         if r.get("database") else None for r in runs])
    row("  states", [" ".join(f"{k}:{v}" for k, v in (_g(r, "database", "states") or {})
                              .items()) or None for r in runs])
    row("load average (1 min) at end", [round(r["load_average_at_end"][0], 1)
                                        if r.get("load_average_at_end") else None
                                        for r in runs])
    row("error", [r.get("error", "")[:40] or None for r in runs])
    width0 = max(len(name) for name, _ in rows)
    widths = [max(len(c), *(len(cells[i]) for _, cells in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join([" " * width0, *(c.rjust(w) for c, w in zip(cols, widths, strict=True))])]
    for name, cells in rows:
        if all(c == "-" for c in cells):
            continue
        lines.append("  ".join([name.ljust(width0),
                                *(c.rjust(w) for c, w in zip(cells, widths, strict=True))]))
    return "\n".join(lines)


def best(runs: list[dict[str, Any]], design: str) -> dict[str, Any] | None:
    """The fastest run of `design` in its default configuration (no tracing, no variant)."""
    ok = [r for r in runs if r["design"] == design and not r.get("tracing")
          and not r.get("variant") and _g(r, "peak", "payments_per_s")]
    return max(ok, key=lambda r: r["peak"]["payments_per_s"]) if ok else None


def ratios(runs: list[dict[str, Any]], baseline: str = "baseline") -> dict[str, Any] | None:
    """The best orchestrator run over the best run of `baseline` (baseline, baseline-go)."""
    o, b = best(runs, "orchestrator"), best(runs, baseline)
    if not (o and b):
        return None
    out = {"orchestrator": o["label"], "baseline": b["label"],
           "peak_throughput": round(o["peak"]["payments_per_s"] / b["peak"]["payments_per_s"],
                                    2)}
    oc, bc = _g(o, "peak", "service_cpu_ms_per_payment"), \
        _g(b, "peak", "service_cpu_ms_per_payment")
    if oc and bc:
        out["cpu_per_payment"] = round(oc / bc, 2)
    ol, bl = _g(o, "rate", "p99_ms"), _g(b, "rate", "p99_ms")
    if ol and bl:
        out["fixed_rate_p99"] = round(ol / bl, 2)
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values)}


def rounds_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Across rounds: each configuration's figures as median [min-max], and the ratios that
    compare within a round (the machine's speed moves between rounds, not within a pair)."""
    configs: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        figures = configs.setdefault(r["config"], {})
        for key, value in (("peak_payments_per_s", _g(r, "peak", "payments_per_s")),
                           ("peak_worker_cpu_ms", _g(r, "peak", "service_cpu_ms_per_payment")),
                           ("rate_p99_ms", _g(r, "rate", "p99_ms")),
                           ("rate_worker_cpu_ms", _g(r, "rate", "service_cpu_ms_per_payment")),
                           ("rate_gc_s", _g(r, "rate", "gc_s")),
                           ("rate_gc_stalls", _g(r, "rate", "gc_stalls"))):
            if value is not None:
                figures.setdefault(key, []).append(float(value))
    out: dict[str, Any] = {"configs": {c: {k: _spread(v) for k, v in f.items()}
                                       for c, f in configs.items()}, "ratios": {}}
    by_round: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        by_round.setdefault(r.get("round") or 0, []).append(r)
    pairs: dict[str, list[float]] = {}
    for round_runs in by_round.values():
        if (ref := best(round_runs, "orchestrator")) is not None:
            for name in ("baseline", "baseline-go"):
                if (b := best(round_runs, name)) is not None:
                    # the design's best configuration of that round (it may differ by round)
                    pairs.setdefault(f"{ref['config']} / {name} (best)", []).append(
                        ref["peak"]["payments_per_s"] / b["peak"]["payments_per_s"])
        for r in round_runs:
            if not (r.get("variant") and _g(r, "peak", "payments_per_s")):
                continue
            # against the default run with as many workers in the same round
            default = best([d for d in round_runs if d.get("workers") == r["workers"]],
                           "orchestrator")
            if default is not None:
                pairs.setdefault(f"{r['config']} / {default['config']}", []).append(
                    r["peak"]["payments_per_s"] / default["peak"]["payments_per_s"])
    out["ratios"] = {k: _spread(v) for k, v in pairs.items()}
    return out


def describe_rounds(summary: dict[str, Any]) -> str:
    def cell(d: dict[str, float] | None, digits: int = 0) -> str:
        if not d:
            return "-"
        return (f"{d['median']:.{digits}f} [{d['min']:.{digits}f}-{d['max']:.{digits}f}]")

    lines = ["across rounds: median [min-max]", f"{'configuration':<36} {'peak/s':>17} "
             f"{'worker ms/pay':>17} {'fixed-rate p99 ms':>19} {'fixed-rate GC s':>17} "
             f"{'GC stalls':>11}"]
    for config, f in summary["configs"].items():
        lines.append(f"{config:<36} {cell(f.get('peak_payments_per_s')):>17} "
                     f"{cell(f.get('peak_worker_cpu_ms'), 2):>17} "
                     f"{cell(f.get('rate_p99_ms')):>19} {cell(f.get('rate_gc_s'), 2):>17} "
                     f"{cell(f.get('rate_gc_stalls')):>11}")
    for name, d in summary["ratios"].items():
        lines.append(f"peak ratio {name} (within each round, n={d['n']}): {cell(d, 2)}")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------

_stopping = False


def _on_signal(signum: int, frame: object) -> None:
    """First SIGTERM / Ctrl-C: unwind through the finally blocks (they stop what we
    started); later ones are ignored so the clean-up itself is not interrupted."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    print(f"\nsignal {signum}: stopping everything started here", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def code_version() -> dict[str, Any]:
    """The commit measured, and which product files differ from it (others may be editing)."""
    def git(*argv: str) -> str:
        r = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return r.stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "agents",
                                      "orchestrator_app", "tables", "benchmarks").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": dirty}


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


@dataclass(frozen=True)
class Variant:
    """An orchestrator run with worker settings of its own, beside the default one in every
    round: the way to compare a setting paired, on the same machine at the same time."""

    name: str
    env: dict[str, str]


def variant(text: str) -> Variant:
    """``NAME:VAR=VALUE[,VAR=VALUE...]``, e.g. ``fw500:CONSUMER_FETCH_MAX_WAIT_MS=500``."""
    name, sep, settings = text.partition(":")
    pairs = [p.strip() for p in settings.split(",") if p.strip()]
    if not sep or not re.fullmatch(r"[\w.-]+", name) or not pairs \
            or not all(re.fullmatch(r"[A-Z][A-Z0-9_]*=[^,]*", p) for p in pairs):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME:VAR=VALUE[,VAR=VALUE...] (e.g. sb0:TABLE_STANDBY_REPLICAS=0)")
    return Variant(name, dict(p.split("=", 1) for p in pairs))


def run_round_design(args: argparse.Namespace, stack: Stack, env: dict[str, str], design: str,
                     go_binary: Path | None, round_no: int, reverse: bool,
                     results: dict[str, Any], save: Callable[[], None]) -> None:
    """Every configuration of one design in one round (workers x tracing x variants for
    the orchestrator, each concurrency for a baseline), in reverse order when `reverse`."""
    jobs: list[dict[str, Any]] = []
    if design == "orchestrator":
        for w in args.workers:
            for mode in args.tracing_modes:
                jobs.append({"workers": w, "tracing": mode == "on"})
            for variant in args.variant:
                jobs.append({"workers": w, "tracing": False, "variant": variant})
    elif design == "baseline-go":
        if go_binary is None:
            return
        jobs = [{"concurrency": c, "baseline_go": go_binary} for c in args.baseline_concurrency]
    elif not BASELINE.exists():
        say(f"== baseline: {BASELINE.relative_to(ROOT)} not found, skipped ==")
        results["baseline_skipped"] = "benchmarks/baseline.py not found"
        return
    else:
        jobs = [{"concurrency": c} for c in args.baseline_concurrency]
    for job in (jobs[::-1] if reverse else jobs):
        otlp = OtlpSink() if job.pop("tracing", False) else None
        try:
            results["runs"].append(run_design(args, stack, env, design, otlp=otlp,
                                              round_no=round_no, **job))
        finally:
            if otlp is not None:
                otlp.close()
        save()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    parser = argparse.ArgumentParser(
        description="orchestrator vs baseline vs platform ceiling (prints, asserts nothing)")
    parser.add_argument("--payments", type=int, default=20000)
    parser.add_argument("--workers", type=int_list, default=[2],
                        help="orchestrator workers; a comma list runs each (e.g. 1,2)")
    parser.add_argument("--designs", default="orchestrator,baseline")
    parser.add_argument("--baseline-concurrency", type=int_list, default=[64],
                        help="BASELINE_CONCURRENCY; a comma list runs each, the best is compared")
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--store", default="rocksdb://", help="TABLE_STORE of the workers")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20, help="payments before measuring")
    parser.add_argument("--rate-fraction", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="fixed-rate phase at this many payments/s instead of "
                             "--rate-fraction of the peak (compares tails at equal load)")
    parser.add_argument("--rate-seconds", type=float, default=15.0)
    parser.add_argument("--settle-seconds", type=float, default=0.0,
                        help="idle this long between the peak and the fixed-rate phase, so "
                             "the fixed rate is measured in steady state, not while the "
                             "peak's after-work (standby, compaction, sink) still runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument("--stall", type=float, default=60.0,
                        help="give up a phase after this long without any state change")
    parser.add_argument("--tracing", default="off",
                        help="off, on, or off,on: orchestrator runs with spans exported to a "
                             "do-nothing OTLP receiver (the cost of tracing)")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--broker-warmup", type=int, default=200_000,
                        help="records pushed through the broker before the first run (its "
                             "JIT compiles on first load: whichever design ran first paid it)")
    parser.add_argument("--keep-databases", action="store_true")
    parser.add_argument("--delete-topics", action="store_true",
                        help="delete each run's topics afterwards (for a shared broker)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every configuration this many times, alternating the "
                             "order (ABBA); prints medians and ratios within each round")
    parser.add_argument("--variant", type=variant, action="append", default=[],
                        help="NAME:VAR=VALUE[,...]: an orchestrator run with these worker "
                             "settings beside the default one in every round (repeatable)")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args()
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = set(designs) - {"orchestrator", "baseline", "baseline-go"}
    if unknown:
        parser.error(f"unknown designs: {', '.join(sorted(unknown))}")
    tracing = [t.strip() for t in args.tracing.split(",") if t.strip()]
    if not tracing or set(tracing) - {"off", "on"}:
        parser.error("--tracing takes off, on or off,on")
    args.tracing_modes = tracing
    if args.rounds < 1:
        parser.error("--rounds takes a positive number")
    if args.variant and "orchestrator" not in designs:
        parser.error("--variant needs the orchestrator design")
    if len({v.name for v in args.variant}) != len(args.variant):
        parser.error("--variant names must differ")
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": dict(vars(args)), "cpus": os.cpu_count(), "code": code_version(),
        "load_average_at_start": os.getloadavg(), "runs": [],
    }

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")

    with Stack(log=lambda m: print(m, file=sys.stderr, flush=True)) as stack:
        env = dict(os.environ)
        env.update(KAFKA_BROKERS=stack.broker(args.broker), DATABASE_URL=stack.postgres(),
                   REDIS_URL=stack.redis(), NATS_URL=stack.nats())
        env.update(stack.env())  # and replication 1 for a one-broker Kafka
        results["broker"] = args.broker if not os.environ.get("KAFKA_BROKERS") else "given"
        say(f"bench: {args.payments} payments, broker {results['broker']}, store {args.store},"
            f" {os.cpu_count()} cpus; logs under {stack.run_dir}")
        runs: list[dict[str, Any]] = results["runs"]
        if args.broker_warmup:
            t0 = time.monotonic()
            asyncio.run(ceiling.run_ceiling(env["KAFKA_BROKERS"], args.broker_warmup, 400,
                                            args.partitions, 1.0))
            say(f"broker warm-up: {args.broker_warmup:,} records in "
                f"{time.monotonic() - t0:.1f}s")
        go_binary: Path | None = None
        if "baseline-go" in designs:
            go_binary, how = build_baseline_go(stack.run_dir)
            if go_binary is None:
                say(f"== baseline-go: skipped: {how} ==")
                results["baseline_go_skipped"] = how
            else:
                say(f"baseline-go: go build {BASELINE_GO.relative_to(ROOT)} in {how}")
                results["baseline_go_build"] = how
        for round_no in range(1, args.rounds + 1):
            # ABBA: the second round runs the designs in reverse order, so a machine
            # getting faster or slower through the run does not favour one design.
            order = designs if round_no % 2 else designs[::-1]
            for design in order:
                run_round_design(args, stack, env, design, go_binary,
                                 round_no if args.rounds > 1 else 0,
                                 reverse=not round_no % 2, results=results, save=save)
        ceil = None
        if not args.no_ceiling:
            ref = best(runs, "orchestrator")
            per_payment = ref["records_per_payment"] if ref else 21.0
            size = ref["state_changed_mean_bytes"] if ref else 400
            say(f"== ceiling: {args.payments} x {per_payment} records of {size} B ==")
            ceil = asyncio.run(ceiling.run_ceiling(
                env["KAFKA_BROKERS"], round(args.payments * per_payment), size,
                args.partitions, per_payment))
            say(ceiling.describe(ceil))
            results["ceiling"] = ceil
        results["ratio_orchestrator_over_baseline"] = ratios(runs)
        results["ratio_orchestrator_over_baseline_go"] = ratios(runs, "baseline-go")
        if args.rounds > 1 or args.variant:
            results["rounds"] = rounds_summary(runs)
        results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save()
    print()
    print(report(runs, ceil))
    for key, name in (("ratio_orchestrator_over_baseline", "baseline"),
                      ("ratio_orchestrator_over_baseline_go", "baseline-go")):
        if r := results[key]:
            print(f"\norchestrator/{name} ({r['orchestrator']} vs {r['baseline']}): "
                  f"peak throughput x{r['peak_throughput']}"
                  + (f", CPU per payment x{r['cpu_per_payment']}" if "cpu_per_payment" in r
                     else "")
                  + (f", fixed-rate p99 x{r['fixed_rate_p99']}" if "fixed_rate_p99" in r
                     else ""))
    if results.get("rounds"):
        print()
        print(describe_rounds(results["rounds"]))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
