"""The saga step (``saga.apply``): property tests over random command streams, and one
example test per path of DESIGN §2 / §3.

The properties are about one payment: whatever commands arrive, in whatever order, however
often, the stored payment stays a consistent record of allowed transitions, versions never
go back or skip, and a redelivered command changes nothing and re-emits what it emitted.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator_app.domain import saga
from orchestrator_app.domain.records import (
    Command,
    CommandKind,
    FraudCheckRequest,
    Payment,
    PaymentCreated,
    ProcessRequest,
)
from orchestrator_app.domain.saga import Outcome, SagaPolicy, Status, apply
from orchestrator_app.domain.state_machine import State, Trigger

from .design_table import EXPECTED

PID = "pay-1"
K = CommandKind
BASE_TIME = datetime(2026, 2, 13, 10, 0, 0, tzinfo=UTC)

#: Allowed (from, to) pairs of DESIGN §2, whatever the trigger.
ALLOWED_STEPS = {(src, dst) for (src, _), dst in EXPECTED.items()}


# --- helpers ----------------------------------------------------------------------------


class Clock:
    """Strictly increasing ISO timestamps in the contracts' form."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)

    def __call__(self) -> str:
        return saga.format_timestamp(BASE_TIME + timedelta(seconds=next(self._ticks)))


def created_event(
    *,
    amount: Decimal = Decimal("100.50"),
    currency: str = "USD",
    customer_id: str = "customer-123",
    merchant_id: str = "merchant-456",
    payment_id: str = PID,
) -> PaymentCreated:
    return PaymentCreated(
        payment_id=payment_id,
        amount=amount,
        currency=currency,
        customer_id=customer_id,
        merchant_id=merchant_id,
        status="NEW",
        created_at="2026-02-13T10:00:00Z",
    )


_ids = itertools.count(1)


def command(kind: str, command_id: str | None = None, **fields: Any) -> Command:
    return Command(
        kind=kind,
        payment_id=PID,
        command_id=command_id or f"cmd-{next(_ids)}",
        issued_at="2026-02-13T10:00:00.000Z",
        **fields,
    )


def create_command(command_id: str | None = None, **terms: Any) -> Command:
    return command(
        K.CREATE,
        command_id=command_id or saga.create_command_id(PID),
        payment=created_event(**terms),
    )


def dump(payment: Payment | None) -> bytes | None:
    return None if payment is None else payment.dumps()


def outcome_key(outcome: Outcome) -> tuple[Any, ...]:
    """Everything an outcome tells the agent to do, in comparable form."""
    return (
        outcome.status,
        dump(outcome.payment),
        [e.dumps() for e in outcome.events],
        [r.dumps() for r in outcome.fraud_requests],
        [r.dumps() for r in outcome.process_requests],
        outcome.trigger,
    )


def effects_key(outcome: Outcome) -> tuple[Any, ...]:
    return (
        [e.dumps() for e in outcome.events],
        [r.dumps() for r in outcome.fraud_requests],
        [r.dumps() for r in outcome.process_requests],
    )


