"""HTTP endpoints served by every worker's Faust web server.

The state view is table-routed: a request for a payment whose partition another replica
owns is forwarded to that replica, so any replica answers for any payment. The listing
(``GET /payments``) reads PostgreSQL, which every replica shares: it needs no routing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from faust import web
from prometheus_client.core import GaugeMetricFamily
from yarl import URL

from orchestrator_app import metrics, supervision
from orchestrator_app.app import app, settings
from orchestrator_app.auth import ApiError, authorize, check_rate
from orchestrator_app.clients.postgres import CONNECTION_ERRORS
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Payment
from orchestrator_app.listing import ListingError, encode_cursor, parse_list_query, single_values
from orchestrator_app.resources import payment_store
from tables.payments import payments

__all__ = [
    "FORWARDED",
    "Unavailable",
    "check_local_reads",
    "forward",
    "health",
    "list_payments",
    "owner_of",
    "payment_state",
    "prometheus_metrics",
    "ready",
    "recovering",
    "routed",
    "state_view",
]

SERVICE_NAME = "payment-orchestrator"
JSON = "application/json"


def state_view(payment: Payment) -> dict[str, Any]:
    """The spec's ``GET /payments/{id}/state`` body."""
    return {
        "payment_id": payment.payment_id,
        "current_state": payment.state,
        "previous_state": payment.previous_state,
        "updated_at": payment.updated_at,
        "metadata": payment.metadata,
        "history": [
            {"state": entry.state, "timestamp": entry.timestamp}
            for entry in sorted(payment.history, key=lambda e: e.version)
        ],
    }


def json_response(view: web.View, body: Any, status: int = 200) -> web.Response:
    """Exact decimals (fraud scores, amounts) stay JSON numbers."""
    return view.bytes(codec.dumps(body), content_type=JSON, status=status)


def error(view: web.View, status: int, code: str, message: str, **extra: Any) -> web.Response:
    return json_response(view, {"error": code, "message": message, **extra}, status=status)


@app.page("/health")
async def health(self: web.View, request: web.Request) -> web.Response:
    """Liveness, in the spec's exact shape; 503 once an agent crashed (the worker is about
    to exit): never a live-looking worker with a dead agent."""
    problems = supervision.problems()
    if problems:
        return json_response(self, {"status": "failing", "service": SERVICE_NAME,
                                    "problems": problems}, status=503)
    return self.json({"status": "ok", "service": SERVICE_NAME})


def recovering() -> bool:
    """Partitions moving or tables still recovering: local reads may miss payments."""
    return bool(app.rebalancing) or not app.tables.recovery.completed.is_set()


@app.page("/ready")
async def ready(self: web.View, request: web.Request) -> web.Response:
    """Readiness: partitions assigned, tables recovered, every agent alive."""
    problems = supervision.problems()
    if problems:
        return error(self, 503, "not_ready", "; ".join(problems))
    if recovering():
        return error(self, 503, "not_ready", "worker is recovering or rebalancing")
    return self.json({"status": "ready", "service": SERVICE_NAME})


#: Marks a request one replica forwarded to another (a second hop means ownership moved).
FORWARDED = "X-Orchestrator-Forwarded"
#: Request headers a forwarded request keeps, and response headers it brings back.
_REQUEST_HEADERS = ("Authorization", "Idempotency-Key", "Content-Type")
_RESPONSE_HEADERS = ("Retry-After", "Location", "Idempotent-Replayed", "WWW-Authenticate")


class Unavailable(Exception):
    """The replica owning the payment cannot be known or reached right now (→ 503)."""


def owner_of(payment_id: str) -> URL | None:
    """The URL of the replica owning the payment's partition; None when it is this one."""
    try:
        dest = app.router.key_store(payments.name, payment_id)
    except (KeyError, TypeError):  # no assignment yet (starting, rebalancing)
        raise Unavailable("partition owners not known yet") from None
    here = URL(str(app.conf.canonical_url))
    if (dest.host, dest.port) == (here.host, here.port):
        return None
    return dest


async def forward(view: web.View, request: web.Request, dest: URL, body: bytes) -> web.Response:
    """Send the request (method, body, the headers that matter) to its owner; relay back."""
    if request.headers.get(FORWARDED):
        raise Unavailable("partition ownership is moving")
    headers = {name: request.headers[name] for name in _REQUEST_HEADERS
               if name in request.headers}
    headers[FORWARDED] = "1"
    url = dest.with_path(request.path).with_query(request.query)
    try:
        async with app.http_client.request(request.method, url, data=body or None,
                                           headers=headers) as response:
            out = view.bytes(await response.read(), status=response.status,
                             content_type=response.content_type or JSON)
            for name in _RESPONSE_HEADERS:
                if name in response.headers:
                    out.headers[name] = response.headers[name]
            return out
    except (aiohttp.ClientError, OSError):
        raise Unavailable("the replica owning this payment is not reachable") from None


