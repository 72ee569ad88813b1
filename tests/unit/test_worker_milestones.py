"""submit→pushed / submit→invoiced: observed once per document, on the applied transition."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from store.lifecycle import TransitionOutcome, TransitionResult
from store.states import DocumentStatus as S
from store.states import Event
from worker.services.milestones import observe_milestones

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(seconds=90)


def result(
    from_status: S,
    to_status: S,
    tenant: str,
    outcome: TransitionOutcome = TransitionOutcome.applied,
    event: Event = Event.accepted,
) -> TransitionResult:
    return TransitionResult(1, event, from_status, to_status, outcome, 2, tenant, CREATED)


def observed(histogram: str, tenant: str) -> tuple[float, float]:
    labels = {"tenant": tenant}
    count = REGISTRY.get_sample_value(f"{histogram}_count", labels) or 0.0
    total = REGISTRY.get_sample_value(f"{histogram}_sum", labels) or 0.0
    return count, total


def test_first_acceptance_and_invoicing_are_observed_with_the_time_since_creation() -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    observe_milestones(
        [result(S.pushing, S.pushed, tenant), result(S.pushed, S.invoiced, tenant)], NOW
    )
    assert observed("fapiao_submit_to_pushed_seconds", tenant) == (1.0, 90.0)
    assert observed("fapiao_submit_to_invoiced_seconds", tenant) == (1.0, 90.0)


def test_in_doubt_settled_as_pushed_counts_as_the_first_acceptance() -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    observe_milestones([result(S.in_doubt, S.pushed, tenant)], NOW)
    assert observed("fapiao_submit_to_pushed_seconds", tenant) == (1.0, 90.0)


def test_no_ops_stale_answers_and_a_refused_withdrawal_are_not_observed() -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    observe_milestones(
        [
            result(S.withdrawing, S.pushed, tenant, event=Event.withdraw_refused),
            result(S.invoiced, S.invoiced, tenant, TransitionOutcome.noop, Event.issued_all),
            result(S.pushing, S.pushing, tenant, TransitionOutcome.stale),
            result(S.pushed, S.partially_invoiced, tenant, event=Event.issued_some),
        ],
        NOW,
    )
    assert observed("fapiao_submit_to_pushed_seconds", tenant) == (0.0, 0.0)
    assert observed("fapiao_submit_to_invoiced_seconds", tenant) == (0.0, 0.0)
