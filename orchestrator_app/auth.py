"""Who may call the HTTP API: bearer tokens, and a limit on failed attempts.

Two scopes: ``API_TOKEN`` tokens may send commands and read; ``API_READ_TOKEN`` tokens may
only read (the listing). Failed authentications are counted per remote address in Redis and
answered 429 past ``API_AUTH_FAILURES_PER_MINUTE``, so guessing tokens is slow. Like the rest
of the API, this fails closed: Redis unreachable → 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator_app.app import settings
from orchestrator_app.clients.redis import REDIS_ERRORS
from orchestrator_app.resources import redis_client

__all__ = ["ApiError", "authenticate", "authorize", "check_rate"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="payment-orchestrator"'}


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    code: str
    message: str
    headers: Mapping[str, str] | None = None


def authenticate(authorization: str | None, tokens: Sequence[str]) -> str:
    """The client id for a valid bearer token (a hash: the token itself is never kept)."""
    if not tokens:
        raise ApiError(503, "api_disabled", "the API is off: no API_TOKEN configured")
    if not authorization:
        raise ApiError(401, "unauthorized", "missing bearer token", _CHALLENGE)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "expected 'Authorization: Bearer <token>'",
                       _CHALLENGE)
    # Compare with every token, in constant time, so timing tells nothing.
    matched = False
    for candidate in tokens:
        matched |= hmac.compare_digest(candidate.encode(), token.encode())
    if not matched:
        raise ApiError(403, "forbidden", "token not accepted")
    return "client-" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _remote(request: Any) -> str:
    return str(getattr(request, "remote", None) or "unknown")


async def authorize(request: Any, tokens: Sequence[str]) -> str:
    """`authenticate` the request's bearer token, refusing addresses that failed too often."""
    # Per app: replicas of one deployment share the count, other deployments do not.
    key = f"authfail:{settings.app_id}:{_remote(request)}"
    limit = settings.api_auth_failure_limit
    try:
        failures = await redis_client.count(key)
    except REDIS_ERRORS:
        raise ApiError(503, "unavailable", "rate limiter unavailable; retry",
                       {"Retry-After": "1"}) from None
    if failures >= limit:
        raise ApiError(429, "too_many_failures", "too many failed authentications; wait",
                       {"Retry-After": "60"})
    try:
        return authenticate(request.headers.get("Authorization"), tokens)
    except ApiError as exc:
        if exc.status in (401, 403):
            with contextlib.suppress(*REDIS_ERRORS):  # refused anyway
                await redis_client.rate_limit(key, limit)
        raise


async def check_rate(client: str) -> None:
    """Raise 429 past ``API_RATE_LIMIT_PER_MINUTE`` for `client` (503 if Redis is down)."""
    try:
        decision = await redis_client.rate_limit(client, settings.api_rate_limit)
    except REDIS_ERRORS:
        raise ApiError(503, "unavailable", "rate limiter unavailable; retry",
                       {"Retry-After": "1"}) from None
    if not decision.allowed:
        raise ApiError(429, "rate_limited", "too many requests",
                       {"Retry-After": str(decision.retry_after)})
