"""Thin Celery tasks: decode ids, call one service, send its follow-ups, return a status word.

| task                        | service                                   | returns           |
|-----------------------------|-------------------------------------------|-------------------|
| ``fapiao.push``             | ``services.push.push_document``           | state / skipped   |
| ``fapiao.push_batch``       | ``services.push.push_documents``          | count per state   |
| ``fapiao.resolve_in_doubt`` | ``services.in_doubt.resolve_in_doubt``    | state / skipped   |
| ``fapiao.poll``             | ``services.poll.poll_document``           | state             |
| ``fapiao.poll_due``         | ``services.poll.poll_due``                | tasks sent        |
| ``fapiao.reconcile``        | ``services.reconcile.reconcile_callback`` | inbox row state   |
| ``fapiao.withdraw``         | ``services.withdraw.withdraw_document``   | state             |
| ``fapiao.notify_erp``       | ``services.notify.notify_erp``            | outbox row state  |
| ``fapiao.refresh_tokens``   | ``services.refresh.refresh_tokens``       | tenants refreshed |
| ``fapiao.sweep``            | ``services.sweep.sweep``                  | summary           |

``bill_no`` and ``tenant`` keywords are accepted and ignored by the body: they are there for
Flower. Infrastructure hiccups (database or Redis connection errors) are retried by Celery
with a short, jittered backoff far below the visibility timeout; everything the cloud says is
handled by the services and never raises. A task that loses its worker is re-queued
(``acks_late`` + ``task_reject_on_worker_lost``) and is harmless to run twice.

One ``Runtime`` per process (``runtime_for``), built lazily after the prefork fork so no
connection is shared between processes.

``fapiao.push_batch`` gets its own time limits: one push lease per round of
``push.batch_concurrency`` calls (plus one), within the app's half-visibility bound.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from worker import queues
from worker.runtime import Followup, Runtime, build_runtime, policy_from_settings

if TYPE_CHECKING:
    from celery import Celery

    from worker.app import FapiaoCelery

__all__ = ["CeleryEnqueuer", "register_tasks", "reset_runtime", "run", "runtime_for"]

log = logging.getLogger(__name__)

_INFRASTRUCTURE_ERRORS = (DatabaseOperationalError, RedisConnectionError, RedisTimeoutError)

TASK_OPTIONS: dict[str, Any] = {
    "shared": False,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": _INFRASTRUCTURE_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}

_runtimes: dict[tuple[int, int], Runtime] = {}
_runtimes_lock = threading.Lock()


class CeleryEnqueuer:
    """``Enqueuer`` over a Celery app: ``send_task`` by name, routed by ``task_routes``."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def send(self, task: str, kwargs: Mapping[str, Any], *, countdown: float | None = None) -> bool:
        try:
            self._app.send_task(
                task,
                kwargs=dict(kwargs),
                countdown=countdown,
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0,
                    "interval_step": 0.2,
                    "interval_max": 0.5,
                },
            )
        except (KombuOperationalError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # The database row is the truth; the sweeper sends it again.
            log.warning("could not enqueue", extra={"task": task, "error": str(exc)})
            return False
        return True


def runtime_for(app: FapiaoCelery) -> Runtime:
    """This process's ``Runtime`` for ``app`` (built on first use, rebuilt after a fork)."""
    key = (id(app), os.getpid())
    runtime = _runtimes.get(key)
    if runtime is not None:
        return runtime
    with _runtimes_lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            runtime = build_runtime(app.settings, enqueuer=CeleryEnqueuer(app))
            _runtimes[key] = runtime
        return runtime


def reset_runtime(app: FapiaoCelery, runtime: Runtime | None = None) -> None:
    """Install ``runtime`` for ``app`` in this process (tests), or drop the current one."""
    key = (id(app), os.getpid())
    with _runtimes_lock:
        old = _runtimes.pop(key, None)
        if runtime is not None:
            _runtimes[key] = runtime
    if old is not None and old is not runtime:
        old.close()


Handler = Callable[[Runtime, Mapping[str, Any]], tuple[str, list[Followup]]]


def _handlers() -> dict[str, Handler]:
    from worker.services.in_doubt import resolve_in_doubt
    from worker.services.notify import notify_erp
    from worker.services.poll import poll_document, poll_due
    from worker.services.push import push_document, push_documents
    from worker.services.reconcile import reconcile_callback
    from worker.services.refresh import refresh_tokens
    from worker.services.sweep import sweep
    from worker.services.withdraw import withdraw_document

    def push(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = push_document(rt, int(kw["document_id"]))
        return out.status, out.followups

    def push_batch(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        outcomes = push_documents(rt, [int(i) for i in kw["document_ids"]])
        counts = Counter(out.status for out in outcomes)
        summary = " ".join(f"{status}={n}" for status, n in sorted(counts.items()))
        return summary, [f for out in outcomes for f in out.followups]

    def resolve(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = resolve_in_doubt(rt, int(kw["document_id"]))
        return out.status, out.followups

    def poll(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = poll_document(rt, int(kw["document_id"]))
        return out.status, out.followups

    def due(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        followups = poll_due(rt)
        return f"due={len(followups)}", followups

    def reconcile(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = reconcile_callback(rt, int(kw["inbox_id"]))
        return out.state, out.followups

    def withdraw(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = withdraw_document(rt, int(kw["document_id"]))
        return out.status, out.followups

    def notify(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        out = notify_erp(rt, int(kw["outbox_id"]))
        return out.state, out.followups

    def refresh(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        report = refresh_tokens(rt)
        return f"fresh={len(report.fresh)} paused={len(report.paused)}", []

    def sweep_once(rt: Runtime, kw: Mapping[str, Any]) -> tuple[str, list[Followup]]:
        report = sweep(rt)
        summary = (
            f"drafts={report.drafts} leases={report.expired_leases}"
            f" withdrawals={report.withdrawals} notifications={report.notifications}"
            f" callbacks={report.callbacks} alerts={len(report.alerts)}"
        )
        return summary, report.followups

    return {
        queues.PUSH: push,
        queues.PUSH_BATCH: push_batch,
        queues.RESOLVE_IN_DOUBT: resolve,
        queues.POLL: poll,
        queues.POLL_DUE: due,
        queues.RECONCILE: reconcile,
        queues.WITHDRAW: withdraw,
        queues.NOTIFY_ERP: notify,
        queues.REFRESH_TOKENS: refresh,
        queues.SWEEP: sweep_once,
    }


def run(rt: Runtime, task: str, kwargs: Mapping[str, Any]) -> tuple[str, list[Followup]]:
    """Run the service behind ``task`` once; its follow-ups are NOT sent (the caller does)."""
    return _handlers()[task](rt, kwargs)


def register_tasks(app: FapiaoCelery) -> None:
    """Register every ``fapiao.*`` task on ``app`` (module docstring)."""
    handlers = _handlers()

    def body(task: str, kwargs: Mapping[str, Any]) -> str:
        rt = runtime_for(app)
        status, followups = handlers[task](rt, kwargs)
        rt.dispatch(followups)
        return status

    @app.task(name=queues.PUSH, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def push(document_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.PUSH, {"document_id": document_id})

    @app.task(name=queues.PUSH_BATCH, **TASK_OPTIONS, **_batch_time_limits(app))  # type: ignore[untyped-decorator]
    def push_batch(
        document_ids: list[int], bill_nos: list[str] | None = None, tenants: list[str] | None = None
    ) -> str:
        return body(queues.PUSH_BATCH, {"document_ids": document_ids})

    @app.task(name=queues.RESOLVE_IN_DOUBT, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def resolve_in_doubt(document_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.RESOLVE_IN_DOUBT, {"document_id": document_id})

    @app.task(name=queues.POLL, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def poll(document_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.POLL, {"document_id": document_id})

    @app.task(name=queues.POLL_DUE, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def poll_due() -> str:
        return body(queues.POLL_DUE, {})

    @app.task(name=queues.RECONCILE, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def reconcile(inbox_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.RECONCILE, {"inbox_id": inbox_id})

    @app.task(name=queues.WITHDRAW, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def withdraw(document_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.WITHDRAW, {"document_id": document_id})

    @app.task(name=queues.NOTIFY_ERP, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def notify_erp(outbox_id: int, bill_no: str = "", tenant: str = "") -> str:
        return body(queues.NOTIFY_ERP, {"outbox_id": outbox_id})

    @app.task(name=queues.REFRESH_TOKENS, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def refresh_tokens() -> str:
        return body(queues.REFRESH_TOKENS, {})

    @app.task(name=queues.SWEEP, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def sweep() -> str:
        return body(queues.SWEEP, {})


def _batch_time_limits(app: FapiaoCelery) -> dict[str, float]:
    """``fapiao.push_batch``'s limits (module docstring); never above the app's bound."""
    settings = app.settings
    rounds = math.ceil(settings.push.batch_size / settings.push.batch_concurrency) + 1
    lease = policy_from_settings(settings).push_lease.total_seconds()
    bound = settings.broker.visibility_timeout_seconds / 2 - 15
    soft = min(max(lease * rounds, 60.0), bound)
    return {"soft_time_limit": soft, "time_limit": soft + 15}
