"""worker.events: a hot task sends only its outcome event, labelled as task-received was."""

from __future__ import annotations

from typing import Any

from tests.unit.test_worker_app import settings
from worker import queues
from worker.app import create_app
from worker.events import LeanRequest


class Eventer:
    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, type: str, **fields: Any) -> None:
        self.sent.append((type, fields))


def lean_request(eventer: Eventer) -> LeanRequest:
    request = LeanRequest.__new__(LeanRequest)
    request.id, request.name = "t-1", queues.RECONCILE
    request._argsrepr, request._kwargsrepr = "()", "{'inbox_id': 7, 'bill_no': 'B-1'}"
    request._eventer = eventer
    return request


def test_only_the_outcome_is_announced_with_name_and_keywords() -> None:
    eventer = Eventer()
    request = lean_request(eventer)
    request.send_event("task-received")
    request.send_event("task-started")
    request.send_event("task-succeeded", result="{'processed': ['B-1']}", runtime=0.01)
    request.send_event("task-failed", exception="boom")
    assert eventer.sent == [
        ("task-succeeded", {
            "uuid": "t-1", "name": queues.RECONCILE, "args": "()",
            "kwargs": "{'inbox_id': 7, 'bill_no': 'B-1'}",
            "result": "{'processed': ['B-1']}", "runtime": 0.01,
        }),
        ("task-failed", {
            "uuid": "t-1", "name": queues.RECONCILE, "args": "()",
            "kwargs": "{'inbox_id': 7, 'bill_no': 'B-1'}", "exception": "boom",
        }),
    ]  # fmt: skip


def test_events_off_send_nothing() -> None:
    eventer = Eventer()
    eventer.enabled = False
    lean_request(eventer).send_event("task-succeeded", result="x", runtime=0.0)
    assert eventer.sent == []


def test_the_hot_tasks_are_lean_and_the_others_keep_their_events() -> None:
    app = create_app(settings())
    lean = {name for name, task in app.tasks.items() if task.Request.endswith(":LeanRequest")}
    assert lean == {queues.PUSH, queues.POLL, queues.RECONCILE}
    assert not any(app.tasks[name].send_events for name in lean)
    assert app.tasks[queues.PUSH_BATCH].send_events
    assert app.tasks[queues.RESOLVE_IN_DOUBT].send_events


def test_celerys_per_task_lines_of_the_hot_tasks_are_debug_lines() -> None:
    import logging

    from worker.events import LEAN_TASKS
    from worker.logs import task_lines_at_debug

    assert {queues.PUSH, queues.POLL, queues.RECONCILE} == LEAN_TASKS
    task_lines_at_debug(LEAN_TASKS)
    task_lines_at_debug(LEAN_TASKS)  # installed once
    logger = logging.getLogger("celery.app.trace")
    assert sum(type(f).__name__ == "TaskLinesAtDebug" for f in logger.filters) == 1
    seen: list[tuple[str, str]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.levelname, record.getMessage()))

    handler = Capture()
    logger.addHandler(handler)
    level = logger.level
    try:
        logger.setLevel(logging.INFO)
        for name in (queues.RECONCILE, queues.SWEEP):
            data = {"name": name, "id": "x"}
            logger.info("Task %(name)s[%(id)s] succeeded", data, extra={"data": data})
        data = {"name": queues.RECONCILE, "id": "y"}
        logger.warning("Task %(name)s[%(id)s] retry", data, extra={"data": data})
        logger.setLevel(logging.DEBUG)
        data = {"name": queues.POLL, "id": "z"}
        logger.info("Task %(name)s[%(id)s] succeeded", data, extra={"data": data})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == [
        ("INFO", f"Task {queues.SWEEP}[x] succeeded"),
        ("WARNING", f"Task {queues.RECONCILE}[y] retry"),
        ("DEBUG", f"Task {queues.POLL}[z] succeeded"),
    ]