def check_payment(p: Payment) -> None:
    """Property (a): a payment is a consistent record of allowed transitions."""
    state = State(p.state)
    assert p.payment_id == PID
    assert p.version == len(p.history)
    assert [h.version for h in p.history] == list(range(1, p.version + 1))
    first = p.history[0]
    assert first.state == State.NEW and first.previous_state is None
    for before, after in itertools.pairwise(p.history):
        assert after.previous_state == before.state
        assert (State(before.state), State(after.state)) in ALLOWED_STEPS, (
            f"{before.state} -> {after.state} is not in DESIGN §2"
        )
        assert after.timestamp >= before.timestamp
    last = p.history[-1]
    assert state == State(last.state)
    assert p.previous_state == last.previous_state
    assert p.metadata == last.metadata
    assert p.updated_at == last.timestamp
    # counters agree with the history
    assert p.attempt == sum(h.state == State.PROCESSING for h in p.history)
    assert p.retry_count == sum(h.state == State.RETRY for h in p.history)
    # every command remembered produced a range of versions that exists
    for first_v, last_v in p.applied.values():
        assert 1 <= first_v <= last_v <= p.version
    # DESIGN §4 metadata keys per state
    attempts = 0
    for h in p.history:
        md = h.metadata
        if h.state == State.FRAUD_CHECK:
            assert md["fraud_requested_at"] == h.timestamp
        elif h.state == State.APPROVED and h.previous_state == State.FRAUD_CHECK:
            assert {"fraud_score", "fraud_reason"} <= md.keys()
        elif h.state == State.REJECTED:
            assert "rejection_reason" in md
            if h.previous_state == State.FRAUD_CHECK:
                assert "fraud_score" in md
        elif h.state == State.FAILED:
            assert {"error_code", "error_message", "retry_count"} <= md.keys()
        elif h.state == State.COMPLETED:
            assert md["completion_timestamp"] == h.timestamp
            assert "confirmation_id" in md
        elif h.state == State.PROCESSING:
            attempts += 1
            assert md["attempt"] == attempts


def check_requests(outcome: Outcome) -> None:
    """A payment left waiting carries the request that moves it on (no stranded payment)."""
    p = outcome.payment
    assert p is not None
    state = State(p.state)
    if state is State.FRAUD_CHECK:
        assert outcome.fraud_requests == (
            FraudCheckRequest(
                payment_id=PID,
                customer_id=p.customer_id,
                amount=p.amount,
                currency=p.currency,
                merchant_id=p.merchant_id,
            ),
        )
    else:
        assert outcome.fraud_requests == ()
    if state is State.PROCESSING:
        assert outcome.process_requests == (
            ProcessRequest(
                payment_id=PID,
                amount=p.amount,
                currency=p.currency,
                customer_id=p.customer_id,
                merchant_id=p.merchant_id,
                attempt=p.attempt,
            ),
        )
    else:
        assert outcome.process_requests == ()


#: Transitions that need no outside input (DESIGN §2 "automatic").
def automatic_steps(auto_process: bool) -> set[tuple[State, State]]:
    steps = {(State.NEW, State.FRAUD_CHECK), (State.RETRY, State.PROCESSING)}
    if auto_process:
        steps.add((State.APPROVED, State.PROCESSING))
    return steps


def expected_first_step(payment: Payment, cmd: Command) -> tuple[State, State] | None:
    """What a (new, non-create) command should do to `payment`, written from DESIGN §2 and
    the command contracts; None if it must be refused."""
    state = State(payment.state)
    step: tuple[State, State] | None = None
    if cmd.kind == K.FRAUD_RESULT and cmd.approved is not None:
        step = (State.FRAUD_CHECK, State.APPROVED if cmd.approved else State.REJECTED)
    elif cmd.kind == K.FRAUD_UNAVAILABLE:
        step = (State.FRAUD_CHECK, State.MANUAL_REVIEW)
    elif cmd.kind == K.REVIEW and cmd.decision in ("approve", "reject"):
        target = State.APPROVED if cmd.decision == "approve" else State.REJECTED
        step = (State.MANUAL_REVIEW, target)
    elif cmd.kind == K.START_PROCESSING:
        step = (State.APPROVED, State.PROCESSING)
    elif (
        cmd.kind == K.PROCESS_RESULT
        and cmd.success is not None
        and cmd.attempt == payment.attempt  # a late answer to an old attempt is refused
    ):
        step = (State.PROCESSING, State.COMPLETED if cmd.success else State.FAILED)
    elif cmd.kind == K.RETRY:
        step = (State.FAILED, State.RETRY)
    if step is None or step[0] is not state:
        return None
    return step


# --- strategies -------------------------------------------------------------------------

#: A small pool, so that different commands share ids now and then.
COMMAND_IDS = [saga.create_command_id(PID), "c1", "c2", "c3", "c4", "c5", "c6"]

