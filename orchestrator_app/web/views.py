"""The read views: a payment's live state, the listing, and the Prometheus metrics.

The state view is table-routed (`routing.routed`): any replica answers for any payment. The
listing (``GET /payments``) reads PostgreSQL, which every replica shares: it needs no
routing. The database client returns rows; this module shapes them into JSON.
"""

from __future__ import annotations

from typing import Any

from faust import web

from orchestrator_app import metrics
from orchestrator_app.app import app, settings
from orchestrator_app.auth import ApiError, authorize, check_rate
from orchestrator_app.clients.postgres import CONNECTION_ERRORS
from orchestrator_app.domain.records import Payment
from orchestrator_app.resources import payment_store
from orchestrator_app.web.listing import (
    ListingError,
    encode_cursor,
    list_item,
    parse_list_query,
    single_values,
)
from orchestrator_app.web.routing import api_error, error, json_response, routed
from tables.payments import live_rows

__all__ = ["list_payments", "payment_state", "prometheus_metrics", "state_view"]


def state_view(payment: Payment) -> dict[str, Any]:
    """The spec's ``GET /payments/{id}/state`` body: ``metadata`` holds the keys of every
    state so far (later ones win); each history item carries its own state's metadata."""
    return {
        "payment_id": payment.payment_id,
        "current_state": payment.state,
        "previous_state": payment.previous_state,
        "updated_at": payment.updated_at,
        "metadata": payment.metadata,
        "history": [
            {"state": entry.state, "timestamp": entry.timestamp, "metadata": entry.metadata}
            for entry in sorted(payment.history, key=lambda e: e.version)
        ],
    }


@app.page("/metrics")
async def prometheus_metrics(self: web.View, request: web.Request) -> web.Response:
    return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")


@app.page("/payments/{payment_id}/state")
async def payment_state(
    self: web.View, request: web.Request, payment_id: str
) -> web.Response:
    async def local() -> web.Response:
        payment = live_rows.get(payment_id)  # the saga's newest, written or not
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
        return api_error(self, exc.status, exc.code, exc.message, exc.headers)
    try:
        query = parse_list_query(single_values(request.query.items()))
    except ListingError as exc:
        return error(self, 400, "invalid_parameter", exc.reason)
    try:
        page = await payment_store.list_payments(query)
    except CONNECTION_ERRORS as exc:
        await payment_store.reset()
        return api_error(self, 503, "unavailable",
                         f"the payment database is not reachable ({exc.__class__.__name__});"
                         " retry", {"Retry-After": "1"})
    next_cursor = encode_cursor(*page.next_cursor) if page.next_cursor is not None else None
    return json_response(self, {"items": [list_item(row) for row in page.rows],
                                "next_cursor": next_cursor})
