"""The port from producers to the broker: ``Enqueuer``, its Celery adapter and a recording fake.

Producers enqueue only AFTER the database transaction that made the work durable has
committed (docs/ARCHITECTURE.md). A lost enqueue (broker down, process killed between commit and
send) is harmless: the worker's sweeper re-finds due drafts, withdrawals and unprocessed
callbacks in the database. So an enqueue failure is logged and swallowed, never raised into
the ERP's request.

| message                | task name            | queue       | keywords                       |
|------------------------|----------------------|-------------|--------------------------------|
| ``push(...)``          | ``fapiao.push``      | ``push``    | document_id, bill_no, tenant   |
| ``withdraw(...)``      | ``fapiao.withdraw``  | ``push``    | document_id, bill_no, tenant   |
| ``reconcile(...)``     | ``fapiao.reconcile`` | ``callbacks`` | inbox_id (+ bill_no, tenant)  |

Messages carry ids (and ``bill_no`` so Flower can find a document), never payloads or secrets.

Public API

| name | what it is |
|---|---|
| ``Enqueuer`` | the Protocol: ``push``, ``withdraw``, ``reconcile`` (each returns True when sent) |
| ``CeleryEnqueuer`` | sends through the worker's Celery app and ``worker.enqueue`` helpers |
| ``RecordingEnqueuer`` | a fake that records ``EnqueuedTask``s (tests, dry runs) |
| ``EnqueuedTask`` | one recorded message: task name and keywords |
| ``producer_celery_app(settings)`` | the worker's Celery app for ``settings`` (``worker.app``) |
| ``after_commit(session, action)`` | run ``action`` once the session's transaction commits |
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

from schemas.settings import Settings

__all__ = [
    "PUSH_TASK",
    "RECONCILE_TASK",
    "WITHDRAW_TASK",
    "CeleryEnqueuer",
    "EnqueuedTask",
    "Enqueuer",
    "RecordingEnqueuer",
    "after_commit",
    "producer_celery_app",
]

log = logging.getLogger(__name__)

PUSH_TASK: Final = "fapiao.push"
WITHDRAW_TASK: Final = "fapiao.withdraw"
RECONCILE_TASK: Final = "fapiao.reconcile"


class Enqueuer(Protocol):
    """Sends work to the workers; every method returns False (and logs) when it could not."""

    def push(self, document_id: int, bill_no: str, tenant: str) -> bool: ...

    def withdraw(self, document_id: int, bill_no: str, tenant: str) -> bool: ...

    def reconcile(
        self, inbox_id: int, *, bill_no: str | None = None, tenant: str | None = None
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class EnqueuedTask:
    """One message as it would travel: the task name and its keyword arguments."""

    task: str
    kwargs: Mapping[str, Any]


@dataclass
class RecordingEnqueuer:
    """A fake ``Enqueuer`` that keeps every message (thread-safe); ``fail=True`` drops them."""

    sent: list[EnqueuedTask] = field(default_factory=list)
    fail: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _record(self, task: str, kwargs: dict[str, Any]) -> bool:
        if self.fail:
            return False
        with self._lock:
            self.sent.append(EnqueuedTask(task, kwargs))
        return True

    def push(self, document_id: int, bill_no: str, tenant: str) -> bool:
        return self._record(
            PUSH_TASK, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
        )

    def withdraw(self, document_id: int, bill_no: str, tenant: str) -> bool:
        return self._record(
            WITHDRAW_TASK, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
        )

    def reconcile(
        self, inbox_id: int, *, bill_no: str | None = None, tenant: str | None = None
    ) -> bool:
        labels = {key: value for key, value in (("bill_no", bill_no), ("tenant", tenant)) if value}
        return self._record(RECONCILE_TASK, {"inbox_id": inbox_id, **labels})

    def of(self, task: str) -> list[Mapping[str, Any]]:
        """The keywords of every recorded message of ``task``, in order."""
        with self._lock:
            return [item.kwargs for item in self.sent if item.task == task]

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()


def _reconcile_kwargs(inbox_id: int, bill_no: str | None, tenant: str | None) -> dict[str, Any]:
    """The keywords of ``fapiao.reconcile`` (as ``worker.enqueue.enqueue_reconcile`` sends)."""
    kwargs: dict[str, Any] = {"inbox_id": inbox_id}
    if bill_no:
        kwargs["bill_no"] = bill_no
    if tenant:
        kwargs["tenant"] = tenant
    return kwargs


# Redis commands of one pipelined message: LPUSH of the message, PUBLISH of its task-sent event.
_PIPELINE_COMMANDS: Final = 4


class CeleryEnqueuer:
    """``Enqueuer`` over the worker's Celery app, through the worker's enqueue helpers
    (``worker.enqueue``: ``send_task`` by explicit name, JSON, ids only, fail-fast publish).

    ``reconcile`` (one per stored callback, the receiver's hot path) first sends its message
    and the ``task-sent`` event in ONE Redis pipeline (``Producer.batch``; kombu otherwise
    builds a Redis client and makes a round trip for each); if that fails, it sends again
    through ``worker.enqueue.enqueue_reconcile`` and its retry policy. A pipeline that failed
    after Redis ran it leaves a second message: harmless, a reconcile of a row that is no
    longer ``received`` is skipped.
    """

    def __init__(self, celery_app: Any) -> None:
        self._app = celery_app

    def _guarded(self, task: str, send: Callable[[], bool], **ids: Any) -> bool:
        try:
            sent = send()
        except Exception as exc:  # any broker failure: the sweeper re-finds the work
            log.warning(
                "enqueue of %s failed (%s); the sweeper will send it again",
                task,
                type(exc).__name__,
                extra={"task": task, **ids},
            )
            return False
        return sent

    def push(self, document_id: int, bill_no: str, tenant: str) -> bool:
        from worker.enqueue import enqueue_push

        return self._guarded(
            PUSH_TASK,
            lambda: enqueue_push(document_id, bill_no, tenant, app=self._app),
            document_id=document_id,
            bill_no=bill_no,
        )

    def withdraw(self, document_id: int, bill_no: str, tenant: str) -> bool:
        from worker.enqueue import enqueue_withdraw

        return self._guarded(
            WITHDRAW_TASK,
            lambda: enqueue_withdraw(document_id, bill_no, tenant, app=self._app),
            document_id=document_id,
            bill_no=bill_no,
        )

    def reconcile(
        self, inbox_id: int, *, bill_no: str | None = None, tenant: str | None = None
    ) -> bool:
        from worker.enqueue import enqueue_reconcile

        try:
            self._send_pipelined(RECONCILE_TASK, _reconcile_kwargs(inbox_id, bill_no, tenant))
        except Exception as exc:  # uncertain: send again the usual way (reconcile is idempotent)
            log.info(
                "pipelined enqueue of %s failed (%s); sending it again with retries",
                RECONCILE_TASK,
                type(exc).__name__,
                extra={"task": RECONCILE_TASK, "inbox_id": inbox_id, "bill_no": bill_no},
            )
        else:
            return True
        return self._guarded(
            RECONCILE_TASK,
            lambda: enqueue_reconcile(inbox_id, bill_no=bill_no, tenant=tenant, app=self._app),
            inbox_id=inbox_id,
            bill_no=bill_no,
        )

    def _send_pipelined(self, task: str, kwargs: dict[str, Any]) -> None:
        """One message and its ``task-sent`` event in one Redis pipeline (kombu
        ``Producer.batch``): one round trip and one Redis client instead of two each.
        Routed by the app's ``task_routes`` like every ``send_task``; raises on any failure."""
        app = self._app
        with app.producer_or_acquire() as producer, producer.batch(_PIPELINE_COMMANDS):
            app.send_task(task, kwargs=kwargs, producer=producer)


def producer_celery_app(settings: Settings) -> Any:
    """The worker's Celery app for ``settings`` (routes, JSON, ``sent`` events); it connects
    to nothing until the first send. Built when called, never at import time."""
    from worker.app import create_app

    return create_app(settings)


_PENDING_KEY: Final = "fapiao.after_commit"


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run ``action`` after ``session``'s outermost transaction commits; drop it on rollback.

    Used by ``submit(..., session=caller_session)``: the caller owns the transaction, so the
    push may only be enqueued once the caller's COMMIT has made the document durable. An
    action registered inside a SAVEPOINT that rolls back is dropped with it.
    """
    pending: list[tuple[Callable[[], object], Any]] | None = session.info.get(_PENDING_KEY)
    if pending is None:
        pending = []
        session.info[_PENDING_KEY] = pending
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_soft_rollback", _drop_pending)
    pending.append((action, session.get_nested_transaction()))


def _run_pending(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a SAVEPOINT was released; only the outermost COMMIT makes it durable
    pending: list[tuple[Callable[[], object], Any]] = session.info.get(_PENDING_KEY) or []
    actions = [action for action, _ in pending]
    pending.clear()
    for action in actions:
        try:
            action()
        except Exception:  # the commit already happened; the sweeper covers a lost message
            log.exception("after-commit action failed")


def _drop_pending(session: Session, previous_transaction: Any) -> None:
    pending: list[tuple[Callable[[], object], Any]] | None = session.info.get(_PENDING_KEY)
    if not pending:
        return
    if not previous_transaction.nested:
        pending.clear()
        return
    pending[:] = [(action, txn) for action, txn in pending if txn is not previous_transaction]
