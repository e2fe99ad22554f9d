"""``load_settings``: defaults, required variables, malformed values and secrets (DESIGN §5)."""

from __future__ import annotations

import pytest

from orchestrator_app.config import (
    ALL_SERVICES,
    ConfigError,
    Settings,
    Topics,
    load_settings,
)

#: A minimal valid environment: the four servers the spec requires.
BASE = {
    "KAFKA_BROKERS": "localhost:9092",
    "DATABASE_URL": "postgres://orchestrator:pw@localhost:5432/payments",
    "REDIS_URL": "redis://localhost:6379",
    "NATS_URL": "nats://localhost:4222",
}


def load(**env: str) -> Settings:
    return load_settings(environ={**BASE, **env}, required=ALL_SERVICES)


def error_for(env: dict[str, str], required: tuple[str, ...] = ALL_SERVICES) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env, required=required)
    return info.value


# --- defaults ---------------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s.port == 8082
    assert s.fraud_timeout == 5.0
    assert s.processor_timeout == 10.0
    assert s.refund_timeout == 10.0
    assert s.retry_max_attempts == 3
    assert s.retry_initial_delay == 1.0
    assert s.retry_max_delay == 30.0
    assert s.retry_backoff_factor == 2.0
    assert s.breaker_failure_threshold == 5
    assert s.breaker_reset_timeout == 60.0
    assert s.breaker_half_open_max_requests == 1
    assert s.auto_process is True
    assert s.max_event_bytes == 65536
    assert s.jaeger_endpoint is None
    assert s.api_tokens == ()
    assert s.topics == Topics()
    assert s.topics.payment_created == "payment.created"
    assert s.topics.payment_created_dlq == "payment.created.dlq"
    assert s.topics.state_changed == "payment.state.changed"
    assert s.topics.commands == "orchestrator-commands"
    assert s.broker_session_timeout == 6.0 and s.broker_heartbeat_interval == 1.0
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    # Safe for a 3-broker cluster: any one broker may die without losing an acked write.
    assert (s.topic_replication_factor, s.topic_min_insync_replicas) == (3, 2)
    assert s.producer_acks == -1
    assert s.topic_config == {"min.insync.replicas": "2"}
    assert s.gc_gen0_threshold == 10000
    assert s.table_standby_buffer_size == 1000
    assert (s.consumer_fetch_max_wait_ms, s.consumer_fetch_min_bytes) == (50, 16384)
    assert s.nats_flush_delay == 0.020
    assert s.rocksdb_wal is False
    assert s.producer_unacked_max == 20000


def test_values_are_read() -> None:
    s = load(
        PORT="9000",
        FRAUD_CHECK_TIMEOUT_SECONDS="2.5",
        RETRY_MAX_ATTEMPTS="0",
        AUTO_PROCESS="false",
        RETRY_BACKOFF_FACTOR="1",
        API_TOKEN="a" * 16 + ", " + "b" * 20,
        JAEGER_ENDPOINT="http://jaeger:4318",
        LOG_LEVEL="debug",
        LOG_FORMAT="Text",
        TABLE_STORE="memory://",
        GC_GEN0_THRESHOLD="700",
        TABLE_STANDBY_BUFFER_SIZE="10",
        CONSUMER_FETCH_MIN_BYTES="32768",
        NATS_FLUSH_DELAY_MS="0",
        ROCKSDB_WAL="true",
        PRODUCER_UNACKED_MAX="500",
    )
    assert (s.nats_flush_delay, s.rocksdb_wal, s.producer_unacked_max) == (0.0, True, 500)
    assert load(NATS_FLUSH_DELAY_MS="100").nats_flush_delay == 0.1
    assert s.consumer_fetch_min_bytes == 32768
    assert s.gc_gen0_threshold == 700
    assert s.table_standby_buffer_size == 10
    assert s.log_format == "text"
    assert s.port == 9000
    assert s.fraud_timeout == 2.5
    assert s.retry_max_attempts == 0
    assert s.auto_process is False
    assert s.retry_backoff_factor == 1.0
    assert s.api_tokens == ("a" * 16, "b" * 20)
    assert s.jaeger_endpoint == "http://jaeger:4318"
    assert s.log_level == "DEBUG"
    assert s.table_store == "memory://"
    assert s.database_url == BASE["DATABASE_URL"]
    assert s.nats_url == "nats://localhost:4222"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), ("on", True),
     ("0", False), ("False", False), ("no", False), ("off", False)],
)
def test_booleans(raw: str, value: bool) -> None:
    assert load(AUTO_PROCESS=raw).auto_process is value


def test_blank_values_count_as_unset() -> None:
    assert load(PORT="  ").port == 8082
    with pytest.raises(ConfigError) as info:
        load(DATABASE_URL="   ")
    assert info.value.variable == "DATABASE_URL"


def test_nothing_required_means_empty_environment_is_fine() -> None:
    s = load_settings(environ={}, required=())
    assert s.kafka_brokers == ()
    assert s.broker_url == "kafka://localhost:9092"
    assert s.port == 8082


