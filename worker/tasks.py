"""Thin Celery tasks: decode ids, call one service, send its follow-ups, return a summary.

| task                        | service                                   | returns (summary) |
|-----------------------------|-------------------------------------------|-------------------|
| ``fapiao.push``             | ``services.push.push_documents`` (one id) | bill by state     |
| ``fapiao.push_batch``       | ``services.push.push_documents``          | bills by state    |
| ``fapiao.resolve_in_doubt`` | ``services.in_doubt.resolve_in_doubt``    | bill by state     |
| ``fapiao.poll``             | ``services.poll.poll_document``           | bill by state     |
| ``fapiao.poll_due``         | ``services.poll.poll_due``                | tasks sent        |
| ``fapiao.reconcile``        | ``services.reconcile.reconcile_callbacks``| bill by inbox row |
|                             | (its row + waiting ones)                  | state, gathered   |
| ``fapiao.withdraw``         | ``services.withdraw.withdraw_document``   | bill by state     |
| ``fapiao.notify_erp``       | ``services.notify.notify_erp``            | bill by outbox    |
|                             |                                           | row state         |
| ``fapiao.refresh_tokens``   | ``services.refresh.refresh_tokens``       | tenants by result |
| ``fapiao.sweep``            | ``services.sweep.sweep``                  | counts            |
| ``fapiao.reconcile_daily``  | ``services.reconciliation.reconcile_daily`` | findings per    |
|                             |                                           | tenant            |

The return value is for Flower, not for a result backend (results are ignored): the
worker's ``task-succeeded`` event carries its ``repr``, which Flower shows and searches as
the task's *result*. A summary groups bill numbers by the state the service reported
(``outcome_summary``): ``{"pushed": ["B1"], "rejected": {"B2": "<the cloud's errorCode and
message>"}}`` — states that need no explanation list bill numbers, every other state maps
each bill to the service's reason. It is kept under ``SUMMARY_BUDGET`` characters (fewer
entries, shortened reasons, ``"more": {state: n}`` for what was left out), below Celery's
``resultrepr_maxsize``.

``bill_no`` and ``tenant`` keywords (``bill_nos``/``tenants`` for a batch) label the message
for Flower and the summary; the body reads the document itself. Maintenance tasks
(``fapiao.poll_due``, ``fapiao.sweep``, ``fapiao.refresh_tokens``: beat sends one every few
seconds, ~26,000 a day) send no task events while they succeed (``send_events=False``), so
they do not crowd Flower's history; ``QuietRequest`` still announces a failure, retry or
rejection of one (with its name), and the worker logs every failure either way.

Infrastructure hiccups (database or Redis connection errors) are retried by Celery with the
``task`` row of the retry table (``worker.retry_policy``: by default 6 tries, a full-jitter
wait of 2 s doubling up to 30 s, far below the visibility timeout); the message is sent again
with the same keywords. Everything the cloud says is handled by the services and never
raises. A task that loses its worker is re-queued
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from celery.worker.request import Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from worker import queues
from worker.enqueue import CeleryEnqueuer, Followup
from worker.events import LEAN_OPTIONS, LEAN_TASKS
from worker.logs import task_lines_at_debug
from worker.retry_policy import Backoff, retry_table
from worker.runtime import Runtime, build_runtime, policy_from_settings

if TYPE_CHECKING:
    from celery import Task

    from worker.app import FapiaoCelery

__all__ = [
    "INFRASTRUCTURE_ERRORS",
    "MAINTENANCE_TASKS",
    "Handled",
    "QuietRequest",
    "outcome_summary",
    "register_tasks",
    "reset_runtime",
    "run",
    "runtime_for",
    "summarize",
]

log = logging.getLogger(__name__)

# Retried with the table's ``task`` row (``_retry``); anything else fails the task.
INFRASTRUCTURE_ERRORS: Final = (DatabaseOperationalError, RedisConnectionError, RedisTimeoutError)

TASK_OPTIONS: Final[dict[str, Any]] = {
    "shared": False,
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}

_runtimes: dict[tuple[int, int], Runtime] = {}
_runtimes_lock = threading.Lock()


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


Summary = dict[str, Any]

# States whose bill numbers need no reason beside them in a summary.
PLAIN_STATES: Final = frozenset(
    {"pushed", "invoiced", "withdrawn", "delivered", "processed", "partially_invoiced", "reversed"}
)
SUMMARY_BUDGET: Final = 900  # characters of repr(summary); Celery cuts the event at 1024
REASON_CHARS: Final = 160

MAINTENANCE_TASKS: Final = frozenset({queues.POLL_DUE, queues.SWEEP, queues.REFRESH_TOKENS})


def outcome_summary(outcomes: Iterable[tuple[str, str, str]]) -> Summary:
    """``{state: [bill, …]}`` / ``{state: {bill: reason}}`` from ``(bill, state, reason)``.

    Kept under ``SUMMARY_BUDGET`` characters: reasons are shortened, and the biggest group
    loses entries until it fits; what was left out is counted in ``"more": {state: n}``.
    """
    grouped: dict[str, list[tuple[str, str]]] = {}
    for label, state, reason in outcomes:
        grouped.setdefault(state, []).append((label, reason))
    summary: Summary = {}
    for state, entries in grouped.items():
        if state in PLAIN_STATES:
            summary[state] = [label for label, _ in entries]
        else:
            summary[state] = {label: _shorten(reason) for label, reason in entries}
    more: dict[str, int] = {}
    while len(repr(summary)) > SUMMARY_BUDGET:
        cut = _largest_group(summary)
        if cut is None:
            break
        kept = summary[cut]
        if isinstance(kept, dict):
            kept.pop(next(reversed(kept)))
        else:
            kept.pop()
        more[cut] = more.get(cut, 0) + 1
        summary["more"] = dict(more)
    return summary


def _shorten(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def _largest_group(summary: Summary) -> str | None:
    """The state with the most entries left (a bill list before reasons on a tie)."""
    sizes = {
        state: (len(entries), isinstance(entries, list))
        for state, entries in summary.items()
        if state != "more" and entries
    }
    return max(sizes, key=lambda state: sizes[state]) if sizes else None


def _label(kwargs: Mapping[str, Any], id_key: str) -> str:
    """The bill number of a message, else its id (``document 7``, ``inbox 3``)."""
    bill_no = kwargs.get("bill_no")
    if bill_no:
        return str(bill_no)
    return f"{id_key.removesuffix('_id')} {kwargs.get(id_key)}"


@dataclass(frozen=True, slots=True)
class Handled:
    """What a service said: the status word, the messages it owes, the summary for Flower."""

    status: str
    followups: list[Followup]
    summary: Summary


Handler = Callable[[Runtime, Mapping[str, Any]], Handled]


def _one(kwargs: Mapping[str, Any], id_key: str, status: str, detail: str) -> Summary:
    return outcome_summary([(_label(kwargs, id_key), status, detail)])


def _pushed(
    kw: Mapping[str, Any], bill_nos: list[Any], outcomes: list[Any], own_status: str = ""
) -> Handled:
    """The ``Handled`` of a push task: the batch's ids first, then the drafts it gathered."""
    ids = [int(i) for i in kw.get("document_ids") or [kw["document_id"]]]
    labels = [
        str(bill_nos[i]) if i < len(bill_nos) and bill_nos[i] else f"document {doc}"
        for i, doc in enumerate(ids)
    ] + [out.bill_no or f"document {out.document_id}" for out in outcomes[len(ids) :]]
    counts = Counter(out.status for out in outcomes)
    status = " ".join(f"{state}={n}" for state, n in sorted(counts.items()))
    summary = outcome_summary(
        (label, out.status, out.detail) for label, out in zip(labels, outcomes, strict=True)
    )
    followups = [f for out in outcomes for f in out.followups]
    return Handled(own_status or status, followups, summary)


