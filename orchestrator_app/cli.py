"""Entry point of the ``payment-orchestrator`` command: Faust's CLI with our commands.

Configuration is validated *before* the app is built, so a bad setting ends the process
with exit code 2 and one line naming the variable, not a traceback from deep in Faust.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from orchestrator_app.config import ALL_SERVICES, ConfigError, Settings, load_settings

__all__ = ["main"]

#: Servers each command needs; commands not listed need all of them.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "migrate": ("DATABASE_URL",),
}
#: Commands that only print (help, version): nothing is required.
_INFORMATIONAL = {"", "--help", "-h", "--version", "help"}


def _subcommand(argv: Sequence[str]) -> str:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
        if arg in _INFORMATIONAL:
            return arg
    return ""


def _say(settings: Settings, level: int, message: str) -> None:
    """A worker's line on stderr before Faust configured logging: in the worker's format."""
    if settings.log_format == "json":
        from orchestrator_app.logs import JsonFormatter

        record = logging.LogRecord(__name__, level, __file__, 0, message, None, None)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(f"payment-orchestrator: {message}", file=sys.stderr, flush=True)


def _prepare_topics(settings: Settings) -> None:
    """Every topic must exist before the consumer subscribes (see kafka_admin)."""
    import asyncio

    from orchestrator_app.kafka_admin import TooFewBrokers, ensure_topics, partition_count

    try:
        asyncio.run(ensure_topics(
            settings, warn=lambda line: _say(settings, logging.WARNING, line)))
        created = asyncio.run(partition_count(settings, settings.topics.payment_created))
    except TooFewBrokers as exc:  # a setting that does not fit the cluster: like a bad one
        _say(settings, logging.CRITICAL, str(exc))
        sys.exit(2)
    except TimeoutError as exc:
        _say(settings, logging.CRITICAL, str(exc))
        sys.exit(1)
    if settings.ingest_direct and created != settings.topic_partitions:
        # The saga may read payment.created itself only when its partition p holds the
        # payments of commands partition p; otherwise every event takes the re-keying hop.
        _say(settings, logging.WARNING,
             f"{settings.topics.payment_created} has {created} partitions, not "
             f"TOPIC_PARTITIONS={settings.topic_partitions}: events are re-keyed through the "
             "commands topic")
        os.environ["INGEST_DIRECT"] = "false"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = _subcommand(args)
    required = () if command in _INFORMATIONAL else _REQUIRED.get(command, ALL_SERVICES)
    try:
        settings = load_settings(required=required)
    except ConfigError as exc:
        print(f"payment-orchestrator: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)

    if command == "worker":
        _prepare_topics(settings)
        # uvloop: less CPU per event (DESIGN §7). Faust reads FAUST_LOOP when imported,
        # which is just below; FAUST_LOOP=aio keeps asyncio's own loop.
        os.environ.setdefault("FAUST_LOOP", "uvloop")
        if settings.log_format == "json" and "--no-quiet" not in args:
            # Faust's banner is a table on stdout, not a log line: every line stays JSON.
            args.insert(0, "--quiet")

    from orchestrator_app import commands, topology  # noqa: F401 - registers everything

    app = topology.load()
    sys.argv = [sys.argv[0], *args]
    app.main()
