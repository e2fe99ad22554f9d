"""The Faust application object, configured from `orchestrator_app.config`.

Only the `App` lives here; topics, tables, agents and views import it (never the other way
round), and `orchestrator_app.topology` imports them all so the worker has every piece.
"""

from __future__ import annotations

import logging
import socket

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from orchestrator_app.config import get_settings
from orchestrator_app.gcpolicy import freeze_and_tune_gc, observe_pauses
from orchestrator_app.logs import logging_config
from orchestrator_app.partitioning import partitioner
from orchestrator_app.supervision import guard_producer, on_agent_error

__all__ = ["app", "settings"]

settings = get_settings()

app = faust.App(
    settings.app_id,
    broker=settings.broker_url,
    store=settings.table_store,
    datadir=settings.data_dir,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    # Join a group within seconds, also on Tansu (DESIGN §7): it holds a join for half
    # the session timeout, so the 60 s default would keep a worker idle for 30 s.
    broker_session_timeout=settings.broker_session_timeout,
    broker_heartbeat_interval=settings.broker_heartbeat_interval,
    broker_rebalance_timeout=settings.broker_rebalance_timeout,
    consumer_auto_offset_reset="earliest",
    # Small linger and big batches: the producer batches the sends we do not await.
    producer_linger=settings.producer_linger,
    producer_max_batch_size=256 * 1024,
    # acks=all by default: with min.insync.replicas (set on every topic we create) a send
    # is acknowledged only once enough replicas hold it (PRODUCER_ACKS).
    producer_acks=settings.producer_acks,
    producer_partitioner=partitioner,
    web_bind=settings.web_bind,
    web_port=settings.port,
    web_host=settings.web_host or socket.gethostname(),
    # Payment data leaves only through our own API: no table browsing, no debug pages.
    web_tables_enabled=False,
    web_stats_enabled=False,
    web_graph_enabled=False,
    web_router_enabled=False,
    web_metrics_enabled=False,
    table_standby_replicas=settings.table_standby_replicas,
    store_check_exists=True,
    # The worker applies it when it starts: Faust's lines and ours in one format (logs.py).
    logging_config=logging_config(settings.log_format, settings.log_level),
)


# Faust's default hook commits the crashed agent's offsets and leaves the worker running
# with the agent gone; ours reports the crash and exits non-zero (see supervision).
app._on_agent_error = on_agent_error  # type: ignore[method-assign]
# A record the broker refused must never be committed past (see supervision).
guard_producer(app.producer)
# Faust stalls every stream once 100 sends are buffered and then drains them one by one,
# each with its own 0.1 s wait: a payment's 5 events and its changelog write made that the
# common case under load ("producer buffer full"). A larger bound keeps the backpressure.
app.producer.buffer.max_messages = settings.producer_buffer_max

_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _with_fetch_settings(thread: faust_aiokafka.AIOKafkaConsumerThread,
                         transport: object) -> object:
    """Faust's worker consumer with our fetch wait and minimum instead of its fixed 1.5 s and
    1 byte (see config: ``CONSUMER_FETCH_MAX_WAIT_MS``, ``CONSUMER_FETCH_MIN_BYTES``);
    aiokafka reads the attributes when the consumer starts."""
    consumer = _create_worker_consumer(thread, transport)
    consumer._fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    consumer._fetch_min_bytes = settings.consumer_fetch_min_bytes
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _with_fetch_settings  # type: ignore[method-assign,assignment]


@app.task
async def set_log_levels() -> None:
    """Set logger levels explicitly once the worker has configured logging.

    Faust's worker can leave the root logger at DEBUG (its progress spinner does), and then
    every ``logger.debug`` in Faust and aiokafka builds a record: measured at ~8-13 % of a
    busy worker's CPU (DESIGN §7).
    """
    level = logging.getLevelName(settings.log_level)
    logging.getLogger().setLevel(level)
    for name in ("orchestrator_app", "agents", "tables"):
        logging.getLogger(name).setLevel(level)
    quiet = max(level, logging.INFO)
    for name in ("faust", "mode", "aiokafka", "kafka", "aiohttp", "nats"):
        logging.getLogger(name).setLevel(max(quiet, logging.WARNING)
                                         if name in ("aiokafka", "kafka") else quiet)


@app.task
async def tune_gc() -> None:
    """Freeze what start-up built, then collect less often (``GC_GEN0_THRESHOLD``).

    Measured (bench.py, two workers at 200 payments/s, `gc.callbacks` timing): with
    Python's defaults a worker spent ~6 % of its CPU collecting, and each generation-2
    collection walked every object it holds (Faust's, aiokafka's, every module's) for
    100-170 ms, several times a run. Frozen, those objects are never walked again.
    Every pause is timed from the start (``python_gc_pause_seconds``, by generation).
    """
    observe_pauses()
    await app.tables.recovery.completed.wait()
    freeze_and_tune_gc(settings.gc_gen0_threshold)


@app.task
async def start_tracing() -> None:
    """Export traces when JAEGER_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT) is set."""
    if settings.trace_endpoint:
        from orchestrator_app.telemetry import setup_tracing

        setup_tracing(settings.trace_endpoint)