# --- required ---------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ALL_SERVICES)
def test_each_required_variable_missing(variable: str) -> None:
    env = {k: v for k, v in BASE.items() if k != variable}
    err = error_for(env)
    assert err.variable == variable
    assert variable in str(err)
    assert "required" in str(err)


def test_only_listed_variables_are_required() -> None:
    s = load_settings(environ={"DATABASE_URL": BASE["DATABASE_URL"]}, required=("DATABASE_URL",))
    assert s.database_url == BASE["DATABASE_URL"]
    assert error_for({}, required=("DATABASE_URL",)).variable == "DATABASE_URL"


def test_required_are_the_spec_servers() -> None:
    assert set(ALL_SERVICES) == {"KAFKA_BROKERS", "DATABASE_URL", "REDIS_URL", "NATS_URL"}


# --- malformed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("KAFKA_BROKERS", "nohost"),
        ("KAFKA_BROKERS", "host:"),
        ("KAFKA_BROKERS", "host:99999"),
        ("KAFKA_BROKERS", ","),
        ("KAFKA_BROKERS", "a:1,nohost"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "localhost:5432"),
        ("DATABASE_URL", "postgres://host:port/db"),
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_URL", "localhost:99999"),
        ("NATS_URL", "http://localhost:4222"),
        ("JAEGER_ENDPOINT", "jaeger:4318"),
        ("FRAUD_CHECK_TIMEOUT_SECONDS", "-1"),
        ("FRAUD_CHECK_TIMEOUT_SECONDS", "0"),
        ("FRAUD_CHECK_TIMEOUT_SECONDS", "nan"),
        ("FRAUD_CHECK_TIMEOUT_SECONDS", "inf"),
        ("FRAUD_CHECK_TIMEOUT_SECONDS", "5s"),
        ("PROCESSOR_TIMEOUT_SECONDS", "-0.1"),
        ("AUTO_PROCESS", "maybe"),
        ("RETRY_BACKOFF_FACTOR", "0.5"),
        ("RETRY_BACKOFF_FACTOR", "100"),
        ("RETRY_MAX_ATTEMPTS", "three"),
        ("RETRY_MAX_ATTEMPTS", "-1"),
        ("RETRY_INITIAL_DELAY_SECONDS", "60"),  # more than RETRY_MAX_DELAY_SECONDS (30)
        ("BREAKER_FAILURE_THRESHOLD", "0"),
        ("TOPIC_PARTITIONS", "four"),
        ("MAX_EVENT_BYTES", "-5"),
        ("API_TOKEN", "short"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("TABLE_STORE", "redis://"),
        ("APP_ID", "my app"),
        ("BROKER_HEARTBEAT_INTERVAL_SECONDS", "5"),  # more than a third of 6 s
        ("TOPIC_PREFIX", "bad prefix"),
        ("TOPIC_COMMANDS", "bad/topic"),
        ("TOPIC_REPLICATION_FACTOR", "0"),
        ("TOPIC_MIN_INSYNC_REPLICAS", "0"),
        ("TOPIC_MIN_INSYNC_REPLICAS", "4"),  # more than TOPIC_REPLICATION_FACTOR (3)
        ("PRODUCER_ACKS", "2"),
        ("PRODUCER_ACKS", "none"),
        ("GC_GEN0_THRESHOLD", "0"),
        ("GC_GEN0_THRESHOLD", "-1"),
        ("GC_GEN0_THRESHOLD", "lots"),
        ("TABLE_STANDBY_BUFFER_SIZE", "0"),
        ("TABLE_STANDBY_BUFFER_SIZE", "ten"),
        ("CONSUMER_FETCH_MIN_BYTES", "0"),
        ("CONSUMER_FETCH_MIN_BYTES", "32k"),
        ("CONSUMER_FETCH_MIN_BYTES", "52428801"),
        ("CONSUMER_FETCH_MIN_BYTES", "2147483648"),
        ("NATS_FLUSH_DELAY_MS", "-1"),
        ("NATS_FLUSH_DELAY_MS", "101"),
        ("NATS_FLUSH_DELAY_MS", "2.5"),
        ("ROCKSDB_WAL", "maybe"),
        ("PRODUCER_UNACKED_MAX", "0"),
    ],
)
def test_malformed_values_name_the_variable(variable: str, raw: str) -> None:
    err = error_for({**BASE, variable: raw})
    assert err.variable == variable
    assert str(err).startswith(f"{variable}: ")
    assert err.problem
    assert "\n" not in str(err)


def test_error_shows_the_bad_value() -> None:
    err = error_for({**BASE, "PORT": "abc"})
    assert "'abc'" in str(err)


