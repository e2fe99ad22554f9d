"""The routing toolkit of every view: JSON answers and errors, and table routing.

A request about a payment is answered by the replica that owns the payment's partition;
another replica forwards it there (method, body and the headers that matter) and relays the
answer. While owners are unknown or unreachable the answer is 503 JSON with ``Retry-After``,
never a 404 for a payment that exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from faust import web
from yarl import URL

from orchestrator_app.app import app
from orchestrator_app.domain import codec
from tables.keyed import recovering
from tables.payments import payments

__all__ = [
    "FORWARDED",
    "JSON",
    "Unavailable",
    "api_error",
    "check_local_reads",
    "error",
    "forward",
    "json_response",
    "owner_of",
    "recovering",
    "routed",
    "unavailable",
]

JSON = "application/json"

#: Marks a request one replica forwarded to another (a second hop means ownership moved).
FORWARDED = "X-Orchestrator-Forwarded"
#: Request headers a forwarded request keeps, and response headers it brings back.
_REQUEST_HEADERS = ("Authorization", "Idempotency-Key", "Content-Type")
_RESPONSE_HEADERS = ("Retry-After", "Location", "Idempotent-Replayed", "WWW-Authenticate")


def json_response(view: web.View, body: Any, status: int = 200) -> web.Response:
    """Exact decimals (fraud scores, amounts) stay JSON numbers."""
    return view.bytes(codec.dumps(body), content_type=JSON, status=status)


def error(view: web.View, status: int, code: str, message: str, **extra: Any) -> web.Response:
    return json_response(view, {"error": code, "message": message, **extra}, status=status)


def api_error(view: web.View, status: int, code: str, message: str,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
    """`error` with extra response headers (an `auth.ApiError`'s ``Retry-After``, …)."""
    response = error(view, status, code, message, **extra)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response



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
    return api_error(view, 503, "unavailable", f"{exc}; retry", {"Retry-After": "1"})


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