ids = st.sampled_from(COMMAND_IDS)
texts = st.sampled_from(["", "ok", "velocity rule", "timeout"]) | st.none()


@st.composite
def create_commands(draw: st.DrawFn) -> Command:
    if draw(st.integers(0, 9)) == 0:
        payload = None
    else:
        payload = created_event(
            # 100.50 == 100.5: equal terms, so not a conflict
            amount=draw(st.sampled_from([Decimal("100.50"), Decimal("100.5"), Decimal("7")])),
            currency=draw(st.sampled_from(["USD", "USD", "EUR"])),
            customer_id=draw(st.sampled_from(["customer-123", "customer-123", "other"])),
        )
    return Command(
        kind=K.CREATE,
        payment_id=PID,
        command_id=draw(ids),
        issued_at="2026-02-13T10:00:00.000Z",
        payment=payload,
    )


@st.composite
def other_commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from([k for k in CommandKind if k is not K.CREATE] + ["bogus"]))
    return Command(
        kind=kind,
        payment_id=PID,
        command_id=draw(ids),
        issued_at="2026-02-13T10:00:00.000Z",
        approved=draw(st.none() | st.booleans()),
        risk_score=draw(st.none() | st.sampled_from([Decimal("0.1"), Decimal("0.95"), 1])),
        reason=draw(texts),
        decision=draw(st.sampled_from(["approve", "reject", "garbage", None])),
        attempt=draw(st.integers(0, 4)),
        success=draw(st.none() | st.booleans()),
        confirmation_id=draw(st.none() | st.just("conf-1")),
        error_code=draw(st.none() | st.sampled_from(["TIMEOUT", "DECLINED"])),
        error_message=draw(texts),
        retryable=draw(st.none() | st.booleans()),
    )


def fitting_command(draw: Any, payment: Payment | None) -> Command:
    """A command that the current state accepts (so random runs get deep into the saga)."""
    if payment is None:
        created: Command = draw(create_commands())
        return created
    state = State(payment.state)
    cid = draw(ids) if draw(st.booleans()) else f"fresh-{next(_ids)}"
    base: dict[str, Any] = {"kind": K.RETRY}
    if state is State.FRAUD_CHECK:
        base = draw(
            st.sampled_from(
                [
                    {"kind": K.FRAUD_RESULT, "approved": True, "risk_score": Decimal("0.1")},
                    {"kind": K.FRAUD_RESULT, "approved": False, "risk_score": Decimal("0.9"),
                     "reason": "velocity"},
                    {"kind": K.FRAUD_UNAVAILABLE, "reason": "timeout"},
                ]
            )
        )
    elif state is State.MANUAL_REVIEW:
        base = {"kind": K.REVIEW, "decision": draw(st.sampled_from(["approve", "reject"]))}
    elif state is State.APPROVED:
        base = {"kind": K.START_PROCESSING}
    elif state is State.PROCESSING:
        base = {
            "kind": K.PROCESS_RESULT,
            "attempt": payment.attempt,
            "success": draw(st.booleans()),
            "confirmation_id": "conf-1",
            "error_code": "TIMEOUT",
            "retryable": True,
        }
    return Command(
        payment_id=PID, command_id=cid, issued_at="2026-02-13T10:00:00.000Z", **base
    )