def unavailable(view: web.View, exc: Unavailable) -> web.Response:
    response = error(view, 503, "unavailable", f"{exc}; retry")
    response.headers["Retry-After"] = "1"
    return response


async def routed(
    view: web.View, request: web.Request, payment_id: str,
    local: Callable[[], Awaitable[web.Response]],
) -> web.Response:
    """Answer here if this replica owns the payment's partition, else forward the request.

    Like Faust's ``table_route``, but it forwards bodies too (Faust's drops them), and a
    replica that does not know or cannot reach the owner answers 503 JSON, not HTML 500.
    """
    try:
        dest = owner_of(payment_id)
        if dest is not None:
            return await forward(view, request, dest, await request.read())
        check_local_reads()
    except Unavailable as exc:
        return unavailable(view, exc)
    return await local()


def check_local_reads() -> None:
    """Raise `Unavailable` while this replica's tables may not hold every payment it owns
    (recovery, rebalance): a 503 with Retry-After, never a 404 for a payment that exists."""
    if recovering():
        raise Unavailable("this replica is recovering its partitions")


class ConsumerLagCollector:
    """``kafka_consumer_lag{topic}`` at scrape time, from Faust's monitor: the end offsets
    it tracks come from the fetch responses' high watermark (right on Tansu too, unlike
    ListOffsets — DESIGN §7), minus the committed (else the next unread) offset."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kafka_consumer_lag", "Records not yet processed and committed, by topic.",
            labels=["topic"],
        )
        monitor = app.monitor
        lag: dict[str, int] = defaultdict(int)
        for tp, end in dict(monitor.tp_end_offsets).items():
            done = monitor.tp_committed_offsets.get(tp)
            if done is None:
                read = monitor.tp_read_offsets.get(tp)
                done = read + 1 if read is not None else None
            if end is not None and done is not None:
                lag[tp.topic] += max(0, end - done)
        for topic, value in sorted(lag.items()):
            family.add_metric([topic], value)
        yield family


metrics.REGISTRY.register(ConsumerLagCollector())  # type: ignore[arg-type]


@app.page("/metrics")
async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
    return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")


@app.page("/payments/{payment_id}/state")
async def payment_state(
    self: web.View, request: web.Request, payment_id: str
) -> web.Response:
    async def local() -> web.Response:
        payment = payments.get(payment_id)
        if payment is None:
            return error(self, 404, "not_found", f"no payment with id {payment_id!r}",
                         payment_id=payment_id)
        return json_response(self, state_view(payment))

    return await routed(self, request, payment_id, local)


@app.page("/payments")
async def list_payments(self: web.View, request: web.Request) -> web.Response:
    """``GET /payments?state=&customer_id=&merchant_id=&since=&until=&limit=&cursor=``.

    Newest first (created_at, then payment_id, descending), keyset-paginated: follow
    ``next_cursor`` until it is null. This reads what the Postgres sink has written, so it
    may lag the live state (``GET /payments/{id}/state``) by a moment, and a payment whose
    first state change has not reached the database yet is not listed. Any replica answers.
    400 names the bad parameter; 503 while the database is unreachable.

    Needs a bearer token (``API_TOKEN`` or the read-only ``API_READ_TOKEN``) and is
    rate-limited per client like the commands; it reads through its own connection pool,
    so readers cannot starve the sink (which has its own).
    """
    try:
        client = await authorize(request, (*settings.api_tokens, *settings.api_read_tokens))
        await check_rate(f"read:{client}")
    except ApiError as exc:
        response = error(self, exc.status, exc.code, exc.message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
    try:
        query = parse_list_query(single_values(request.query.items()))
    except ListingError as exc:
        return error(self, 400, "invalid_parameter", exc.reason)
    try:
        page = await payment_store.list_payments(query)
    except CONNECTION_ERRORS as exc:
        await payment_store.reset()
        response = error(self, 503, "unavailable",
                         f"the payment database is not reachable ({exc.__class__.__name__});"
                         " retry")
        response.headers["Retry-After"] = "1"
        return response
    next_cursor = encode_cursor(*page.next_cursor) if page.next_cursor is not None else None
    return json_response(self, {"items": page.items, "next_cursor": next_cursor})
