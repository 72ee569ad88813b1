"""The retry policy table, walked row by row without a broker."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from celery import Celery

from schemas.cloud_contract import OutcomeClass
from worker.retry_policy import (
    PUSH_ACTIONS,
    QUERY_ACTIONS,
    Action,
    Backoff,
    PollSchedule,
    decide_push,
    decide_query,
)

BACKOFF = Backoff(base_seconds=2, cap_seconds=60, max_attempts=4)


def test_every_outcome_class_has_a_push_and_a_query_action() -> None:
    assert set(PUSH_ACTIONS) == set(OutcomeClass)
    assert set(QUERY_ACTIONS) == set(OutcomeClass)


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (OutcomeClass.ACCEPTED, Action.APPLY),
        (OutcomeClass.REJECTED, Action.REJECT),
        (OutcomeClass.DUPLICATE, Action.QUERY),
        (OutcomeClass.UNKNOWN_OUTCOME, Action.QUERY),
        (OutcomeClass.TRANSIENT, Action.RETRY),
        (OutcomeClass.AUTH_EXPIRED, Action.REFRESH_ONCE),
        (OutcomeClass.CONFIG_ERROR, Action.PAUSE_TENANT),
    ],
)
def test_push_table_row(outcome: OutcomeClass, action: Action) -> None:
    decision = decide_push(outcome, attempt=1, backoff=BACKOFF, auth_refreshed=False)
    assert decision.action is action
    assert (decision.delay is not None) == (action is Action.RETRY)


def test_an_unknown_outcome_is_never_retried_blind() -> None:
    for attempt in range(1, 10):
        decision = decide_push(
            OutcomeClass.UNKNOWN_OUTCOME, attempt=attempt, backoff=BACKOFF, auth_refreshed=False
        )
        assert decision.action is Action.QUERY


def test_auth_failure_after_a_refresh_pauses_the_tenant() -> None:
    first = decide_push(OutcomeClass.AUTH_EXPIRED, attempt=1, backoff=BACKOFF, auth_refreshed=False)
    second = decide_push(OutcomeClass.AUTH_EXPIRED, attempt=1, backoff=BACKOFF, auth_refreshed=True)
    assert first.action is Action.REFRESH_ONCE
    assert second.action is Action.PAUSE_TENANT
    assert decide_query(OutcomeClass.AUTH_EXPIRED, auth_refreshed=True).action is (
        Action.PAUSE_TENANT
    )


def test_transient_gives_up_after_max_attempts() -> None:
    actions = [
        decide_push(OutcomeClass.TRANSIENT, attempt=n, backoff=BACKOFF, auth_refreshed=False).action
        for n in range(1, 6)
    ]
    assert actions == [Action.RETRY, Action.RETRY, Action.RETRY, Action.GIVE_UP, Action.GIVE_UP]


def test_full_jitter_stays_within_the_capped_window() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = BACKOFF.ceiling(attempt)
        assert ceiling == min(60.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = BACKOFF.delay(attempt, rng)
            assert timedelta(0) <= delay <= timedelta(seconds=ceiling)
    # Jitter really spreads: 200 draws at the cap are not all alike.
    draws = {BACKOFF.delay(20, rng) for _ in range(200)}
    assert len(draws) > 100


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (OutcomeClass.ACCEPTED, Action.APPLY),
        (OutcomeClass.TRANSIENT, Action.RETRY),
        (OutcomeClass.UNKNOWN_OUTCOME, Action.RETRY),
        (OutcomeClass.REJECTED, Action.REJECT),
        (OutcomeClass.CONFIG_ERROR, Action.PAUSE_TENANT),
    ],
)
def test_query_table_row(outcome: OutcomeClass, action: Action) -> None:
    assert decide_query(outcome, auth_refreshed=False).action is action


def test_poll_schedule_grows_from_seconds_to_hours_and_caps() -> None:
    schedule = PollSchedule(
        delays_seconds=(5, 15, 60, 300, 900, 3600, 7200, 14400),
        cap_seconds=6 * 3600,
        alert_after=timedelta(days=3),
    )
    delays = [schedule.delay(n) for n in range(20)]
    assert delays[0] == timedelta(seconds=5)
    assert delays[1] == timedelta(seconds=15)
    assert delays == sorted(delays)
    assert delays[7] == timedelta(hours=4)
    assert delays[8:] == [timedelta(hours=6)] * 12
    assert not schedule.overdue(timedelta(days=2))
    assert schedule.overdue(timedelta(days=3))


def test_poll_schedule_never_exceeds_its_cap() -> None:
    schedule = PollSchedule(delays_seconds=(1, 100), cap_seconds=10, alert_after=timedelta(1))
    assert schedule.delay(1) == timedelta(seconds=10)


def test_policy_drives_a_dummy_task_without_a_broker() -> None:
    """A task body that only maps outcome → action, run with ``apply`` (no broker at all)."""
    app = Celery("policy-test", set_as_current=False)

    @app.task(name="test.policy", shared=False)
    def decide(outcome: str, attempt: int) -> str:
        decision = decide_push(
            OutcomeClass(outcome),
            attempt=attempt,
            backoff=BACKOFF,
            auth_refreshed=False,
            rng=random.Random(0),
        )
        return decision.action.value

    assert decide.apply(args=("transient", 1)).get() == "retry"
    assert decide.apply(args=("transient", 4)).get() == "give_up"
    assert decide.apply(args=("duplicate", 1)).get() == "query"
    assert decide.apply(args=("rejected", 1)).get() == "reject"