# --- the property -----------------------------------------------------------------------


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), auto_process=st.booleans(), start_with_create=st.booleans())
def test_saga_invariants_hold_for_any_command_stream(
    data: st.DataObject, auto_process: bool, start_with_create: bool
) -> None:
    policy = SagaPolicy(auto_process=auto_process)
    clock = Clock()
    payment: Payment | None = None
    sent: list[tuple[Command, Status]] = []
    #: command_id -> effects of the APPLIED outcome that recorded it
    first_effects: dict[str, tuple[Any, ...]] = {}

    steps = data.draw(st.integers(1, 25), label="steps")
    for step in range(steps):
        if step == 0 and start_with_create:
            cmd = data.draw(create_commands(), label="create")
            resend = None
        else:
            choice = data.draw(st.integers(0, 9), label="choice")
            if sent and choice < 2:
                resend = data.draw(st.integers(0, len(sent) - 1), label="resend")
                cmd = sent[resend][0]
            elif choice < 6:
                cmd = fitting_command(data.draw, payment)
                resend = None
            else:
                cmd = data.draw(st.one_of(create_commands(), other_commands()), label="cmd")
                resend = None

        before = dump(payment)
        now = clock()
        outcome = apply(payment, cmd, now, policy)

        # pure: the input payment is never mutated, and the result is deterministic,
        # also for a payment restored from its changelog bytes
        assert dump(payment) == before
        assert outcome_key(apply(payment, cmd, now, policy)) == outcome_key(outcome)
        if payment is not None and before is not None:
            restored = Payment.loads(before)
            assert outcome_key(apply(restored, cmd, now, policy)) == outcome_key(outcome)

        new = outcome.payment
        event(f"status {outcome.status.value}")
        if new is not None:
            event(f"state {new.state}")

        # what the command should have done, judged independently of the saga's code
        if payment is None:
            expected = (
                Status.APPLIED
                if cmd.kind == K.CREATE and cmd.payment is not None
                else Status.REJECTED
            )
            assert outcome.status is expected
        elif cmd.command_id in payment.applied:
            assert outcome.status is Status.DUPLICATE
        elif cmd.kind == K.CREATE:
            assert outcome.status in (Status.DUPLICATE, Status.CONFLICT, Status.REJECTED)
            assert (outcome.status is Status.REJECTED) == (cmd.payment is None)
        else:
            first_step = expected_first_step(payment, cmd)
            if first_step is None:
                assert outcome.status is Status.REJECTED
            else:
                assert outcome.status is Status.APPLIED
                assert new is not None
                entry = new.history[payment.version]
                assert (State(str(entry.previous_state)), State(entry.state)) == first_step
                # whatever follows is automatic only, and stops where input is needed
                auto = automatic_steps(auto_process)
                for h in new.history[payment.version + 1 :]:
                    assert (State(str(h.previous_state)), State(h.state)) in auto
                assert State(new.state) not in {src for src, _ in auto}

        if outcome.status is Status.APPLIED:
            assert new is not None
            old_version = 0 if payment is None else payment.version
            # (b) versions go up, events cover exactly the new versions
            assert new.version > old_version
            assert [e.version for e in outcome.events] == list(
                range(old_version + 1, new.version + 1)
            )
            for ev, entry in zip(outcome.events, new.history[old_version:], strict=True):
                assert ev.event_id == f"{PID}:{ev.version}"
                assert ev.current_state == entry.state
                assert ev.previous_state == entry.previous_state
                assert ev.metadata == entry.metadata
                assert ev.changed_at == now
                assert ev.amount == new.amount and ev.currency == new.currency
            # history up to the old version is untouched
            if payment is not None:
                assert [h.dumps() for h in new.history[:old_version]] == [
                    h.dumps() for h in payment.history
                ]
            assert new.applied[cmd.command_id] == [old_version + 1, new.version]
            check_requests(outcome)
            first_effects[cmd.command_id] = effects_key(outcome)
        else:
            # (d) nothing else changes the payment
            assert dump(new) == before
            if outcome.status is Status.CONFLICT:
                assert cmd.kind == K.CREATE and outcome.events == ()
            if outcome.status is Status.REJECTED:
                assert outcome.events == ()
                assert outcome.fraud_requests == () and outcome.process_requests == ()
        if outcome.status is Status.DUPLICATE and payment is not None:
            if cmd.command_id in payment.applied:
                # a redelivery re-emits exactly what the command first emitted
                _, last_v = payment.applied[cmd.command_id]
                events = first_effects[cmd.command_id][0]
                assert [e.dumps() for e in outcome.events] == events
                if payment.version == last_v:
                    check_requests(outcome)
                else:
                    assert outcome.fraud_requests == () and outcome.process_requests == ()
            else:
                # an identical second payment.created under another id: nothing to redo
                assert cmd.kind == K.CREATE and outcome.events == ()

        if resend is not None and sent[resend][1] in (Status.APPLIED, Status.DUPLICATE):
            # (c) any earlier command that was applied (or recognised as already applied)
            # changes nothing when it comes again later
            assert outcome.status is Status.DUPLICATE
        if new is not None:
            check_payment(new)

        # (c) the same command again, right after
        again = apply(new, cmd, clock(), policy)
        assert dump(again.payment) == dump(new)
        if outcome.status is Status.APPLIED:
            assert again.status is Status.DUPLICATE
            assert effects_key(again) == effects_key(outcome)
        else:
            assert again.status is outcome.status
            assert effects_key(again) == effects_key(outcome)
        assert again.status in (Status.DUPLICATE, Status.REJECTED, Status.CONFLICT)

        sent.append((cmd, outcome.status))
        payment = new


