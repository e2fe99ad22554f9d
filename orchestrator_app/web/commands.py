"""The command API: refund, retry, review and (manual mode) process a payment.

Every endpoint is ``POST /payments/{id}/<action>`` and goes through the same steps:

1. bearer-token authentication against ``API_TOKEN`` (none configured: 503);
2. routing: the replica that owns the payment's partition answers (others forward the
   request, body and headers included), so the state it checks is the live state;
3. a per-client rate limit and ``Idempotency-Key`` handling in Redis (Stripe's rules:
   same key and body → the first answer again; same key, other body → 422; 24 h);
4. a dry run of the pure saga step on the current payment: 404 unknown, 409 not allowed;
5. the command goes on the commands topic (acknowledged by the broker) → 202. The saga
   agent applies it like any other input; it carries the version checked here, so a
   command that raced another change is refused there too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from faust import web

from orchestrator_app import clock, metrics, pending
from orchestrator_app.app import app, settings
from orchestrator_app.auth import ApiError, authenticate, authorize, check_rate
from orchestrator_app.clients.redis import REDIS_ERRORS, IdempotencyRecord
from orchestrator_app.domain import codec
from orchestrator_app.domain.records import Command, CommandKind
from orchestrator_app.domain.saga import Status, apply
from orchestrator_app.policy import POLICY  # the saga's own policy: the dry run must match it
from orchestrator_app.resources import redis_client
from orchestrator_app.topics import commands
from orchestrator_app.web.routing import (
    JSON,
    Unavailable,
    api_error,
    check_local_reads,
    forward,
    json_response,
    owner_of,
    recovering,
    unavailable,
)
from tables.payments import live_rows

__all__ = [
    "ACTIONS",
    "ApiError",
    "authenticate",
    "build_command",
    "fingerprint",
    "parse_body",
]

log = logging.getLogger(__name__)

#: action -> command kind
ACTIONS: dict[str, CommandKind] = {
    "refund": CommandKind.REFUND,
    "retry": CommandKind.RETRY,
    "review": CommandKind.REVIEW,
    "process": CommandKind.START_PROCESSING,
}
MAX_BODY = 16 * 1024
#: How long the handler waits for the saga's verdict before answering 202 anyway.
VERDICT_WAIT = 5.0
#: A claimed Idempotency-Key whose answer was never recorded (the replica died) frees up
#: after this long; answered keys are kept IDEMPOTENCY_TTL_SECONDS.
CLAIM_TTL = 60
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


# --- pure steps (unit-tested) -----------------------------------------------------------


def parse_body(action: str, raw: bytes) -> dict[str, Any]:
    """Validate the JSON body of `action`; an empty body is ``{}``.

    Text that PostgreSQL cannot store is *refused* here (400): a ``reason`` holding U+0000
    or another C0 control character other than tab, newline and carriage return, or an
    unpaired surrogate (``"\\ud800"`` is valid JSON but not encodable as UTF-8). The caller
    can fix and resend its request. (NATS replies are sanitised instead, as their decision
    is a fact that must not be lost: `domain.replies.sanitize_text`.)
    """
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"body over {MAX_BODY} bytes")
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = codec.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "body must be a JSON object")
    allowed = {"reason"} | ({"decision"} if action == "review" else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)}")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise ApiError(400, "invalid_body", "reason must be a string of at most 500 characters")
    if reason is not None:
        if any(ch < " " and ch not in "\t\n\r" for ch in reason):
            raise ApiError(400, "invalid_body", "reason must not contain control characters")
        if any("\ud800" <= ch <= "\udfff" for ch in reason):
            raise ApiError(400, "invalid_body", "reason must be valid Unicode text "
                                                "(no unpaired surrogates)")
    if action == "review":
        if body.get("decision") not in ("approve", "reject"):
            raise ApiError(400, "invalid_body", "decision must be 'approve' or 'reject'")
        if not reason:
            raise ApiError(400, "invalid_body", "a review needs a reason")
    return body


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not set(key) <= _KEY_CHARS:
        raise ApiError(400, "invalid_idempotency_key",
                       "Idempotency-Key must be 1-255 characters of letters, digits, - _ . :")
    return key


def fingerprint(action: str, payment_id: str, body: Mapping[str, Any]) -> str:
    """Same request ⇔ same fingerprint (JSON key order and spacing do not matter)."""
    canonical = codec.dumps({"a": action, "p": payment_id, "b": dict(sorted(body.items()))})
    return hashlib.sha256(canonical).hexdigest()


def build_command(
    action: str, payment_id: str, body: Mapping[str, Any], version: int, client: str,
    idempotency_key: str | None, now: str,
) -> Command:
    # With a key, the id is derived from it: a command re-sent under the same key dedupes.
    suffix = f"{client}:{idempotency_key}" if idempotency_key else uuid.uuid4().hex
    return Command(
        kind=ACTIONS[action].value,
        payment_id=payment_id,
        command_id=f"{payment_id}:api:{action}:{suffix}",
        issued_at=now,
        decision=body.get("decision"),
        reason=body.get("reason"),
        expected_version=version,
        requested_by=client,
    )


# --- the HTTP flow ----------------------------------------------------------------------


def _respond(view: web.View, exc: ApiError, **extra: Any) -> web.Response:
    return api_error(view, exc.status, exc.code, exc.message, exc.headers, **extra)


async def handle(view: web.View, request: web.Request, payment_id: str,
                 action: str) -> web.Response:
    try:
        client = await authorize(request, settings.api_tokens)
        raw = await request.read()
        dest = owner_of(payment_id)
        if dest is not None:
            return await forward(view, request, dest, raw)
        check_local_reads()
        response = await _handle_here(view, request, payment_id, action, client, raw)
    except ApiError as exc:
        response = _respond(view, exc)
    except Unavailable as exc:
        response = unavailable(view, exc)
    metrics.api_requests.labels(action=action, status=str(response.status)).inc()
    return response


async def _handle_here(view: web.View, request: web.Request, payment_id: str, action: str,
                       client: str, raw: bytes) -> web.Response:
    key = check_idempotency_key(request.headers.get("Idempotency-Key"))
    await check_rate(client)
    body = parse_body(action, raw)
    if key is None:
        status, payload, headers = await _execute(payment_id, action, body, client, None)
        return _reply(view, status, payload, headers)

    print_ = fingerprint(action, payment_id, body)
    ttl = settings.idempotency_ttl
    try:
        existing = await redis_client.idempotency_begin(client, key, print_, CLAIM_TTL)
    except REDIS_ERRORS:
        raise ApiError(503, "unavailable", "idempotency store unavailable; retry",
                       {"Retry-After": "1"}) from None
    if existing is not None:
        if existing.fingerprint != print_:
            raise ApiError(422, "idempotency_key_reused",
                           "this Idempotency-Key was used with a different request")
        if existing.status is None:
            raise ApiError(409, "idempotency_in_progress",
                           "a request with this Idempotency-Key is still being handled",
                           {"Retry-After": "1"})
        replay = view.bytes((existing.body or "").encode(), content_type=JSON,
                            status=existing.status)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    try:
        status, payload, headers = await _execute(payment_id, action, body, client, key)
    except BaseException:
        await redis_client.idempotency_release(client, key)
        raise
    try:
        if status >= 500:
            await redis_client.idempotency_release(client, key)
        else:
            text = codec.dumps(payload).decode()
            await redis_client.idempotency_finish(
                client, key, IdempotencyRecord(print_, status, text), ttl)
    except REDIS_ERRORS:
        # The command's fate is decided; the claim expires on its own (CLAIM_TTL).
        log.warning("could not record an Idempotency-Key answer; Redis unreachable")
    return _reply(view, status, payload, headers)


def _reply(view: web.View, status: int, payload: dict[str, Any],
           headers: Mapping[str, str]) -> web.Response:
    response = json_response(view, payload, status=status)
    for name, value in headers.items():
        response.headers[name] = value
    return response


async def _execute(payment_id: str, action: str, body: Mapping[str, Any], client: str,
                   key: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Check against the live state and send; returns (status, body, headers)."""
    payment = live_rows.get(payment_id)  # what the saga will apply the command to
    if payment is None and recovering():  # a rebalance began meanwhile: not a fact
        return 503, {"error": "unavailable", "message": "partitions are moving; retry"}, {
            "Retry-After": "1"}
    if payment is None:
        return 404, {"error": "not_found", "message": f"no payment with id {payment_id!r}",
                     "payment_id": payment_id}, {}
    now = clock.now()
    command = build_command(action, payment_id, body, payment.version, client, key, now)
    outcome = apply(payment, command, now, POLICY)
    if outcome.status is not Status.APPLIED:
        return 409, {"error": "invalid_transition", "message": outcome.reason,
                     "payment_id": payment_id, "current_state": payment.state}, {}
    verdict = pending.register(command.command_id)
    try:
        sent = await commands.send(key=payment_id, value=command)
        await sent  # acknowledged by the broker
    except Exception:
        verdict.cancel()
        log.exception("could not put a %s command on the commands topic", action,
                      extra={"payment_id": payment_id, "state": payment.state})
        return 503, {"error": "unavailable", "message": "could not queue the command; retry"}, {
            "Retry-After": "1"}
    # The saga applying it runs in this process: wait (briefly) for its verdict, so a
    # command that lost a race with another one is answered 409, not accepted and dropped.
    try:
        applied, reason = await asyncio.wait_for(asyncio.shield(verdict), VERDICT_WAIT)
    except TimeoutError:
        verdict.cancel()
        applied, reason = True, ""  # queued; the saga will apply or refuse it
    if not applied:
        current = live_rows.get(payment_id)
        return 409, {"error": "invalid_transition", "message": reason,
                     "payment_id": payment_id,
                     "current_state": current.state if current else payment.state}, {}
    log.info("accepted %s for a payment from %s", action, client,
             extra={"payment_id": payment_id, "state": payment.state})
    return 202, {"status": "accepted", "action": action, "payment_id": payment_id,
                 "command_id": command.command_id, "current_state": payment.state}, {
        "Location": f"/payments/{payment_id}/state"}


def _view(action: str) -> type[web.View]:
    class CommandView(web.View):
        async def post(self, request: web.Request, payment_id: str) -> web.Response:
            return await handle(self, request, payment_id, action)

    CommandView.__name__ = f"{action.title()}View"
    return CommandView


for _action in ACTIONS:
    app.page(f"/payments/{{payment_id}}/{_action}")(_view(_action))
