"""The Postgres sink with a real worker on Apache Kafka: redelivery changes nothing, amounts
are stored exactly, and a database outage stops nothing — the sink catches up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord

from orchestrator_app.dev.procs import stop_group
from orchestrator_app.dev.stack import Stack, postgres_bindir, tail
from orchestrator_app.domain import codec
from orchestrator_app.schema import migrate
from tests.kafka_util import produce, read_until
from tests.saga_util import await_states, metric, metric_samples
from tests.workers import SimulatorProcess, WorkerProcess

pytestmark = pytest.mark.integration

COMPLETED_PATH = ["NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
REJECTED_PATH = ["NEW", "FRAUD_CHECK", "REJECTED"]
Records = list[ConsumerRecord[bytes, bytes]]


# --- helpers ------------------------------------------------------------------------------


def created(pid: str, amount: Decimal, **overrides: Any) -> bytes:
    event: dict[str, Any] = {
        "payment_id": pid, "amount": amount, "currency": "USD",
        "customer_id": "customer-123", "merchant_id": "merchant-456",
        "status": "NEW", "created_at": "2026-02-13T10:00:00Z",
    }
    event.update(overrides)
    return codec.dumps(event)








async def wait_metric(worker: WorkerProcess, name: str, at_least: float,
                      timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    value = 0.0
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(metric, worker, name)
        if value >= at_least:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} = {value} < {at_least} after {timeout}s")


async def fetch_rows(
    url: str, pids: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Full rows (every column) of payment_states and payment_state_history for `pids`."""
    conn = await asyncpg.connect(url)
    try:
        states = await conn.fetch(
            "SELECT * FROM payment_states WHERE payment_id = ANY($1::varchar[]) "
            "ORDER BY payment_id", pids)
        history = await conn.fetch(
            "SELECT * FROM payment_state_history WHERE payment_id = ANY($1::varchar[]) "
            "ORDER BY payment_id, version, id", pids)
        return [dict(r) for r in states], [dict(r) for r in history]
    finally:
        await conn.close()


async def wait_sunk(url: str, final: dict[str, int], timeout: float = 30.0) -> None:
    """Until every payment has its final version in payment_states and that many history rows."""
    deadline = time.monotonic() + timeout
    states: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            states, history = await fetch_rows(url, list(final))
            versions = {r["payment_id"]: r["version"] for r in states}
            counts: dict[str, int] = defaultdict(int)
            for r in history:
                counts[r["payment_id"]] += 1
            if versions == final and dict(counts) == final:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"sink did not write {final} in {timeout}s: "
                         f"{[(r['payment_id'], r['version']) for r in states]}, "
                         f"{len(history)} history rows")


def state_changes(pids: set[str], versions: int | dict[str, int]) -> Callable[[Records], bool]:
    """read_until condition: every payment's versions 1..n were seen."""
    want = versions if isinstance(versions, dict) else dict.fromkeys(pids, versions)

    def done(records: Records) -> bool:
        seen: dict[str, set[int]] = defaultdict(set)
        for r in records:
            event = codec.loads(r.value)
            seen[event["payment_id"]].add(event["version"])
        return all(seen[pid] == set(range(1, n + 1)) for pid, n in want.items())

    return done


def sink_dead_letters(worker: WorkerProcess) -> float:
    return sum(metric_samples(worker, "payment_sink_dead_letters_total").values())