@settings(max_examples=100, deadline=None)
@given(
    commands=st.lists(st.one_of(create_commands(), other_commands()), max_size=20),
    auto_process=st.booleans(),
)
def test_versions_never_decrease(commands: list[Command], auto_process: bool) -> None:
    policy = SagaPolicy(auto_process=auto_process)
    clock = Clock()
    payment: Payment | None = None
    version = 0
    for cmd in commands:
        payment = apply(payment, cmd, clock(), policy).payment
        if payment is not None:
            assert payment.version >= version
            version = payment.version
            check_payment(payment)


# --- examples: one per path -------------------------------------------------------------


DEFAULT_POLICY = SagaPolicy()


def run(
    *commands: Command, policy: SagaPolicy = DEFAULT_POLICY, clock: Clock | None = None
) -> tuple[Payment, list[Outcome]]:
    clock = clock or Clock()
    payment: Payment | None = None
    outcomes = []
    for cmd in commands:
        outcome = apply(payment, cmd, clock(), policy)
        outcomes.append(outcome)
        payment = outcome.payment
    assert payment is not None
    return payment, outcomes


def fraud_ok(**kw: Any) -> Command:
    return command(K.FRAUD_RESULT, approved=True, risk_score=Decimal("0.12"), reason="ok", **kw)


def test_created_goes_to_fraud_check() -> None:
    now = saga.format_timestamp(BASE_TIME)
    outcome = apply(None, create_command(), now)
    p = outcome.payment
    assert outcome.status is Status.APPLIED
    assert p is not None
    assert (p.state, p.previous_state, p.version) == ("FRAUD_CHECK", "NEW", 2)
    assert p.amount == Decimal("100.50") and str(p.amount) == "100.50"
    assert p.metadata == {"fraud_requested_at": now}
    assert [(e.version, e.previous_state, e.current_state) for e in outcome.events] == [
        (1, None, "NEW"),
        (2, "NEW", "FRAUD_CHECK"),
    ]
    assert [e.event_id for e in outcome.events] == [f"{PID}:1", f"{PID}:2"]
    assert outcome.fraud_requests == (
        FraudCheckRequest(
            payment_id=PID,
            customer_id="customer-123",
            amount=Decimal("100.50"),
            currency="USD",
            merchant_id="merchant-456",
        ),
    )
    assert outcome.process_requests == ()
    check_payment(p)


