"""Every setting of the orchestrator, read once from the environment and validated.

Why one module: operators look in one place for what can be tuned, and a bad value must
stop the process at start-up (exit code 2, one line naming the variable) rather than
surface as a confusing error minutes later inside an agent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "ALL_SERVICES",
    "ConfigError",
    "Settings",
    "Topics",
    "get_settings",
    "load_settings",
]

T = TypeVar("T")

#: The four servers the spec lists as required; commands may need fewer of them.
ALL_SERVICES = ("KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL")


class ConfigError(Exception):
    """A configuration value is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Topics:
    """Kafka topic names. Internal topics share the partition count (co-partitioning)."""

    payment_created: str = "payment.created"
    payment_created_dlq: str = "payment.created.dlq"
    #: Inputs other agents could not process (stage, reason, source position).
    dead_letters: str = "orchestrator-dead-letters"
    #: State changes PostgreSQL refused (with the database's error).
    sink_dlq: str = "payment.state.changed.dlq"
    state_changed: str = "payment.state.changed"
    notifications: str = "payment.notifications"
    commands: str = "orchestrator-commands"

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Durations are seconds (float)."""

    kafka_brokers: tuple[str, ...] = ()
    database_url: str = ""
    redis_url: str = ""
    nats_url: str = ""
    #: How long the NATS client holds its pending requests before writing them (seconds).
    nats_flush_delay: float = 0.020
    jaeger_endpoint: str | None = None
    #: The standard OpenTelemetry variable; used when JAEGER_ENDPOINT is unset.
    otlp_endpoint: str | None = None
    port: int = 8082
    #: Address the web server binds to.
    web_bind: str = "0.0.0.0"
    #: Host name other replicas use to reach this one (table routing); default: hostname.
    web_host: str = ""
    app_id: str = "payment-orchestrator"
    data_dir: str = "data"
    table_store: str = "rocksdb://"
    topic_partitions: int = 4
    #: Replicas of every topic the worker creates (changelogs included). 3 with
    #: min.insync 2 and acks=all: a record the producer saw acknowledged survives the loss
    #: of any one broker, and the cluster keeps taking writes while one is down. A
    #: one-broker dev cluster needs 1 and 1 (the dev stack sets them).
    topic_replication_factor: int = 3
    #: ``min.insync.replicas`` set on every topic the worker creates: with acks=all a write
    #: succeeds only once this many replicas have it (else the broker refuses it).
    topic_min_insync_replicas: int = 2
    #: Producer acknowledgements, Faust's form: -1 (``all``: every in-sync replica), 1 (the
    #: leader only), 0 (none). Anything but ``all`` can lose acknowledged records when a
    #: leader dies, whatever the replication factor.
    producer_acks: int = -1
    topics: Topics = field(default_factory=Topics)
    fraud_timeout: float = 5.0
    processor_timeout: float = 10.0
    refund_timeout: float = 10.0
    retry_max_attempts: int = 3
    retry_initial_delay: float = 1.0
    retry_max_delay: float = 30.0
    retry_backoff_factor: float = 2.0
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 60.0
    breaker_half_open_max_requests: int = 1
    auto_process: bool = True
    #: Watchdog: a payment waiting longer than this in FRAUD_CHECK (→ MANUAL_REVIEW),
    #: PROCESSING (→ retryable timeout) or for a refund answer. Far above the NATS timeouts:
    #: it catches lost requests, and must not fire on an ordinary backlog.
    watchdog_seconds: float = 300.0
    #: Concurrent NATS calls per worker, per downstream.
    fraud_concurrency: int = 256
    processor_concurrency: int = 256
    #: Largest batch the Postgres sink writes in one transaction.
    sink_batch_size: int = 500
    #: How long the producer waits to fill a batch (seconds). Fewer, fuller produce
    #: requests cost the broker far less CPU per record (DESIGN §7); every send that
    #: must be durable before a commit is flushed anyway, so this adds latency only.
    #: Measured (bench.py, one worker): 5 -> 20 ms gave +25-47 % payments/s and half the
    #: broker's CPU per payment; 50 ms gained nothing more and tripled the p99 at half peak.
    producer_linger: float = 0.020
    #: How long a payment row whose effects are on the broker may wait before it is
    #: written (store and changelog): versions of a payment released within it are written
    #: once, as the newest (a payment's 3 versions usually become 1). Flushes (commits,
    #: revocations) write what waits at once.
    row_write_delay: float = 0.1
    #: How long a fetch may wait at the broker for new records (ms), and for how many bytes
    #: (below). Faust hard-codes 1500 ms: a partition that had buffered records when a
    #: fetch was sent waits for that fetch to return, so with standby changelogs in the
    #: same consumer, payments waited ~1.2 s on average between payment.created and the
    #: saga (DESIGN §7, measured). Returning with the first record (1 byte, Kafka's
    #: default) made every changelog write of the other worker a fetch of its own;
    #: 16 KiB or 50 ms batches a steady load into fewer fetches. Measured (README run J,
    #: paired against 1 byte / 100 ms): peak x1.06-1.63 in four rounds, the broker's CPU
    #: per payment halved, p99 at 200/s 136 and 291 ms against 236 and 581; at 20/s the
    #: window costs ~25 ms (p50 57 against 33 ms).
    consumer_fetch_max_wait_ms: int = 50
    consumer_fetch_min_bytes: int = 16384
    #: Buffered sends after which Faust pauses the streams until the producer catches up.
    producer_buffer_max: int = 2000
    #: The saga's state changes and notifications sent and not yet acknowledged, after which
    #: the agents wait (they skip Faust's buffer: `orchestrator_app.clients.kafka_lane`).
    producer_unacked_max: int = 20000
    max_event_bytes: int = 65536
    api_tokens: tuple[str, ...] = ()
    #: Tokens that may only read (GET /payments); API_TOKEN tokens may read too.
    api_read_tokens: tuple[str, ...] = ()
    #: Failed authentications per remote address per minute before 429.
    api_auth_failure_limit: int = 20
    #: The ingest agent applies a CREATE itself when payment.created is co-partitioned with
    #: the commands topic (the CLI turns this off at start-up when the partition counts
    #: differ); otherwise every event is re-keyed through the commands topic.
    ingest_direct: bool = True
    #: Table standby replicas: a survivor takes over a partition with warm state.
    table_standby_replicas: int = 1
    #: Standby changelog records a worker holds before it writes them to its copy in one
    #: batch (Faust's default: 1000, the recovery batch). Smaller batches did not change
    #: the latency tail in paired runs, and no GC pause explains it (README, runs H and I).
    table_standby_buffer_size: int = 1000
    #: RocksDB block cache of each table partition's database, in MiB. Faust's default is
    #: 2 GiB per database: a worker that read its whole table once (the timer rebuild after
    #: a rebalance did) grew by the table's size.
    rocksdb_block_cache_mb: int = 32
    #: RocksDB's write-ahead log for the tables. Off: the changelog topic is what a table is
    #: recovered from, so the log only cost a write() per row and per persisted offset.
    rocksdb_wal: bool = False
    #: Python's generation-0 collection threshold once the worker has started (its default
    #: is 700). A worker allocates objects for every record, so with 700 it collected
    #: ~50 times a second; collections are rarer and their total cost smaller with more.
    gc_gen0_threshold: int = 10000
    #: Processor circuit-breaker waits per payment before it is compensated.
    max_circuit_waits: int = 10
    #: Command API requests per client per minute.
    api_rate_limit: int = 600
    #: How long an Idempotency-Key is remembered (Stripe: 24 h).
    idempotency_ttl: int = 86400
    broker_session_timeout: float = 6.0
    broker_heartbeat_interval: float = 1.0
    broker_rebalance_timeout: float = 10.0
    log_level: str = "INFO"
    #: ``json``: one JSON object per line, Faust's lines included (orchestrator_app.logs);
    #: ``text``: Faust's own format (``make run`` uses it).
    log_format: str = "json"

    @property
    def broker_url(self) -> str:
        """Faust's broker URL form: ``kafka://h1:p1;h2:p2``."""
        return "kafka://" + ";".join(self.kafka_brokers or ("localhost:9092",))

    @property
    def topic_config(self) -> dict[str, str]:
        """Topic-level configs of every topic the worker creates (changelogs included)."""
        return {"min.insync.replicas": str(self.topic_min_insync_replicas)}

    @property
    def trace_endpoint(self) -> str | None:
        """Where spans go: JAEGER_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT; None: off."""
        return self.jaeger_endpoint or self.otlp_endpoint