def assert_history_matches_events(history: list[dict[str, Any]], records: Records) -> None:
    """Each history row is its event: state, previous state, event id, metadata, time."""
    events = {}
    for r in records:
        e = codec.loads(r.value)
        events[(e["payment_id"], e["version"])] = e
    for row in history:
        e = events[(row["payment_id"], row["version"])]
        assert row["state"] == e["current_state"]
        assert row["previous_state"] == e["previous_state"]
        assert row["event_id"] == e["event_id"] == f"{e['payment_id']}:{e['version']}"
        assert codec.loads(row["metadata"]) == e["metadata"]
        assert row["created_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == \
            e["changed_at"]


# --- (a) redelivery ----------------------------------------------------------------------


async def test_redelivered_state_changes_change_nothing(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    changed = env["TOPIC_PREFIX"] + "payment.state.changed"
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    url = migrated_database_url
    run = uuid.uuid4().hex[:10]
    pids = [f"redeliver-{run}-{i}" for i in range(4)]
    await produce(kafka_brokers, env["TOPIC_PREFIX"] + "payment.created",
                  [(pid.encode(), created(pid, Decimal(f"{10 + i}.25")))
                   for i, pid in enumerate(pids)])
    await await_states(worker, dict.fromkeys(pids, "COMPLETED"))
    final = dict.fromkeys(pids, len(COMPLETED_PATH))
    await wait_sunk(url, final)

    records = await read_until(kafka_brokers, changed, state_changes(set(pids), 5), 30)
    # The sink has consumed everything there is (nothing more is in flight).
    written = await wait_metric(worker, "payment_sink_rows_written_total", len(records))
    assert written == len(records)
    states_before, history_before = await fetch_rows(url, pids)
    assert len(states_before) == len(pids) and len(history_before) == 5 * len(pids)
    assert_history_matches_events(history_before, records)

    # Every state change again, same key and bytes, newest first: the sink must not move
    # any payment back, nor add a row.
    again = [(r.key, r.value) for r in reversed(records)]
    await produce(kafka_brokers, changed, again)
    await wait_metric(worker, "payment_sink_rows_written_total", written + len(again))
    assert await fetch_rows(url, pids) == (states_before, history_before)

    # An old version alone (v2, FRAUD_CHECK) of a COMPLETED payment.
    old = next(r for r in records
               if codec.loads(r.value)["payment_id"] == pids[0]
               and codec.loads(r.value)["version"] == 2)
    await produce(kafka_brokers, changed, [(old.key, old.value)])
    await wait_metric(worker, "payment_sink_rows_written_total", written + len(again) + 1)
    states_after, history_after = await fetch_rows(url, pids)
    assert (states_after, history_after) == (states_before, history_before)
    assert states_after[0]["current_state"] == "COMPLETED" and states_after[0]["version"] == 5
    assert sink_dead_letters(worker) == 0


# --- (b) exact amounts -------------------------------------------------------------------


async def test_amounts_are_stored_exactly(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    env = worker_env(kafka_brokers)
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:10]
    # The simulator rejects amounts >= 10000 at the fraud check: the largest one ends REJECTED.
    # Decimals as the currency allows (ISO 4217 minor unit: USD 2, KWD 3, CLF 4, JPY 0).
    cases = {
        f"amount-{run}-a": ("0.1", COMPLETED_PATH, "USD"),
        f"amount-{run}-b": ("100.50", COMPLETED_PATH, "USD"),
        f"amount-{run}-c": ("99999999999.9999", REJECTED_PATH, "CLF"),
        f"amount-{run}-d": ("0.0001", COMPLETED_PATH, "CLF"),
        f"amount-{run}-e": ("0.3", COMPLETED_PATH, "USD"),  # 0.1 + 0.2 in binary floats
        f"amount-{run}-f": ("123456789012345.1234", REJECTED_PATH, "CLF"),  # the widest
        f"amount-{run}-g": ("1.005", COMPLETED_PATH, "KWD"),
        f"amount-{run}-h": ("5000", COMPLETED_PATH, "JPY"),
    }
    # Raw JSON with the amount written exactly as given (no re-encoding on our side).
    items = []
    for pid, (amount, _, currency) in cases.items():
        raw = created(pid, Decimal("1"), currency=currency).replace(
            b'"amount":1', b'"amount":' + amount.encode())
        assert f'"amount":{amount},'.encode() in raw
        items.append((pid.encode(), raw))
    await produce(kafka_brokers, env["TOPIC_PREFIX"] + "payment.created", items)
    await await_states(worker, {pid: path[-1] for pid, (_, path, _) in cases.items()})
    await wait_sunk(migrated_database_url,
                    {pid: len(path) for pid, (_, path, _) in cases.items()})
    states, _ = await fetch_rows(migrated_database_url, list(cases))
    for row in states:
        amount, path, currency = cases[row["payment_id"]]
        assert row["currency"] == currency
        assert row["amount"] == Decimal(amount), (row["payment_id"], row["amount"], amount)
        assert row["amount"].as_tuple().exponent == -4  # NUMERIC(19,4), never a float
        assert row["current_state"] == path[-1]

    # On the wire too: a JSON number equal to the input, never a string or a float.
    records = await read_until(
        kafka_brokers, env["TOPIC_PREFIX"] + "payment.state.changed",
        state_changes(set(cases), {pid: len(p) for pid, (_, p, _) in cases.items()}), 30)
    for r in records:
        event = codec.loads(r.value)
        # A JSON number: decimals decode to Decimal, a whole JPY amount to an int.
        assert isinstance(event["amount"], (Decimal, int)), r.value
        assert event["amount"] == Decimal(cases[event["payment_id"]][0])
        literal = re.search(rb'"amount":([^,}]*)', r.value)
        assert literal is not None and re.fullmatch(rb"[0-9]+(\.[0-9]+)?", literal[1]), r.value
        # One canonical form: exactly the currency's minor unit (100.5 USD is "100.50").
        places = {"USD": 2, "KWD": 3, "CLF": 4, "JPY": 0}[event["currency"]]
        assert -Decimal(event["amount"]).as_tuple().exponent == places, r.value


# --- (c) database down -------------------------------------------------------------------


class OwnPostgres:
    """The Postgres of a private Stack, which this test stops and restarts on the same port
    with the same data: the restarted server is started (and stopped) here, by PID."""

    def __init__(self, stack: Stack, url: str) -> None:
        self.stack = stack
        self.url = url
        self.data_dir: Path | None = None
        self.argv: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.bindir = postgres_bindir(stack.log)
        self.log_path = stack.run_dir / "postgres-restarted.log"

    async def inspect(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            self.data_dir = Path(await conn.fetchval("SHOW data_directory"))
        finally:
            await conn.close()
        # The exact command line the server was started with (Postgres writes it there).
        self.argv = shlex.split((self.data_dir / "postmaster.opts").read_text())

    def postmaster_pid(self) -> int | None:
        assert self.data_dir is not None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def ready(self) -> bool:
        port = self.argv[self.argv.index("-p") + 1]
        return subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", port]).returncode == 0

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT) of the running postmaster, by its PID; wait until gone."""
        pid = self.postmaster_pid()
        assert pid is not None, "postgres is not running"
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.postmaster_pid() is not None or self.ready():
            assert time.monotonic() < deadline, "postgres did not stop"
            time.sleep(0.05)
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
            self.proc = None

    def start(self, timeout: float = 30.0) -> None:
        """The same server again: same binary, data directory, port and options."""
        assert self.data_dir is not None and self.proc is None
        owner = self.data_dir.stat()
        as_other = os.geteuid() == 0 and owner.st_uid != 0  # Postgres refuses root
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.data_dir.parent,
                user=pwd.getpwuid(owner.st_uid).pw_name if as_other else None,
                group=owner.st_gid if as_other else None,
                extra_groups=[] if as_other else None,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited with {self.proc.returncode}:\n"
                                     f"{tail(self.log_path)}")
            assert time.monotonic() < deadline, f"postgres not ready:\n{tail(self.log_path)}"
            time.sleep(0.05)

    def kill_restarted(self) -> None:
        """Cleanup: the server this test started, by PID (its own process group)."""
        if self.proc is not None:
            stop_group(self.proc, signal.SIGINT, 15.0)  # SIGINT: PostgreSQL's fast shutdown


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OwnPostgres]:
    """A Postgres of our own (a second Stack), never the session's; stopped at the end."""
    monkeypatch.delenv("DATABASE_URL", raising=False)  # else Stack would reuse that server
    with Stack(run_dir=tmp_path / "own-stack") as stack:
        pg = OwnPostgres(stack, stack.postgres())
        try:
            yield pg
        finally:
            pg.kill_restarted()
    # Stack.stop() has stopped the original server (if still up) and removed its data.


async def test_database_outage_stops_nothing_and_the_sink_catches_up(
    kafka_brokers: str, own_postgres: OwnPostgres,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
    spawn_simulator: Callable[..., SimulatorProcess],
) -> None:
    pg = own_postgres
    url = pg.url
    assert await migrate(url)
    await pg.inspect()
    env = worker_env(kafka_brokers, DATABASE_URL=url)
    created_topic = env["TOPIC_PREFIX"] + "payment.created"
    spawn_simulator()
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:10]

    # Up: the sink writes to this database.
    before = [f"outage-{run}-up-{i}" for i in range(2)]
    await produce(kafka_brokers, created_topic,
                  [(p.encode(), created(p, Decimal("20.5"))) for p in before])
    await await_states(worker, dict.fromkeys(before, "COMPLETED"))
    await wait_sunk(url, dict.fromkeys(before, 5))
    rows_before = await fetch_rows(url, before)

    # Down: payments still move through the whole saga.
    pg.stop()
    down_at = time.monotonic()
    during = [f"outage-{run}-down-{i}" for i in range(8)]
    amounts = {p: Decimal(f"{i + 1}.0{i}") for i, p in enumerate(during)}
    await produce(kafka_brokers, created_topic,
                  [(p.encode(), created(p, amounts[p])) for p in during])
    bodies = await await_states(worker, dict.fromkeys(during, "COMPLETED"))
    moved_in = time.monotonic() - down_at
    for body in bodies.values():
        assert [h["state"] for h in body["history"]] == COMPLETED_PATH
    # The sink noticed and keeps retrying with backoff (it did not skip or drop the batch);
    # stay down for a few retries (0.2 + 0.4 + 0.8 + 1.6 s).
    await wait_metric(worker, "payment_sink_retries_total", 5, timeout=20)
    assert sink_dead_letters(worker) == 0
    assert pg.postmaster_pid() is None  # still down while the payments completed

    # Back, on the same port with the same data: the sink catches up.
    pg.start()
    back_at = time.monotonic()
    everyone = before + during
    await wait_sunk(url, dict.fromkeys(everyone, 5), timeout=40)
    caught_up_in = time.monotonic() - back_at
    states, history = await fetch_rows(url, everyone)
    # The rows written before the outage are untouched.
    assert [s for s in states if s["payment_id"] in before] == rows_before[0]
    assert [h for h in history if h["payment_id"] in before] == rows_before[1]
    for state in states:
        assert (state["current_state"], state["version"]) == ("COMPLETED", 5)
        if state["payment_id"] in amounts:
            assert state["amount"] == amounts[state["payment_id"]]
    by_payment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in history:
        by_payment[row["payment_id"]].append(row)
    for pid in everyone:
        assert [r["version"] for r in by_payment[pid]] == [1, 2, 3, 4, 5], pid
        assert [r["state"] for r in by_payment[pid]] == COMPLETED_PATH, pid
    records = await read_until(kafka_brokers, env["TOPIC_PREFIX"] + "payment.state.changed",
                               state_changes(set(everyone), 5), 30)
    assert_history_matches_events(history, records)
    print(f"\n[outage] {len(during)} payments COMPLETED {moved_in:.1f}s into the outage; "
          f"sink caught up {caught_up_in:.1f}s after Postgres came back")


# --- (d) rows PostgreSQL refuses ---------------------------------------------------------


def state_event(pid: str, version: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "payment_id": pid, "previous_state": None, "current_state": "NEW",
        "amount": Decimal("12.50"), "currency": "USD", "customer_id": "customer-1",
        "merchant_id": "merchant-1", "changed_at": "2026-12-01T10:00:00.000Z",
        "metadata": {}, "version": version, "event_id": f"{pid}:{version}",
    }
    event.update(overrides)
    return event


async def test_refused_rows_are_dead_lettered_and_good_rows_written(
    kafka_brokers: str, migrated_database_url: str,
    worker_env: Callable[..., dict[str, str]],
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    """One batch mixing good rows with rows PostgreSQL cannot store: the batch is split, the
    good rows are written, each bad one is on the sink dead-letter topic with the database's
    error, and the sink keeps going (nothing acked before written or dead-lettered)."""
    env = worker_env(kafka_brokers, SINK_BATCH_SIZE="500")
    prefix = env["TOPIC_PREFIX"]
    worker = spawn_worker(env)
    worker.wait_healthy()
    run = uuid.uuid4().hex[:10]
    good = [f"good-{run}-{i}" for i in range(40)]
    bad_nul, bad_exp, junk = f"nul-{run}", f"exp-{run}", f"junk-{run}"
    items: list[tuple[bytes | None, bytes]] = []
    for i, pid in enumerate(good):
        items.append((pid.encode(), codec.dumps(state_event(pid, 1))))
        if i == 10:  # jsonb cannot hold U+0000
            items.append((bad_nul.encode(), codec.dumps(
                state_event(bad_nul, 1, metadata={"reason": "a\u0000b"}))))
        if i == 25:  # NUMERIC cannot hold this exponent
            items.append((bad_exp.encode(), codec.dumps(
                state_event(bad_exp, 1, amount=Decimal("1e-1000027")))))
        if i == 30:
            items.append((junk.encode(), b"\xff not json"))
    await produce(kafka_brokers, prefix + "payment.state.changed", items)
    await wait_sunk(migrated_database_url, dict.fromkeys(good, 1))

    dlq = await read_until(kafka_brokers, prefix + "payment.state.changed.dlq",
                           lambda rs: len(rs) >= 3, 30)
    letters = {r.key.decode(): codec.loads(r.value) for r in dlq}
    assert len(dlq) == 3 and set(letters) == {bad_nul, bad_exp, junk}
    for letter in letters.values():
        assert letter["stage"] == "postgres_sink"
        assert letter["source_topic"] == prefix + "payment.state.changed"
        assert isinstance(letter["source_offset"], int)
    assert letters[bad_nul]["reason_code"] == "rejected_by_database"
    assert letters[bad_exp]["reason_code"] == "rejected_by_database"
    assert letters[junk]["reason_code"] == "undecodable"
    states, _ = await fetch_rows(migrated_database_url, [bad_nul, bad_exp])
    assert states == []
    assert sink_dead_letters(worker) == 3

    # The sink is alive and keeps writing.
    later = f"later-{run}"
    await produce(kafka_brokers, prefix + "payment.state.changed",
                  [(later.encode(), codec.dumps(state_event(later, 1)))])
    await wait_sunk(migrated_database_url, {later: 1})
    assert worker.get("/ready")[0] == 200
    # Everything on the topic is written or dead-lettered, and committed: no sink lag.
    deadline = time.monotonic() + 15
    while (lag := metric_samples(worker, "payment_sink_lag_records")) and \
            sum(lag.values()) != 0:
        assert time.monotonic() < deadline, lag
        await asyncio.sleep(0.2)
    assert len(lag) == 4  # one gauge per partition this (only) sink owns
