"""What a task returns for Flower: ``outcome_summary`` and the quiet maintenance tasks."""

from __future__ import annotations

from schemas.settings import Settings
from worker import queues
from worker.app import create_app
from worker.tasks import MAINTENANCE_TASKS, SUMMARY_BUDGET, QuietRequest, outcome_summary

REJECTED = "the cloud refused the bill / 发票云拒绝: rejected: [-10007] 价税合计金额不对"


def test_plain_states_list_bills_and_the_others_say_why() -> None:
    summary = outcome_summary(
        [
            ("B1", "pushed", "accepted: [0] ok"),
            ("B2", "rejected", REJECTED),
            ("B3", "failed", "gave up after 8 attempts"),
            ("B4", "pushed", ""),
        ]
    )
    assert summary == {
        "pushed": ["B1", "B4"],
        "rejected": {"B2": REJECTED},
        "failed": {"B3": "gave up after 8 attempts"},
    }


def test_a_long_reason_is_shortened_on_one_line() -> None:
    summary = outcome_summary([("B1", "failed", "x\n" * 500)])
    reason = summary["failed"]["B1"]
    assert "\n" not in reason and reason.endswith("…") and len(reason) <= 160


def test_a_big_batch_stays_within_the_budget_and_counts_what_it_left_out() -> None:
    outcomes = [(f"BILL-{i:04d}", "rejected", REJECTED + f" #{i}") for i in range(200)]
    outcomes += [(f"OK-{i:04d}", "pushed", "") for i in range(300)]
    summary = outcome_summary(outcomes)
    assert len(repr(summary)) <= SUMMARY_BUDGET
    shown = len(summary["rejected"]) + len(summary["pushed"])
    assert shown > 0
    assert shown + sum(summary["more"].values()) == 500
    assert summary["rejected"]["BILL-0000"].startswith("the cloud refused")


def settings() -> Settings:
    return Settings(
        environment="test",
        broker_url="memory://",
        redis_url="redis://127.0.0.1:1/0",
        database_url="sqlite:///unused.db",
    )


def test_only_the_maintenance_tasks_are_quiet() -> None:
    from worker.events import LEAN_TASKS, LeanRequest

    app = create_app(settings())
    assert {queues.POLL_DUE, queues.SWEEP, queues.REFRESH_TOKENS} == MAINTENANCE_TASKS
    for name, task in app.tasks.items():
        if not name.startswith("fapiao."):
            continue
        quiet = name in MAINTENANCE_TASKS
        # The hot tasks announce their outcome only (worker.events), not their start.
        lean = name in LEAN_TASKS
        assert task.send_events is not (quiet or lean), name
        assert (task.Request == f"{QuietRequest.__module__}:QuietRequest") is quiet, name
        assert (task.Request == f"{LeanRequest.__module__}:LeanRequest") is lean, name
