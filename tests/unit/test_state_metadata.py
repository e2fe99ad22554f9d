"""What the state API shows (issue 9, item 5): a payment's ``metadata`` accumulates the keys
of every state (later ones win), each ``history`` item carries its own state's metadata, and
``payment.state.changed`` keeps the metadata of its transition alone (DESIGN §4). The
PostgreSQL sink accumulates the ``payment_states`` row's metadata the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_app.clients.postgres import StateRow, accumulated_metadata
from orchestrator_app.domain import codec
from orchestrator_app.domain.saga import SagaPolicy, effects_for_versions
from orchestrator_app.web.views import state_view

from .test_saga_faults import refund_requested
from .test_saga_properties import (
    PID,
    Clock,
    accumulated,
    completed,
    create_command,
    fraud_ok,
    policies,
    reach,
    refund_result,
    result,
    run,
    step,
    unavailable,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), policy=policies)
def test_metadata_holds_every_state_later_keys_winning(
    data: st.DataObject, policy: SagaPolicy
) -> None:
    """For any reachable payment: its metadata ⊇ the fold of its history's metadata (later
    keys win); the view shows exactly that and each entry's own metadata; the events of
    every version carry that version's metadata alone."""
    p = reach(data, policy, Clock())
    folded = accumulated(p.history)
    assert p.metadata.items() >= folded.items()
    for key in p.metadata.keys() - folded.keys():
        # only what changes without a transition sits beside the states' keys
        assert key.startswith("refund_") or key == "late_processor_successes", key
    for i, entry in enumerate(p.history):
        for key, value in entry.metadata.items():
            if not any(key in later.metadata for later in p.history[i + 1:]):
                assert p.metadata[key] == value  # the last state that set a key wins

    view = state_view(p)
    assert view["metadata"] == p.metadata
    assert [(h["state"], h["timestamp"], h["metadata"]) for h in view["history"]] == [
        (e.state, e.timestamp, e.metadata) for e in p.history]
    events, _, _ = effects_for_versions(p, 1, p.version)
    assert [e.metadata for e in events] == [e.metadata for e in p.history]


def test_a_completed_payment_still_shows_its_fraud_score() -> None:
    p = completed()
    view = state_view(p)
    assert view["current_state"] == "COMPLETED"
    assert view["metadata"]["fraud_score"] == Decimal("0.12")
    assert view["metadata"]["fraud_reason"] == "ok"
    assert view["metadata"]["confirmation_id"] == "conf-9"
    assert [h["state"] for h in view["history"]] == [
        "NEW", "FRAUD_CHECK", "APPROVED", "PROCESSING", "COMPLETED"]
    assert view["history"][0]["metadata"] == {}
    assert view["history"][2]["metadata"] == {"fraud_score": Decimal("0.12"),
                                              "fraud_reason": "ok"}
    assert view["history"][4]["metadata"] == {"completion_timestamp": p.updated_at,
                                              "confirmation_id": "conf-9",
                                              "confirmed_attempt": 1}
    # the COMPLETED event is the transition's own metadata: no fraud score in it
    events, _, _ = effects_for_versions(p, 5, 5)
    assert "fraud_score" not in events[0].metadata
    # JSON-encodable as the API answers it, money-like numbers exact
    body = codec.loads(codec.dumps(view))
    assert body["metadata"]["fraud_score"] == Decimal("0.12")


def test_later_states_win_after_a_retry() -> None:
    clock = Clock()
    p, _ = run(create_command(), fraud_ok(), result(1, **_unavailable_fields()),
               clock=clock)
    assert p.state == "FAILED"
    failed_at = p.metadata["next_attempt_at"]
    p, _ = step(p, result(1, success=True, confirmation_id="conf-2"), clock())
    assert p.state == "COMPLETED"
    # the FAILED keys are still there (later ones win; none overwrote them) ...
    assert p.metadata["error_code"] == "processor_unavailable"
    assert p.metadata["next_attempt_at"] == failed_at
    # ... and the keys two states set hold the later value (PROCESSING's attempt)
    assert p.metadata["attempt"] == p.attempt == 2
    assert p.metadata["confirmation_id"] == "conf-2"


def _unavailable_fields() -> dict[str, Any]:
    cmd = unavailable(1)
    return {"error_code": cmd.error_code, "error_message": cmd.error_message,
            "retryable": cmd.retryable}


def test_refunded_drops_the_bookkeeping_of_a_refund_reported_failed() -> None:
    clock = Clock()
    p = refund_requested(clock)
    p, _ = step(p, refund_result(1, error_code="refund_declined", retryable=False), clock())
    assert p.metadata["refund_status"] == "failed"
    q, _ = step(p, refund_result(1, success=True, refund_id="ref-9"), clock())
    assert q.state == "REFUNDED"
    assert "refund_status" not in q.metadata and "refund_error_code" not in q.metadata
    assert q.metadata["refund_previously_failed"] is True
    assert q.metadata["fraud_score"] == Decimal("0.12")  # the earlier states stay
    assert q.metadata == accumulated(q.history)


# --- the sink: payment_states.metadata accumulates, history rows keep their own ------------


def _row(version: int, metadata: dict[str, Any], pid: str = PID) -> StateRow:
    return StateRow(
        payment_id=pid, current_state="X", previous_state=None, amount=Decimal("1.50"),
        currency="USD", customer_id="c", merchant_id="m",
        metadata=codec.dumps(metadata).decode(), version=version, event_id=f"{pid}:{version}",
        changed_at=datetime(2026, 2, 13, tzinfo=UTC),
    )


def test_sink_merges_the_run_of_versions_ending_at_the_latest() -> None:
    rows = [_row(3, {"fraud_score": Decimal("0.1"), "a": 1}), _row(5, {"a": 5}),
            _row(4, {"a": 4, "b": 4}), _row(1, {"only": "other"}, pid="p2")]
    merged = accumulated_metadata(rows)
    assert codec.loads(merged[PID]) == {"fraud_score": Decimal("0.1"), "a": 5, "b": 4}
    assert merged["p2"] == rows[3].metadata  # a single row: its text as is


def test_sink_leaves_out_versions_behind_a_gap() -> None:
    # version 2 redelivered into a batch with version 5: the row holds 2..4 already
    rows = [_row(2, {"a": 2, "z": 2}), _row(5, {"a": 5})]
    assert codec.loads(accumulated_metadata(rows)[PID]) == {"a": 5}