def _handlers() -> dict[str, Handler]:
    from worker.services.in_doubt import resolve_in_doubt
    from worker.services.notify import notify_erp
    from worker.services.poll import poll_document, poll_due
    from worker.services.push import push_documents
    from worker.services.reconcile import reconcile_callbacks
    from worker.services.reconciliation import reconcile_daily
    from worker.services.refresh import refresh_tokens
    from worker.services.sweep import sweep
    from worker.services.withdraw import withdraw_document

    def push(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        # Gathers other due drafts of its tenant (push_documents): one task, one batch.
        out, *others = push_documents(rt, [int(kw["document_id"])], gather=True)
        if not others:
            summary = _one(kw, "document_id", out.status, out.detail)
            return Handled(out.status, out.followups, summary)
        return _pushed(kw, [kw.get("bill_no") or ""], [out, *others], own_status=out.status)

    def push_batch(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        ids = [int(i) for i in kw["document_ids"]]
        outcomes = push_documents(rt, ids, gather=True)
        return _pushed(kw, list(kw.get("bill_nos") or []), outcomes)

    def resolve(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        out = resolve_in_doubt(rt, int(kw["document_id"]))
        return Handled(out.status, out.followups, _one(kw, "document_id", out.status, out.detail))

    def poll(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        out = poll_document(rt, int(kw["document_id"]))
        return Handled(out.status, out.followups, _one(kw, "document_id", out.status, out.detail))

    def due(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        followups = poll_due(rt)
        return Handled(f"due={len(followups)}", followups, {"due": len(followups)})

    def reconcile(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        # Gathers other waiting callbacks (reconcile_callbacks): one task, one batch.
        (_, out), *others = reconcile_callbacks(rt, [int(kw["inbox_id"])])
        followups = list(out.followups) + [f for _, o in others for f in o.followups]
        summary = _one(kw, "inbox_id", out.state, out.detail)
        if others:
            counts = Counter(o.state for _, o in others)
            summary["gathered"] = dict(sorted(counts.items()))
        return Handled(out.state, followups, summary)

    def withdraw(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        out = withdraw_document(rt, int(kw["document_id"]))
        return Handled(out.status, out.followups, _one(kw, "document_id", out.status, out.detail))

    def notify(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        out = notify_erp(rt, int(kw["outbox_id"]))
        return Handled(out.state, out.followups, _one(kw, "outbox_id", out.state, out.detail))

    def refresh(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        report = refresh_tokens(rt)
        summary = {
            "fresh": report.fresh,
            "paused": report.paused,
            "unreachable": report.unreachable,
        }
        return Handled(f"fresh={len(report.fresh)} paused={len(report.paused)}", [], summary)

    def sweep_once(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        report = sweep(rt)
        counts = {
            "drafts": report.drafts,
            "leases": report.expired_leases,
            "withdrawals": report.withdrawals,
            "notifications": report.notifications,
            "callbacks": report.callbacks,
            "alerts": len(report.alerts),
        }
        status = " ".join(f"{key}={n}" for key, n in counts.items())
        return Handled(status, report.followups, counts)

    def daily(rt: Runtime, kw: Mapping[str, Any]) -> Handled:
        reports = reconcile_daily(rt)
        totals = {str(r["tenant"]): int(r["total"]) for r in reports}
        status = " ".join(f"{tenant}={n}" for tenant, n in totals.items())
        return Handled(status, [], {"findings": totals})

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
        queues.RECONCILE_DAILY: daily,
    }


def run(rt: Runtime, task: str, kwargs: Mapping[str, Any]) -> tuple[str, list[Followup]]:
    """Run the service behind ``task`` once; its follow-ups are NOT sent (the caller does)."""
    handled = _handlers()[task](rt, kwargs)
    return handled.status, handled.followups


def summarize(rt: Runtime, task: str, kwargs: Mapping[str, Any]) -> Handled:
    """Like ``run``, with the summary the task returns (tests, tools)."""
    return _handlers()[task](rt, kwargs)


LOUD_EVENTS: Final = frozenset({"task-failed", "task-retried", "task-rejected", "task-revoked"})


class QuietRequest(Request):  # type: ignore[misc]
    """The request of a maintenance task: events only when something went wrong.

    ``Task.send_events=False`` silences every event of the task; this request still sends
    the ones an operator must see, named (an event without its ``task-received`` would
    otherwise show in Flower as a nameless task).
    """

    def send_event(self, type: str, **fields: Any) -> None:
        eventer = self.eventer
        if type in LOUD_EVENTS and eventer is not None and eventer.enabled:
            eventer.send(type, uuid=self.id, name=self.name, **fields)


QUIET_OPTIONS: Final[dict[str, Any]] = {
    "send_events": False,
    "Request": f"{__name__}:QuietRequest",
}


def _retry(task: Task, row: Backoff, exc: Exception) -> NoReturn:
    """Celery's retry of ``task`` after ``exc`` (the same message again), waiting as the
    table's ``task`` row says; once the row's attempts are spent, ``exc`` itself is raised."""
    attempt = task.request.retries + 1
    countdown = row.delay(attempt).total_seconds()
    raise task.retry(exc=exc, countdown=countdown, max_retries=row.max_attempts - 1)


def register_tasks(app: FapiaoCelery) -> None:
    """Register every ``fapiao.*`` task on ``app`` (module docstring)."""
    task_lines_at_debug(LEAN_TASKS)
    handlers = _handlers()
    retries = retry_table(app.settings).task

    def body(self: Task, task: str, kwargs: Mapping[str, Any]) -> Summary:
        try:
            rt = runtime_for(app)
            handled = handlers[task](rt, kwargs)
        except INFRASTRUCTURE_ERRORS as exc:
            _retry(self, retries, exc)
        rt.dispatch(handled.followups)
        return handled.summary

    def labels(bill_no: str, tenant: str) -> dict[str, str]:
        return {"bill_no": bill_no, "tenant": tenant}

    @app.task(name=queues.PUSH, **TASK_OPTIONS, **LEAN_OPTIONS)  # type: ignore[untyped-decorator]
    def push(self: Task, document_id: int, bill_no: str = "", tenant: str = "") -> Summary:
        return body(self, queues.PUSH, {"document_id": document_id, **labels(bill_no, tenant)})

    @app.task(name=queues.PUSH_BATCH, **TASK_OPTIONS, **_batch_time_limits(app))  # type: ignore[untyped-decorator]
    def push_batch(
        self: Task,
        document_ids: list[int],
        bill_nos: list[str] | None = None,
        tenants: list[str] | None = None,
    ) -> Summary:
        return body(self, queues.PUSH_BATCH, {"document_ids": document_ids, "bill_nos": bill_nos})

    @app.task(name=queues.RESOLVE_IN_DOUBT, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def resolve_in_doubt(
        self: Task, document_id: int, bill_no: str = "", tenant: str = ""
    ) -> Summary:
        return body(
            self, queues.RESOLVE_IN_DOUBT, {"document_id": document_id, **labels(bill_no, tenant)}
        )

    @app.task(name=queues.POLL, **TASK_OPTIONS, **LEAN_OPTIONS)  # type: ignore[untyped-decorator]
    def poll(self: Task, document_id: int, bill_no: str = "", tenant: str = "") -> Summary:
        return body(self, queues.POLL, {"document_id": document_id, **labels(bill_no, tenant)})

    @app.task(name=queues.POLL_DUE, **TASK_OPTIONS, **QUIET_OPTIONS)  # type: ignore[untyped-decorator]
    def poll_due(self: Task) -> Summary:
        return body(self, queues.POLL_DUE, {})

    @app.task(name=queues.RECONCILE, **TASK_OPTIONS, **LEAN_OPTIONS)  # type: ignore[untyped-decorator]
    def reconcile(self: Task, inbox_id: int, bill_no: str = "", tenant: str = "") -> Summary:
        return body(self, queues.RECONCILE, {"inbox_id": inbox_id, **labels(bill_no, tenant)})

    @app.task(name=queues.WITHDRAW, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def withdraw(self: Task, document_id: int, bill_no: str = "", tenant: str = "") -> Summary:
        return body(self, queues.WITHDRAW, {"document_id": document_id, **labels(bill_no, tenant)})

    @app.task(name=queues.NOTIFY_ERP, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def notify_erp(self: Task, outbox_id: int, bill_no: str = "", tenant: str = "") -> Summary:
        return body(self, queues.NOTIFY_ERP, {"outbox_id": outbox_id, **labels(bill_no, tenant)})

    @app.task(name=queues.REFRESH_TOKENS, **TASK_OPTIONS, **QUIET_OPTIONS)  # type: ignore[untyped-decorator]
    def refresh_tokens(self: Task) -> Summary:
        return body(self, queues.REFRESH_TOKENS, {})

    @app.task(name=queues.SWEEP, **TASK_OPTIONS, **QUIET_OPTIONS)  # type: ignore[untyped-decorator]
    def sweep(self: Task) -> Summary:
        return body(self, queues.SWEEP, {})

    @app.task(name=queues.RECONCILE_DAILY, **TASK_OPTIONS, **_long_time_limits(app))  # type: ignore[untyped-decorator]
    def reconcile_daily(self: Task) -> Summary:
        return body(self, queues.RECONCILE_DAILY, {})


def _long_time_limits(app: FapiaoCelery) -> dict[str, float]:
    """The nightly reconciliation asks the cloud once per bill: the app's upper bound."""
    soft = max(60.0, app.settings.broker.visibility_timeout_seconds / 2 - 15)
    return {"soft_time_limit": soft, "time_limit": soft + 15}


def _batch_time_limits(app: FapiaoCelery) -> dict[str, float]:
    """``fapiao.push_batch``'s limits (module docstring); never above the app's bound."""
    settings = app.settings
    rounds = math.ceil(settings.push.batch_size / settings.push.batch_concurrency) + 1
    lease = policy_from_settings(settings).push_lease.total_seconds()
    bound = settings.broker.visibility_timeout_seconds / 2 - 15
    soft = min(max(lease * rounds, 60.0), bound)
    return {"soft_time_limit": soft, "time_limit": soft + 15}