def test_fraud_approved_goes_to_processing() -> None:
    p, (_, outcome) = run(create_command(), fraud_ok())
    assert outcome.status is Status.APPLIED
    assert (p.state, p.version, p.attempt) == ("PROCESSING", 4, 1)
    approved, processing = outcome.events
    assert (approved.previous_state, approved.current_state, approved.version) == (
        "FRAUD_CHECK", "APPROVED", 3,
    )
    assert approved.metadata == {"fraud_score": Decimal("0.12"), "fraud_reason": "ok"}
    assert (processing.previous_state, processing.current_state) == ("APPROVED", "PROCESSING")
    assert processing.metadata["attempt"] == 1
    assert outcome.fraud_requests == ()
    assert len(outcome.process_requests) == 1
    request = outcome.process_requests[0]
    assert (request.payment_id, request.attempt, request.amount) == (PID, 1, Decimal("100.50"))
    check_payment(p)


def test_fraud_rejected_goes_to_rejected() -> None:
    rejected = command(
        K.FRAUD_RESULT, approved=False, risk_score=Decimal("0.97"), reason="velocity"
    )
    p, (_, outcome) = run(create_command(), rejected)
    assert outcome.status is Status.APPLIED
    assert (p.state, p.previous_state, p.version) == ("REJECTED", "FRAUD_CHECK", 3)
    assert p.metadata == {"fraud_score": Decimal("0.97"), "rejection_reason": "velocity"}
    assert outcome.fraud_requests == () and outcome.process_requests == ()
    # terminal: nothing moves it any more
    for late in (fraud_ok(), command(K.REVIEW, decision="approve"), command(K.RETRY),
                 command(K.START_PROCESSING)):
        assert apply(p, late, "2026-02-14T00:00:00.000Z").status is Status.REJECTED


def test_fraud_unavailable_goes_to_manual_review() -> None:
    p, (_, outcome) = run(create_command(), command(K.FRAUD_UNAVAILABLE, reason="timeout"))
    assert outcome.status is Status.APPLIED
    assert (p.state, p.version) == ("MANUAL_REVIEW", 3)
    assert [e.current_state for e in outcome.events] == ["MANUAL_REVIEW"]
    assert outcome.fraud_requests == () and outcome.process_requests == ()