def test_api_token_is_never_shown() -> None:
    err = error_for({**BASE, "API_TOKEN": "secret-but-short"[:10]})
    assert "secret-but" not in str(err)
    assert "<hidden>" in str(err)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://orchestrator:s3cr3t-pa55@db.internal:5432/payments",
        "postgres://orchestrator:s3cr3t-pa55@db.internal:99999/payments",
        "postgres://orchestrator:s3cr3t-pa55@db.internal:port/payments",
    ],
)
def test_database_password_never_appears_in_the_error(url: str) -> None:
    err = error_for({**BASE, "DATABASE_URL": url})
    assert err.variable == "DATABASE_URL"
    assert "s3cr3t-pa55" not in str(err)
    assert "s3cr3t-pa55" not in err.problem
    assert "s3cr3t-pa55" not in repr(err)


def test_redis_password_never_appears_in_the_error() -> None:
    err = error_for({**BASE, "REDIS_URL": "redis://:s3cr3t-pa55@cache:99999/0"})
    assert err.variable == "REDIS_URL"
    assert "s3cr3t-pa55" not in str(err)


# --- normalisation ----------------------------------------------------------------------


def test_redis_url_without_scheme_gets_one() -> None:
    assert load(REDIS_URL="localhost:6379").redis_url == "redis://localhost:6379"
    assert load(REDIS_URL="rediss://cache:6380/1").redis_url == "rediss://cache:6380/1"


@pytest.mark.parametrize(
    ("raw", "brokers", "url"),
    [
        ("a:1,b:2", ("a:1", "b:2"), "kafka://a:1;b:2"),
        ("a:1;b:2", ("a:1", "b:2"), "kafka://a:1;b:2"),
        (" a:1 , b:2 ", ("a:1", "b:2"), "kafka://a:1;b:2"),
        ("kafka://a:1", ("a:1",), "kafka://a:1"),
        ("localhost:9092", ("localhost:9092",), "kafka://localhost:9092"),
    ],
)
def test_kafka_brokers(raw: str, brokers: tuple[str, ...], url: str) -> None:
    s = load(KAFKA_BROKERS=raw)
    assert s.kafka_brokers == brokers
    assert s.broker_url == url


def test_nats_urls() -> None:
    assert load(NATS_URL="localhost:4222").nats_url == "nats://localhost:4222"
    assert load(NATS_URL="nats://a:4222,nats://b:4222").nats_url == "nats://a:4222,nats://b:4222"


def test_topic_prefix_applies_to_every_topic() -> None:
    s = load(TOPIC_PREFIX="run42-")
    defaults = Topics()
    for name in Topics.__dataclass_fields__:
        assert getattr(s.topics, name) == "run42-" + getattr(defaults, name)
    assert all(t.startswith("run42-") for t in s.topics.all())
    assert len(s.topics.all()) == len(Topics.__dataclass_fields__)


def test_topic_override_and_prefix() -> None:
    s = load(TOPIC_PREFIX="t.", TOPIC_COMMANDS="cmds")
    assert s.topics.commands == "t.cmds"
    assert s.topics.payment_created == "t.payment.created"


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_environment_is_not_read_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")
    assert load().port == 8082


# --- regressions: bugs found by these tests, fixed


def test_unparseable_url_gives_config_error() -> None:
    err = error_for({**BASE, "DATABASE_URL": "postgres://user:s3cr3t@[::1/payments"})
    assert err.variable == "DATABASE_URL"
    assert "s3cr3t" not in str(err)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("NATS_URL", "nats://a:first-pw@h1:4222,nats://b:s3cr3t-pa55@h2:99999"),
        ("REDIS_URL", "user:s3cr3t-pa55@localhost:99999"),
    ],
)
def test_passwords_never_appear_in_errors_of_other_urls(variable: str, raw: str) -> None:
    err = error_for({**BASE, variable: raw})
    assert err.variable == variable
    assert "s3cr3t-pa55" not in str(err)


# --- replication ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "acks"), [("all", -1), ("ALL", -1), ("-1", -1), ("1", 1),
                                           ("0", 0)])
def test_producer_acks(raw: str, acks: int) -> None:
    assert load(PRODUCER_ACKS=raw).producer_acks == acks


def test_one_broker_dev_settings() -> None:
    s = load(TOPIC_REPLICATION_FACTOR="1", TOPIC_MIN_INSYNC_REPLICAS="1")
    assert (s.topic_replication_factor, s.topic_min_insync_replicas) == (1, 1)
    assert s.topic_config == {"min.insync.replicas": "1"}


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    err = error_for({**BASE, "TOPIC_REPLICATION_FACTOR": "1"})  # min.insync stays 2
    assert err.variable == "TOPIC_MIN_INSYNC_REPLICAS"
    assert "TOPIC_REPLICATION_FACTOR" in err.problem


async def test_the_worker_consumer_gets_the_fetch_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust builds its consumer with fixed fetch values; ours replace them (app.py)."""
    import dataclasses

    from orchestrator_app import app as app_module

    monkeypatch.setattr(app_module, "settings", dataclasses.replace(
        app_module.settings, consumer_fetch_max_wait_ms=25, consumer_fetch_min_bytes=4096))
    thread = app_module.app.consumer._thread
    consumer = thread._create_worker_consumer(app_module.app.transport)
    try:
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (25, 4096)
    finally:
        await consumer.stop()  # never started: this only releases it