# --- parsers: each takes the raw string and returns a value or raises ValueError ---------


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number") from None


def _non_negative_int(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_int(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def _positive_seconds(raw: str) -> float:
    value = _float(raw)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _milliseconds(raw: str) -> float:
    value = _int(raw)
    if not 0 <= value <= 1000:
        raise ValueError("must be a whole number of milliseconds from 0 to 1000")
    return value / 1000


def _fetch_wait(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= 30_000:
        raise ValueError("must be a whole number of milliseconds from 1 to 30000")
    return value


#: aiokafka's ``fetch_max_bytes``: a fetch that waits for more than it may return always
#: waits the whole window.
_FETCH_MAX_BYTES = 52_428_800


def _flush_delay(raw: str) -> float:
    """Milliseconds, 0 to 100, as seconds: more would stall every NATS call by that much."""
    value = _int(raw)
    if not 0 <= value <= 100:
        raise ValueError("must be a whole number of milliseconds from 0 to 100")
    return value / 1000


def _fetch_min_bytes(raw: str) -> int:
    value = _int(raw)
    if not 1 <= value <= _FETCH_MAX_BYTES:
        raise ValueError(f"must be a whole number of bytes from 1 to {_FETCH_MAX_BYTES}")
    return value


def _factor(raw: str) -> float:
    value = _float(raw)
    if not 1.0 <= value < 100.0:
        raise ValueError("must be a number from 1 to 100")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def _brokers(raw: str) -> tuple[str, ...]:
    """Accepts ``h:p,h:p`` (the spec's form), with or without a ``kafka://`` prefix."""
    items = [item.strip() for item in re.split(r"[,;]", raw) if item.strip()]
    if not items:
        raise ValueError("must list at least one host:port")
    result = []
    for item in items:
        item = item.removeprefix("kafka://")
        if not _HOST_PORT.match(item):
            raise ValueError(f"{item!r} is not host:port")
        _port(item.rsplit(":", 1)[1])
        result.append(item)
    return tuple(result)


def _url(*schemes: str, add_scheme: str | None = None) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if add_scheme and "://" not in value:
            value = f"{add_scheme}://{value}"  # the spec's REDIS_URL example is "localhost:6379"
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            allowed = " or ".join(f"{scheme}://" for scheme in schemes)
            raise ValueError(f"must be a URL starting with {allowed}")
        if not parts.hostname and not parts.path:
            raise ValueError("has no host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"has a bad port ({exc})") from None
        return value

    return parse


def _nats_urls(raw: str) -> str:
    parse = _url("nats", "tls", add_scheme="nats")
    return ",".join(parse(item) for item in raw.split(",") if item.strip())


def _tokens(raw: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    if any(len(t) < 16 for t in tokens):
        raise ValueError("every token must be at least 16 characters")
    return tokens


def _topic_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._\-]{1,200}", raw):
        raise ValueError("must be 1-200 characters of letters, digits, '.', '_' or '-'")
    return raw


def _acks(raw: str) -> int:
    value = raw.strip().lower()
    if value in {"all", "-1"}:
        return -1
    if value in {"0", "1"}:
        return int(value)
    raise ValueError("must be all, 1 or 0")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _log_format(raw: str) -> str:
    fmt = raw.strip().lower()
    if fmt not in {"json", "text"}:
        raise ValueError("must be json or text")
    return fmt


def _store(raw: str) -> str:
    if raw not in {"rocksdb://", "memory://"}:
        raise ValueError("must be rocksdb:// or memory://")
    return raw


#: variable -> (settings field, parser). Defaults live on the dataclass.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "KAFKA_BROKERS": ("kafka_brokers", _brokers),
    "DATABASE_URL": ("database_url", _url("postgres", "postgresql")),
    "REDIS_URL": ("redis_url", _url("redis", "rediss", add_scheme="redis")),
    "NATS_URL": ("nats_url", _nats_urls),
    "NATS_FLUSH_DELAY_MS": ("nats_flush_delay", _flush_delay),
    "JAEGER_ENDPOINT": ("jaeger_endpoint", _url("http", "https")),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("otlp_endpoint", _url("http", "https")),
    "PORT": ("port", _port),
    "WEB_BIND": ("web_bind", str),
    "WEB_HOST": ("web_host", str),
    "APP_ID": ("app_id", _topic_name),
    "DATA_DIR": ("data_dir", str),
    "TABLE_STORE": ("table_store", _store),
    "TOPIC_PARTITIONS": ("topic_partitions", _positive_int),
    "TOPIC_REPLICATION_FACTOR": ("topic_replication_factor", _positive_int),
    "TOPIC_MIN_INSYNC_REPLICAS": ("topic_min_insync_replicas", _positive_int),
    "PRODUCER_ACKS": ("producer_acks", _acks),
    "FRAUD_CHECK_TIMEOUT_SECONDS": ("fraud_timeout", _positive_seconds),
    "PROCESSOR_TIMEOUT_SECONDS": ("processor_timeout", _positive_seconds),
    "REFUND_TIMEOUT_SECONDS": ("refund_timeout", _positive_seconds),
    "RETRY_MAX_ATTEMPTS": ("retry_max_attempts", _non_negative_int),
    "RETRY_INITIAL_DELAY_SECONDS": ("retry_initial_delay", _positive_seconds),
    "RETRY_MAX_DELAY_SECONDS": ("retry_max_delay", _positive_seconds),
    "RETRY_BACKOFF_FACTOR": ("retry_backoff_factor", _factor),
    "BREAKER_FAILURE_THRESHOLD": ("breaker_failure_threshold", _positive_int),
    "BREAKER_RESET_TIMEOUT_SECONDS": ("breaker_reset_timeout", _positive_seconds),
    "BREAKER_HALF_OPEN_MAX_REQUESTS": ("breaker_half_open_max_requests", _positive_int),
    "AUTO_PROCESS": ("auto_process", _bool),
    "WATCHDOG_SECONDS": ("watchdog_seconds", _positive_seconds),
    "FRAUD_CONCURRENCY": ("fraud_concurrency", _positive_int),
    "PROCESSOR_CONCURRENCY": ("processor_concurrency", _positive_int),
    "SINK_BATCH_SIZE": ("sink_batch_size", _positive_int),
    "PRODUCER_LINGER_MS": ("producer_linger", _milliseconds),
    "ROW_WRITE_DELAY_MS": ("row_write_delay", _milliseconds),
    "CONSUMER_FETCH_MAX_WAIT_MS": ("consumer_fetch_max_wait_ms", _fetch_wait),
    "CONSUMER_FETCH_MIN_BYTES": ("consumer_fetch_min_bytes", _fetch_min_bytes),
    "PRODUCER_BUFFER_MAX": ("producer_buffer_max", _positive_int),
    "PRODUCER_UNACKED_MAX": ("producer_unacked_max", _positive_int),
    "MAX_EVENT_BYTES": ("max_event_bytes", _positive_int),
    "API_TOKEN": ("api_tokens", _tokens),
    "API_READ_TOKEN": ("api_read_tokens", _tokens),
    "API_AUTH_FAILURES_PER_MINUTE": ("api_auth_failure_limit", _positive_int),
    "API_RATE_LIMIT_PER_MINUTE": ("api_rate_limit", _positive_int),
    "TABLE_STANDBY_REPLICAS": ("table_standby_replicas", _non_negative_int),
    "TABLE_STANDBY_BUFFER_SIZE": ("table_standby_buffer_size", _positive_int),
    "ROCKSDB_BLOCK_CACHE_MB": ("rocksdb_block_cache_mb", _positive_int),
    "ROCKSDB_WAL": ("rocksdb_wal", _bool),
    "GC_GEN0_THRESHOLD": ("gc_gen0_threshold", _positive_int),
    "INGEST_DIRECT": ("ingest_direct", _bool),
    "MAX_CIRCUIT_WAITS": ("max_circuit_waits", _positive_int),
    "IDEMPOTENCY_TTL_SECONDS": ("idempotency_ttl", _positive_int),
    "BROKER_SESSION_TIMEOUT_SECONDS": ("broker_session_timeout", _positive_seconds),
    "BROKER_HEARTBEAT_INTERVAL_SECONDS": ("broker_heartbeat_interval", _positive_seconds),
    "BROKER_REBALANCE_TIMEOUT_SECONDS": ("broker_rebalance_timeout", _positive_seconds),
    "LOG_LEVEL": ("log_level", _log_level),
    "LOG_FORMAT": ("log_format", _log_format),
}

#: TOPIC_<NAME> overrides one topic; TOPIC_PREFIX prefixes all (test runs use it to isolate).
_TOPIC_VARIABLES = {f"TOPIC_{f.name.upper()}": f.name for f in fields(Topics)}


def load_settings(
    environ: Mapping[str, str] | None = None,
    required: tuple[str, ...] = ALL_SERVICES,
) -> Settings:
    """Build `Settings` from the environment; raise `ConfigError` for the first bad value."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable, (name, parse) in _VARIABLES.items():
        raw = env.get(variable)
        if raw is None or raw.strip() == "":
            if variable in required:
                raise ConfigError(variable, "required but not set")
            continue
        try:
            values[name] = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(variable, f"{exc} (got {_shown(variable, raw)})") from None

    prefix = env.get("TOPIC_PREFIX", "")
    if prefix and not re.fullmatch(r"[A-Za-z0-9._\-]{1,100}", prefix):
        raise ConfigError("TOPIC_PREFIX", "must be letters, digits, '.', '_' or '-'")
    topic_names = {}
    for variable, name in _TOPIC_VARIABLES.items():
        raw = env.get(variable) or getattr(Topics, name)
        try:
            topic_names[name] = prefix + _topic_name(raw)
        except ValueError as exc:
            raise ConfigError(variable, str(exc)) from None
    values["topics"] = Topics(**topic_names)

    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _shown(variable: str, raw: str) -> str:
    """Never echo a secret (a token, a password inside a URL) into a log line."""
    if variable in ("API_TOKEN", "API_READ_TOKEN"):
        return "<hidden>"
    # Mask every userinfo part ("user:password@"), in each URL of a list, without parsing
    # (a value that failed to parse may fail to parse again).
    return repr(_USERINFO.sub("***@", raw))


_USERINFO = re.compile(r"[^/@,]+@")


def _check_consistency(s: Settings) -> None:
    if s.topic_min_insync_replicas > s.topic_replication_factor:
        raise ConfigError(
            "TOPIC_MIN_INSYNC_REPLICAS",
            f"must not exceed TOPIC_REPLICATION_FACTOR (got {s.topic_min_insync_replicas} > "
            f"{s.topic_replication_factor}): no write could ever be acknowledged",
        )
    if s.retry_initial_delay > s.retry_max_delay:
        raise ConfigError(
            "RETRY_INITIAL_DELAY_SECONDS", "must not exceed RETRY_MAX_DELAY_SECONDS"
        )
    if s.broker_heartbeat_interval * 3 > s.broker_session_timeout:
        raise ConfigError(
            "BROKER_HEARTBEAT_INTERVAL_SECONDS",
            "must be at most a third of BROKER_SESSION_TIMEOUT_SECONDS",
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once.

    Formats are validated here; which servers are *required* depends on the command, so the
    CLI checks that first (``migrate`` needs only ``DATABASE_URL``, ``worker`` needs all).
    """
    return load_settings(required=())
