"""Task events of the hot tasks: one event per task instead of three.

A worker announces every task it runs with ``task-received``, ``task-started`` and
``task-succeeded`` (each a Redis ``PUBLISH`` through a new kombu producer), and the sender adds
``task-sent``. For the tasks every document runs (``fapiao.push``, ``fapiao.reconcile``,
``fapiao.poll``) that is most of Celery's per-message price, while Flower needs only one
of them to list a task, find it by bill number and show its outcome:

| event                               | ``LeanRequest`` sends it | carrying                   |
|-------------------------------------|--------------------------|----------------------------|
| ``task-received``, ``task-started`` | no                       | —                          |
| ``task-succeeded``, ``-failed``,    | yes                      | the event's own fields +   |
| ``-retried``, ``-rejected``,        |                          | ``name``, ``args``,        |
| ``-revoked``                        |                          | ``kwargs`` (as received)   |

So Flower still shows every such task with its name, keywords (``bill_no``) and result or
error, and the ``task-sent`` of the sender shows it as soon as it is queued. What it no longer
shows is the short ``RECEIVED``/``STARTED`` stretch of a task (tens of milliseconds here);
the worker's running tasks stay visible through Flower's worker view (remote control
``inspect active``), which does not use events. The maintenance tasks stay quieter still
(``worker.tasks.QuietRequest``: only failures); the other tasks keep every event.
"""

from __future__ import annotations

from typing import Any, Final

from celery.worker.request import Request

from worker import queues

__all__ = ["LEAN_OPTIONS", "LEAN_TASKS", "OUTCOME_EVENTS", "LeanRequest"]

# The tasks every document runs; their Celery per-task log lines are DEBUG lines too
# (``worker.logs.task_lines_at_debug``).
LEAN_TASKS: Final = frozenset({queues.PUSH, queues.POLL, queues.RECONCILE})

OUTCOME_EVENTS: Final = frozenset(
    {"task-succeeded", "task-failed", "task-retried", "task-rejected", "task-revoked"}
)


class LeanRequest(Request):  # type: ignore[misc]
    """The request of a hot task: only its outcome event, with what ``task-received`` said."""

    def send_event(self, type: str, **fields: Any) -> None:
        eventer = self.eventer
        if type in OUTCOME_EVENTS and eventer is not None and eventer.enabled:
            eventer.send(
                type, uuid=self.id, name=self.name, args=self.argsrepr, kwargs=self.kwargsrepr,
                **fields,
            )  # fmt: skip


# ``send_events=False`` stops the worker's own task-received (sent before any request
# method runs); ``LeanRequest`` sends the outcome regardless.
LEAN_OPTIONS: Final[dict[str, Any]] = {
    "send_events": False,
    "Request": f"{__name__}:LeanRequest",
}
