"""The Celery app factory and the message format, without a Redis broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from schemas.settings import Settings
from worker import queues
from worker.app import beat_intervals, create_app
from worker.enqueue import CeleryEnqueuer, push_message, reconcile_message, withdraw_message

REPO = Path(__file__).resolve().parents[2]

TASKS = {
    "fapiao.push",
    "fapiao.push_batch",
    "fapiao.resolve_in_doubt",
    "fapiao.poll",
    "fapiao.poll_due",
    "fapiao.reconcile",
    "fapiao.withdraw",
    "fapiao.notify_erp",
    "fapiao.refresh_tokens",
    "fapiao.sweep",
    "fapiao.reconcile_daily",
}


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "broker_url": "memory://",
        "redis_url": "redis://127.0.0.1:1/0",
        "database_url": "sqlite:///unused.db",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_every_task_is_registered_by_its_explicit_name() -> None:
    app = create_app(settings())
    assert set(app.tasks) >= TASKS
    for name in TASKS:
        task = app.tasks[name]
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.ignore_result is True


def test_configuration_follows_the_celery_rules() -> None:
    conf = create_app(settings(broker={"visibility_timeout_seconds": 2400})).conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_ignore_result is True
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_disable_rate_limits is True  # limits are per tenant, in Redis
    assert conf.worker_send_task_events is True
    assert conf.task_send_sent_event is True
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 2400
    assert options["unacked_restore_interval"] == 2
    assert options["unacked_restore_throttle"] == 1
    assert {q.name for q in conf.task_queues} == {"push", "poll", "callbacks", "erp", "maintenance"}
    assert conf.task_routes["fapiao.push"] == {"queue": "push"}
    assert conf.task_routes["fapiao.reconcile"] == {"queue": "callbacks"}
    assert conf.task_routes["fapiao.notify_erp"] == {"queue": "erp"}
    assert conf.task_routes["fapiao.poll"] == {"queue": "poll"}
    assert conf.task_routes["fapiao.sweep"] == {"queue": "maintenance"}
    # A task must end well before Redis would hand its message to another worker.
    assert conf.task_time_limit < options["visibility_timeout"] / 2


def test_beat_schedules_sweeps_polls_and_token_refresh() -> None:
    s = settings()
    schedule = create_app(s).conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} == {
        queues.SWEEP,
        queues.POLL_DUE,
        queues.REFRESH_TOKENS,
        queues.RECONCILE_DAILY,
    }
    # The nightly reconciliation: 02:30 Asia/Shanghai is 18:30 UTC (the app's clock).
    nightly = schedule.pop("reconcile-daily")
    assert (nightly["schedule"].hour, nightly["schedule"].minute) == ({18}, {30})
    every = beat_intervals(s)
    for entry in schedule.values():
        assert entry["options"]["expires"] == entry["schedule"]
        assert entry["schedule"] <= s.broker.visibility_timeout_seconds / 10
    assert every.poll_due == 5
    assert every.sweep == 10


def test_the_enqueuer_sends_ids_and_bill_no_as_keywords() -> None:
    app = create_app(settings())
    enqueuer = CeleryEnqueuer(app)
    assert enqueuer.send([push_message(7, "B-7", "demo")]) == 1
    batch = [
        withdraw_message(8, "B-8", "demo"),
        reconcile_message(9),
        reconcile_message(10, bill_no="B-10", tenant="demo"),
    ]
    assert enqueuer.send(batch) == 3
    seen: dict[str, list[dict[str, object]]] = {}
    with app.connection() as conn:
        for queue in ("push", "callbacks"):
            simple = conn.SimpleQueue(queue)
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                body = message.decode() if isinstance(message.payload, str) else message.payload
                assert message.content_type == "application/json"
                seen.setdefault(queue, []).append(
                    {"task": message.headers["task"], "kwargs": body[1]}
                )
                message.ack()
            simple.close()
    assert seen == {
        "push": [
            {
                "task": "fapiao.push",
                "kwargs": {"document_id": 7, "bill_no": "B-7", "tenant": "demo"},
            },
            {
                "task": "fapiao.withdraw",
                "kwargs": {"document_id": 8, "bill_no": "B-8", "tenant": "demo"},
            },
        ],
        "callbacks": [
            {"task": "fapiao.reconcile", "kwargs": {"inbox_id": 9}},
            {
                "task": "fapiao.reconcile",
                "kwargs": {"inbox_id": 10, "bill_no": "B-10", "tenant": "demo"},
            },
        ],
    }


def test_enqueue_reports_a_broker_that_is_down() -> None:
    app = create_app(settings(broker_url="redis://127.0.0.1:1/0"))
    assert CeleryEnqueuer(app).send([push_message(1, "B-1", "demo")]) == 0


def test_importing_worker_builds_and_connects_nothing() -> None:
    code = (
        "import json, sys, worker\n"
        "built_on_import = worker._app is not None\n"
        "app = worker.app  # Celery's -A lookup builds it lazily\n"
        "print(json.dumps({'built_on_import': built_on_import, 'name': app.main,"
        " 'same': worker.celery is app, 'tasks': sorted(t for t in app.tasks"
        " if t.startswith('fapiao.'))}))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "FAPIAO_ENVIRONMENT": "test",
        # Unreachable on purpose: building the app must not try to connect.
        "FAPIAO_BROKER_URL": "redis://127.0.0.1:1/0",
        "FAPIAO_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result == {
        "built_on_import": False,
        "name": "fapiao",
        "same": True,
        "tasks": sorted(TASKS),
    }
