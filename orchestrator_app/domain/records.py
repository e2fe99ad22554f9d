"""Typed records: the external contracts (DESIGN §4), the internal commands and requests,
and the payment as stored in the ``payments`` table.

Field names of the contract records are fixed: outside clients depend on them. Amounts
are `Decimal` and travel as exact JSON numbers (codec ``decimal_json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import faust

from .codec import CODEC_NAME

__all__ = [
    "Command",
    "CommandKind",
    "FraudCheckReply",
    "FraudCheckRequest",
    "HistoryEntry",
    "Notification",
    "Operation",
    "Payment",
    "PaymentCreated",
    "PaymentStateChanged",
    "ProcessRequest",
    "SourceRef",
    "Timer",
]


#: Cross-check every `_Record.trusted` against the coercing constructor (tests).
CHECK_TRUSTED = False


@dataclass(frozen=True)
class _TrustedSpec:
    fields: frozenset[str]
    required: frozenset[str]
    defaults: dict[str, Any]


_SPECS: dict[type, _TrustedSpec] = {}


def _trusted_spec(cls: type) -> _TrustedSpec:
    spec = _SPECS.get(cls)
    if spec is None:
        options = cls._options  # type: ignore[attr-defined]
        optional = frozenset(options.optionalset)
        spec = _SPECS[cls] = _TrustedSpec(
            fields=frozenset(options.fields), required=frozenset(options.fields) - optional,
            defaults={name: options.defaults[name] for name in optional})
    return spec


def _check_trusted(cls: type, fields: dict[str, Any], record: Any) -> None:
    coerced = cls(**fields)
    for name in _trusted_spec(cls).fields:
        ours, theirs = getattr(record, name), getattr(coerced, name)
        if type(ours) is not type(theirs) or ours != theirs:
            raise AssertionError(f"{cls.__name__}.trusted: {name}={ours!r} "
                                 f"({type(ours).__name__}), the constructor gives "
                                 f"{theirs!r} ({type(theirs).__name__})")


class _Record(
    faust.Record,
    abstract=True,
    serializer=CODEC_NAME,
    coerce=True,
    include_metadata=False,
):
    """Base: exact-decimal JSON, field types coerced, no faust type tag on the wire."""

    @classmethod
    def trusted(cls, **fields: Any) -> Self:
        """A record from values that already have their fields' types, not coerced again.

        Why: Faust's constructor runs every field through its descriptor (coercion, tags);
        a payment built ~190 of those, a fifth of the saga's own CPU. The saga builds its
        events, entries and requests from fields of records that were coerced when they
        were decoded or validated, so that work is redundant there. A missing required
        field or an unknown one still fails, as in the constructor; optional fields get
        their defaults. With `CHECK_TRUSTED` on (the unit suite turns it on), each record
        is also built by the constructor and must come out identical, types included.
        """
        spec = _trusted_spec(cls)
        names = fields.keys()
        if not spec.required <= names or not names <= spec.fields:
            missing, unknown = spec.required - names, names - spec.fields
            raise TypeError(f"{cls.__name__}: missing {sorted(missing)}, "
                            f"unknown {sorted(unknown)}")
        record: Self = object.__new__(cls)
        values = record.__dict__
        values["__evaluated_fields__"] = set()
        values.update(spec.defaults)
        values.update(fields)
        if CHECK_TRUSTED:
            _check_trusted(cls, fields, record)
        return record


# --- external contracts -----------------------------------------------------------------


class PaymentCreated(_Record):
    """Input on ``payment.created`` from the API gateway (validated before it is built)."""

    #: Unique id of the payment; the key of every command and event about it.
    payment_id: str
    #: Exact amount, > 0, at most 4 decimal places and 15 integer digits.
    amount: Decimal
    #: ISO 4217 code.
    currency: str
    customer_id: str
    merchant_id: str
    #: Always ``NEW`` on input.
    status: str
    #: ISO 8601 with a time zone, as the gateway sent it.
    created_at: str


class PaymentStateChanged(_Record):
    """Output on ``payment.state.changed``, one per transition (key = payment_id)."""

    payment_id: str
    previous_state: str | None
    current_state: str
    amount: Decimal
    currency: str
    customer_id: str
    merchant_id: str
    changed_at: str
    metadata: dict[str, Any]
    #: 1, 2, 3 … per payment; consumers dedupe on it.
    version: int
    #: ``<payment_id>:<version>``.
    event_id: str


class FraudCheckRequest(_Record):
    """NATS ``fraud.check`` request body (the spec's fields)."""

    payment_id: str
    customer_id: str
    amount: Decimal
    currency: str
    merchant_id: str


class FraudCheckReply(_Record):
    """NATS ``fraud.check`` reply body (the spec's fields)."""

    payment_id: str
    approved: bool
    risk_score: Decimal
    reason: str


# --- internal ---------------------------------------------------------------------------


class CommandKind(StrEnum):
    CREATE = "create"
    FRAUD_RESULT = "fraud_result"
    FRAUD_UNAVAILABLE = "fraud_unavailable"
    REVIEW = "review"
    START_PROCESSING = "start_processing"
    PROCESS_RESULT = "process_result"
    RETRY = "retry"
    REFUND = "refund"
    REFUND_RESULT = "refund_result"
    #: A payment's timer fired (retry backoff over, or a waiting state's deadline passed).
    TIMER = "timer"


class Operation(StrEnum):
    """What a processor request asks for."""

    PAYMENT = "payment"
    REFUND = "refund"


class SourceRef(_Record):
    """Where an input came from, so a later dead letter can point at it."""

    topic: str
    partition: int
    offset: int


class Command(_Record):
    """Everything that can change a payment, on ``orchestrator-commands`` keyed by payment_id.

    One flat record rather than one class per kind: the saga agent reads one topic with one
    value type, and each kind uses the few optional fields it needs.
    """

    kind: str
    payment_id: str
    #: Unique per logical command; a redelivered command carries the same id.
    command_id: str
    issued_at: str
    #: CREATE: the validated event, and where it came from.
    payment: PaymentCreated | None = None
    source: SourceRef | None = None
    raw: str | None = None
    #: FRAUD_RESULT.
    approved: bool | None = None
    risk_score: Decimal | None = None
    #: FRAUD_RESULT / FRAUD_UNAVAILABLE / REVIEW: free text.
    reason: str | None = None
    #: REVIEW: ``approve`` or ``reject``.
    decision: str | None = None
    #: PROCESS_RESULT / REFUND_RESULT: which attempt this answers. TIMER: the timer's seq.
    attempt: int = 0
    success: bool | None = None
    confirmation_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    #: PROCESS_RESULT / REFUND_RESULT: seconds to wait before trying again (breaker open).
    retry_after: float | None = None
    #: REFUND_RESULT.
    refund_id: str | None = None
    #: API commands: the version the API checked; applied only if it is still current, so
    #: a command that was refused once is refused again when redelivered.
    expected_version: int = 0
    #: API commands: who asked (the client's id, never the token).
    requested_by: str | None = None
    #: A CREATE's W3C traceparent (the producer's, else derived from the payment id).
    traceparent: str | None = None


class ProcessRequest(_Record):
    """Work for the processor agent: NATS ``payment.process`` or ``payment.refund``."""

    payment_id: str
    amount: Decimal
    currency: str
    customer_id: str
    merchant_id: str
    attempt: int
    #: ``payment`` or ``refund`` (`Operation`).
    operation: str = "payment"
    #: Refunds: the processor's confirmation id of the payment being refunded.
    confirmation_id: str | None = None


class Notification(_Record):
    """A customer notification or an operations alert on ``payment.notifications``."""

    #: ``<payment_id>:<version>:<audience>``: consumers dedupe on it.
    notification_id: str
    #: ``customer`` or ``operations``.
    audience: str
    #: e.g. ``PAYMENT_FAILED``, ``PAYMENT_COMPENSATED``, ``REFUND_FAILED``.
    event: str
    #: ``info``, ``warning`` or ``critical`` (operations alerts).
    severity: str
    payment_id: str
    customer_id: str
    merchant_id: str
    amount: Decimal
    currency: str
    state: str
    reason: str
    error_code: str | None
    created_at: str


class Timer(_Record):
    """A payment's one pending timer (the ``timers`` table, key payment_id)."""

    payment_id: str
    #: ``retry`` (backoff over), ``deadline`` (waiting too long), ``refund_retry``.
    kind: str
    #: When it fires (Unix seconds).
    due: float
    #: Matches `Payment.timer_seq`; a stale timer is ignored by the saga.
    seq: int


class HistoryEntry(_Record):
    """One applied transition; enough to rebuild its `PaymentStateChanged` exactly."""

    version: int
    state: str
    previous_state: str | None
    timestamp: str
    metadata: dict[str, Any]


class Payment(_Record):
    """A payment's live state: the value of the ``payments`` table, key payment_id."""

    payment_id: str
    amount: Decimal
    currency: str
    customer_id: str
    merchant_id: str
    created_at: str
    state: str
    previous_state: str | None
    version: int
    updated_at: str
    #: The keys of every state so far, later ones winning (DESIGN §4 lists the keys per
    #: state; each `HistoryEntry` keeps its own state's), plus what changed without a
    #: transition (refund bookkeeping, late processor successes).
    metadata: dict[str, Any]
    history: list[HistoryEntry]
    #: command_id -> [first version, last version] it produced, for the recent commands.
    #: (No default: faust shares a mutable default between instances.)
    applied: dict[str, list[int]]
    #: Processing attempts started so far (the first is 1).
    attempt: int = 0
    #: Automatic or requested retries so far (breaker-open waits do not count).
    retry_count: int = 0
    #: The pending timer: its kind, when it fires (Unix seconds), and its sequence number.
    timer_kind: str | None = None
    timer_due: float | None = None
    timer_seq: int = 0
    #: Refunds: requested and not yet confirmed, and the attempts made.
    refund_pending: bool = False
    refund_attempt: int = 0
    refund_retries: int = 0
    #: Processor circuit-breaker waits so far, for the whole payment (they do not spend
    #: the retry budget; `SagaPolicy.max_circuit_waits` caps them).
    circuit_waits: int = 0
    #: Circuit-breaker waits of the current refund request (same cap).
    refund_circuit_waits: int = 0
    #: The payment's trace (W3C traceparent); None in rows stored before tracing.
    traceparent: str | None = None