def test_late_fraud_result_after_timeout_is_rejected() -> None:
    p, _ = run(create_command(), command(K.FRAUD_UNAVAILABLE))
    outcome = apply(p, fraud_ok(), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED
    assert outcome.trigger is Trigger.FRAUD_PASSED
    assert outcome.payment is p and outcome.events == ()


def test_review_approve_goes_to_processing() -> None:
    p, outcomes = run(
        create_command(),
        command(K.FRAUD_UNAVAILABLE),
        command(K.REVIEW, decision="approve", reason="looks fine"),
    )
    assert outcomes[-1].status is Status.APPLIED
    assert [e.current_state for e in outcomes[-1].events] == ["APPROVED", "PROCESSING"]
    assert outcomes[-1].events[0].metadata["review_decision"] == "approve"
    assert (p.state, p.attempt, p.version) == ("PROCESSING", 1, 5)
    assert len(outcomes[-1].process_requests) == 1
    check_payment(p)


def test_review_reject_goes_to_rejected() -> None:
    p, outcomes = run(
        create_command(),
        command(K.FRAUD_UNAVAILABLE),
        command(K.REVIEW, decision="reject", reason="stolen card"),
    )
    assert outcomes[-1].status is Status.APPLIED
    assert (p.state, p.version) == ("REJECTED", 4)
    assert p.metadata["rejection_reason"] == "stolen card"
    check_payment(p)


@pytest.mark.parametrize("decision", ["garbage", None, "APPROVE"])
def test_review_with_bad_decision_is_rejected(decision: str | None) -> None:
    p, _ = run(create_command(), command(K.FRAUD_UNAVAILABLE))
    outcome = apply(p, command(K.REVIEW, decision=decision), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED
    assert outcome.trigger is None
    assert outcome.payment is p


def test_processor_success_completes() -> None:
    clock = Clock()
    p, outcomes = run(
        create_command(),
        fraud_ok(),
        command(K.PROCESS_RESULT, attempt=1, success=True, confirmation_id="conf-9"),
        clock=clock,
    )
    assert outcomes[-1].status is Status.APPLIED
    assert (p.state, p.previous_state, p.version) == ("COMPLETED", "PROCESSING", 5)
    assert p.metadata == {"completion_timestamp": p.updated_at, "confirmation_id": "conf-9"}
    assert outcomes[-1].process_requests == ()
    check_payment(p)


def test_processor_failure_then_retry() -> None:
    p, outcomes = run(
        create_command(),
        fraud_ok(),
        command(
            K.PROCESS_RESULT,
            attempt=1,
            success=False,
            error_code="TIMEOUT",
            error_message="processor timed out",
            retryable=True,
        ),
    )
    assert outcomes[-1].status is Status.APPLIED
    assert (p.state, p.version) == ("FAILED", 5)
    assert p.metadata["error_code"] == "TIMEOUT"
    assert p.metadata["error_message"] == "processor timed out"
    assert p.metadata["retry_count"] == 0
    assert outcomes[-1].process_requests == ()

    retry = apply(p, command(K.RETRY), "2026-02-14T00:00:00.000Z")
    assert retry.status is Status.APPLIED
    q = retry.payment
    assert q is not None
    assert [(e.previous_state, e.current_state, e.version) for e in retry.events] == [
        ("FAILED", "RETRY", 6),
        ("RETRY", "PROCESSING", 7),
    ]
    assert retry.events[0].metadata["retry_count"] == 1
    assert (q.state, q.attempt, q.retry_count) == ("PROCESSING", 2, 1)
    assert [r.attempt for r in retry.process_requests] == [2]
    check_payment(q)

    # the second attempt fails too: the FAILED metadata counts the retry
    again = apply(
        q,
        command(K.PROCESS_RESULT, attempt=2, success=False, error_code="DECLINED"),
        "2026-02-14T00:00:01.000Z",
    )
    assert again.status is Status.APPLIED
    assert again.payment is not None
    assert again.payment.metadata["retry_count"] == 1
    assert again.payment.metadata["error_message"] == ""


def test_late_result_for_an_old_attempt_is_rejected() -> None:
    p, _ = run(
        create_command(),
        fraud_ok(),
        command(K.PROCESS_RESULT, attempt=1, success=False, error_code="TIMEOUT"),
        command(K.RETRY),
    )
    assert (p.state, p.attempt) == ("PROCESSING", 2)
    for success in (True, False):
        late = command(K.PROCESS_RESULT, attempt=1, success=success, confirmation_id="late")
        outcome = apply(p, late, "2026-02-14T00:00:00.000Z")
        assert outcome.status is Status.REJECTED
        assert outcome.payment is p
        assert dump(outcome.payment) == dump(p)
        assert outcome.events == () and outcome.process_requests == ()


def test_result_without_success_flag_is_rejected() -> None:
    p, _ = run(create_command(), fraud_ok())
    outcome = apply(p, command(K.PROCESS_RESULT, attempt=1), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED and outcome.payment is p


def test_fraud_result_without_approved_is_rejected() -> None:
    p, _ = run(create_command())
    outcome = apply(p, command(K.FRAUD_RESULT), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED and outcome.payment is p


def test_second_create_with_different_amount_conflicts() -> None:
    p, _ = run(create_command(), fraud_ok())
    before = dump(p)
    outcome = apply(
        p,
        create_command(command_id="other-create", amount=Decimal("100.51")),
        "2026-02-14T00:00:00.000Z",
    )
    assert outcome.status is Status.CONFLICT
    assert "amount" in outcome.reason
    assert outcome.payment is p and dump(p) == before
    assert outcome.events == () and outcome.process_requests == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [("currency", "EUR"), ("customer_id", "customer-999"), ("merchant_id", "merchant-999")],
)
def test_second_create_with_other_terms_conflicts(field: str, value: str) -> None:
    p, _ = run(create_command())
    outcome = apply(
        p, create_command(command_id="again", **{field: value}), "2026-02-14T00:00:00.000Z"
    )
    assert outcome.status is Status.CONFLICT
    assert field in outcome.reason
    assert dump(outcome.payment) == dump(p)


def test_identical_second_create_is_a_duplicate() -> None:
    p, (first,) = run(create_command())
    # the same command redelivered: the effects come again, identical
    outcome = apply(p, create_command(), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.DUPLICATE
    assert outcome.payment is p
    assert effects_key(outcome) == effects_key(first)
    # an identical payment.created under another command id: nothing to redo
    other = apply(p, create_command(command_id="x"), "2026-02-14T00:00:01.000Z")
    assert other.status is Status.DUPLICATE
    assert dump(other.payment) == dump(p)
    assert other.events == ()


def test_duplicate_after_the_payment_moved_on_does_not_resend_old_requests() -> None:
    p, (first, _) = run(create_command(), fraud_ok())
    outcome = apply(p, create_command(), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.DUPLICATE
    assert [e.dumps() for e in outcome.events] == [e.dumps() for e in first.events]
    # the fraud check was answered already: no second request
    assert outcome.fraud_requests == () and outcome.process_requests == ()


def test_manual_processing_when_auto_process_is_off() -> None:
    manual = SagaPolicy(auto_process=False)
    p, (_, outcome) = run(create_command(), fraud_ok(), policy=manual)
    assert (p.state, p.version, p.attempt) == ("APPROVED", 3, 0)
    assert outcome.process_requests == ()
    start = apply(p, command(K.START_PROCESSING), "2026-02-14T00:00:00.000Z", manual)
    assert start.status is Status.APPLIED
    q = start.payment
    assert q is not None
    assert (q.state, q.previous_state, q.version, q.attempt) == (
        "PROCESSING", "APPROVED", 4, 1,
    )
    assert [r.attempt for r in start.process_requests] == [1]
    check_payment(q)


def test_start_processing_outside_approved_is_rejected() -> None:
    p, _ = run(create_command(), fraud_ok())  # auto: already PROCESSING
    outcome = apply(p, command(K.START_PROCESSING), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED
    assert outcome.trigger is Trigger.PROCESSING_STARTED


@pytest.mark.parametrize("kind", [k for k in CommandKind if k is not K.CREATE])
def test_commands_for_an_unknown_payment_are_rejected(kind: str) -> None:
    outcome = apply(None, command(kind, approved=True, success=True), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED
    assert outcome.payment is None


def test_create_without_payload_for_unknown_payment_is_rejected() -> None:
    cmd = command(K.CREATE)
    assert apply(None, cmd, "2026-02-14T00:00:00.000Z").status is Status.REJECTED


def test_unknown_command_kind_is_rejected() -> None:
    p, _ = run(create_command())
    outcome = apply(p, command("bogus"), "2026-02-14T00:00:00.000Z")
    assert outcome.status is Status.REJECTED and outcome.payment is p


def test_applied_ids_are_bounded() -> None:
    policy = SagaPolicy(applied_limit=3)
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), policy=policy, clock=clock)
    for attempt in range(1, 5):
        failed = apply(
            p, command(K.PROCESS_RESULT, attempt=attempt, success=False), clock(), policy
        ).payment
        assert failed is not None
        retried = apply(failed, command(K.RETRY), clock(), policy).payment
        assert retried is not None
        p = retried
        assert len(p.applied) <= 3
    check_payment(p)
    assert p.attempt == 5 and p.retry_count == 4


def test_format_timestamp() -> None:
    moment = datetime(2026, 2, 13, 10, 0, 0, 123456, tzinfo=UTC)
    assert saga.format_timestamp(moment) == "2026-02-13T10:00:00.123Z"
    # another zone is converted to UTC
    plus2 = moment.astimezone(timezone(timedelta(hours=2)))
    assert saga.format_timestamp(plus2) == "2026-02-13T10:00:00.123Z"
