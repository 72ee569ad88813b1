"""The retry policy and the retry table, walked row by row without a broker."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from schemas.cloud_contract import OutcomeClass
from schemas.settings import Settings
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, push_message
from worker.retry_policy import (
    PUSH_ACTIONS,
    QUERY_ACTIONS,
    Action,
    Backoff,
    PollSchedule,
    RetryKind,
    RetryTable,
    decide_push,
    decide_query,
    retry_table,
)
from worker.runtime import policy_from_settings
from worker.tasks import INFRASTRUCTURE_ERRORS, _retry

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


# ------------------------------------------------------------------ the retry table


def table_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": "test", "broker_url": "memory://"}
    values.update(overrides)
    return Settings(**values)


def test_every_kind_of_retry_has_a_row() -> None:
    table = retry_table(table_settings())
    assert {kind for kind, _ in table} == set(RetryKind)
    for kind, row in table:
        assert table[kind] is row is getattr(table, kind.value)
    with pytest.raises(ValueError, match="publish"):
        RetryTable({kind: table[kind] for kind in RetryKind if kind is not RetryKind.PUBLISH})


def test_the_default_backoff_sequence_of_every_kind() -> None:
    table = retry_table(table_settings())
    assert {kind.value: row.ceilings(10) for kind, row in table} == {
        "push": [2, 4, 8, 16, 32, 64, 128, 256, 300, 300],
        "query": [5, 15, 60, 300, 900, 3600, 7200, 14400, 21600, 21600],
        "withdraw": [30] * 10,
        "webhook": [5, 10, 20, 40, 80, 160, 320, 600, 600, 600],
        "reconcile": [2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
        "task": [2, 4, 8, 16, 30, 30, 30, 30, 30, 30],
        "publish": pytest.approx([0, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
    }
    assert {kind.value: (row.max_attempts, row.jitter) for kind, row in table} == {
        "push": (8, True),
        "query": (20, False),
        "withdraw": (0, False),
        "webhook": (12, True),
        "reconcile": (30, False),
        "task": (6, True),
        "publish": (3, False),
    }
    assert table.reconcile.ceiling(1000) == 60  # capped, like every row


def test_rows_without_jitter_wait_exactly_their_ceiling_and_a_limit_of_zero_never_ends() -> None:
    table = retry_table(table_settings())
    rng = random.Random(3)
    assert [table.reconcile.delay(n, rng).total_seconds() for n in (1, 2, 3)] == [2, 4, 6]
    assert table.withdraw.delay(1, rng) == timedelta(seconds=30)
    assert not any(table.withdraw.exhausted(n) for n in (1, 100, 10_000))
    assert [table.reconcile.exhausted(n) for n in (29, 30, 31)] == [False, True, True]


def test_the_numbers_come_from_settings() -> None:
    settings = table_settings(
        push={"max_attempts": 3, "backoff_base_seconds": 1, "backoff_cap_seconds": 5},
        erp_webhook={"max_attempts": 2, "backoff_cap_seconds": 0.5},
        poll={"schedule_seconds": [1, 3], "cap_seconds": 4},
        in_doubt={"max_queries": 7},
        retry={
            "reconcile": {"max_attempts": 4, "base_seconds": 1, "step_seconds": 0.5},
            "task": {"max_attempts": 2, "factor": 3, "cap_seconds": 100, "jitter": False},
            "publish": {"max_attempts": 1},
            "withdraw": {"base_seconds": 7, "cap_seconds": 7},
        },
    )
    table = retry_table(settings)
    assert (table.push.max_attempts, table.push.ceilings(4)) == (3, [1, 2, 4, 5])
    assert (table.webhook.max_attempts, table.webhook.ceilings(2)) == (2, [0.5, 0.5])
    assert (table.query.max_attempts, table.query.ceilings(4)) == (7, [1, 3, 4, 4])
    assert (table.reconcile.max_attempts, table.reconcile.ceilings(3)) == (4, [1, 1.5, 2])
    assert (table.task.max_attempts, table.task.ceilings(4), table.task.jitter) == (
        2, [2, 6, 18, 54], False,
    )  # fmt: skip
    assert table.publish.max_attempts == 1
    assert table.withdraw.ceilings(2) == [7, 7]
    # The runtime's policies are the table's rows.
    policy = policy_from_settings(settings)
    assert policy.retries == table
    assert (policy.backoff, policy.webhook_backoff) == (table.push, table.webhook)
    assert policy.in_doubt_max_queries == 7
    assert [policy.poll_schedule.delay(n).total_seconds() for n in range(3)] == [1, 3, 4]


def test_the_printed_table_has_a_line_per_kind() -> None:
    text = retry_table(table_settings()).render(attempts=3)
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [kind.value for kind in RetryKind]
    assert lines[1].split()[-3:] == ["2,", "4,", "8"]


def test_the_task_row_drives_celerys_retry_of_infrastructure_errors() -> None:
    """A bound task retried by ``worker.tasks._retry`` (eager: each retry runs at once)."""
    row = Backoff(base_seconds=1, cap_seconds=60, max_attempts=3, jitter=False)
    app = Celery("retry-test", set_as_current=False)
    runs: list[int] = []
    countdowns: list[float] = []

    @app.task(name="test.flaky", bind=True, shared=False)
    def flaky(self: Any) -> None:
        runs.append(self.request.retries)
        try:
            raise DatabaseOperationalError("SELECT 1", {}, ConnectionError("database away"))
        except INFRASTRUCTURE_ERRORS as exc:
            _retry(self, row, exc)

    retry = flaky.retry

    def spy(**options: Any) -> Any:
        countdowns.append(options["countdown"])
        return retry(**options)

    flaky.retry = spy
    result = flaky.apply()
    assert runs == [0, 1, 2]  # three tries in all: the row's max_attempts
    assert countdowns == [1, 2, 4]  # the last one is refused: the error is raised
    assert isinstance(result.result, DatabaseOperationalError)


def test_the_publish_row_is_kombus_publish_retry() -> None:
    app = create_app(table_settings(retry={"publish": {"max_attempts": 4, "step_seconds": 0.1}}))
    sent: list[dict[str, Any]] = []

    def send_task(name: str, **options: Any) -> None:
        if "producer" in options:
            raise OSError("pipeline lost")
        sent.append({"name": name, **options})

    enqueuer = CeleryEnqueuer(app)
    app.send_task = send_task
    assert enqueuer.send([push_message(1, "B-1", "demo")]) == 1
    [again] = sent
    assert again["retry"] is True
    assert again["retry_policy"] == {
        "max_retries": 3,
        "interval_start": 0.0,
        "interval_step": 0.1,
        "interval_max": 0.5,
    }
    assert again["kwargs"] == {"document_id": 1, "bill_no": "B-1", "tenant": "demo"}


# Survivors of the mutation run (docs/TESTING.md, "Mutation testing") that matter.


def test_a_refreshed_token_changes_nothing_for_an_answer_that_is_not_about_auth() -> None:
    for outcome in OutcomeClass:
        if QUERY_ACTIONS[outcome] is not Action.REFRESH_ONCE:
            assert decide_query(outcome, auth_refreshed=True).action is QUERY_ACTIONS[outcome]


def test_a_single_attempt_row_is_exhausted_after_its_one_attempt() -> None:
    once = Backoff(base_seconds=1, cap_seconds=1, max_attempts=1)
    assert once.exhausted(1)
    assert not Backoff(base_seconds=1, cap_seconds=1, max_attempts=2).exhausted(1)


def test_full_jitter_may_draw_a_zero_wait() -> None:
    class LowestDraw(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    row = Backoff(base_seconds=4, cap_seconds=60, max_attempts=5)
    assert row.delay(3, LowestDraw()) == timedelta(0)
    assert decide_push(
        OutcomeClass.TRANSIENT, attempt=1, backoff=row, auth_refreshed=False, rng=LowestDraw()
    ).delay == timedelta(0)  # the caller's generator is the one used
