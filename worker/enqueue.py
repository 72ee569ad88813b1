"""The one port to the broker: ``Enqueuer``, its Celery adapter and its recording fake.

Everything that owes a task sends it through an ``Enqueuer``: the HTTP API and the CLI (via
``producers.bootstrap.Components``), ``producers.submit()`` and the worker's own follow-ups
(``Runtime.dispatch``). A send is a batch of ``Followup`` messages (one follow-up is a batch of
one) and returns how many the broker took.

Work is owed only AFTER the transaction that made it durable has committed: a worker must
never look for a row that is not committed yet (``after_commit`` when the caller owns the
transaction). A lost message (broker down, process killed between commit and send) is
harmless: the sweeper re-finds due drafts, withdrawals, notifications and unprocessed
callbacks in the database, and a duplicate message is a no-op (compare-and-set claims). So a
failed send is logged and counted, never raised into an ERP's request or a task.

Messages (``worker.queues`` routes them; names, queues and keywords are a contract: Flower
finds a document by the ``bill_no`` keyword)

| builder                                            | task                 | keywords           |
|----------------------------------------------------|----------------------|--------------------|
| ``push_message(document_id, bill_no, tenant)``     | ``fapiao.push``      | document_id,       |
|                                                    |                      | bill_no, tenant    |
| ``push_messages(pushes, batch_size)``              | ``fapiao.push_batch``| document_ids,      |
|                                                    | per chunk (a chunk   | bill_nos, tenants  |
|                                                    | of one: a push)      |                    |
| ``withdraw_message(document_id, bill_no, tenant)`` | ``fapiao.withdraw``  | document_id,       |
|                                                    |                      | bill_no, tenant    |
| ``reconcile_message(inbox_id, bill_no=, tenant=)`` | ``fapiao.reconcile`` | inbox_id (bill_no, |
|                                                    |                      | tenant when known) |

Worker services build their own ``Followup``s (notify, resolve-in-doubt, poll, …).

``CeleryEnqueuer`` sends a batch through ONE producer whose Redis commands (each message's
LPUSH and its ``task-sent`` PUBLISH) go out in one pipeline (kombu ``Producer.batch``): one
round trip instead of two per message, a few for a 1,000-document intake. If the pipeline
fails, the messages are sent again one by one with the ``publish`` row of the retry table
(kombu's publish retry), stopping at the first one the broker still refuses. A pipeline that
failed after Redis ran it (or ran part of it) leaves duplicates: harmless, see above.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import Session

from worker import queues
from worker.retry_policy import Backoff, retry_table

if TYPE_CHECKING:
    from worker.app import FapiaoCelery

__all__ = [
    "CeleryEnqueuer",
    "Enqueuer",
    "Followup",
    "RecordingEnqueuer",
    "after_commit",
    "notify_message",
    "push_message",
    "push_messages",
    "reconcile_message",
    "withdraw_message",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Followup:
    """A task owed once the transaction that made its work durable has committed."""

    task: str
    kwargs: Mapping[str, Any]
    countdown: float | None = None


class Enqueuer(Protocol):
    """Sends messages to the workers; returns how many the broker took (never raises)."""

    def send(self, messages: Iterable[Followup]) -> int: ...


def push_message(document_id: int, bill_no: str, tenant: str) -> Followup:
    """Owe a BILL.PUSH for a committed draft."""
    return Followup(queues.PUSH, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant})


def push_messages(pushes: Sequence[tuple[int, str, str]], batch_size: int) -> list[Followup]:
    """Owe a BILL.PUSH for each committed ``(document_id, bill_no, tenant)``, in chunks of up to
    ``batch_size`` (``FAPIAO_PUSH__BATCH_SIZE``) per ``fapiao.push_batch`` message."""
    return [Followup(task, kwargs) for task, kwargs in queues.push_messages(pushes, batch_size)]


def withdraw_message(document_id: int, bill_no: str, tenant: str) -> Followup:
    """Owe a BILL.WITHDRAW for a committed ``withdrawing`` document."""
    return Followup(
        queues.WITHDRAW, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
    )


def notify_message(
    outbox_id: int, *, bill_no: str | None = None, tenant: str | None = None
) -> Followup:
    """Owe the delivery of a committed ``erp_outbox`` row; ``bill_no``/``tenant`` label it."""
    kwargs: dict[str, Any] = {"outbox_id": outbox_id}
    if bill_no:
        kwargs["bill_no"] = bill_no
    if tenant:
        kwargs["tenant"] = tenant
    return Followup(queues.NOTIFY_ERP, kwargs)


def reconcile_message(
    inbox_id: int, *, bill_no: str | None = None, tenant: str | None = None
) -> Followup:
    """Owe the reconciliation of a committed ``callback_inbox`` row; ``bill_no``/``tenant``
    (when the receiver knows them) only label the message for Flower and the logs."""
    kwargs: dict[str, Any] = {"inbox_id": inbox_id}
    if bill_no:
        kwargs["bill_no"] = bill_no
    if tenant:
        kwargs["tenant"] = tenant
    return Followup(queues.RECONCILE, kwargs)


# Redis commands per pipeline: a message and its task-sent event are 2; a bigger batch goes
# out in several pipelines of this size.
_PIPELINE_COMMANDS: Final = 1000
_BROKER_ERRORS: Final = (KombuError, RedisError, OSError)


class CeleryEnqueuer:
    """``Enqueuer`` over a Celery app: ``send_task`` by explicit name, routed by the app's
    ``task_routes``, JSON, ids only; pipelined, then retried (module docstring)."""

    def __init__(self, app: FapiaoCelery, *, publish: Backoff | None = None) -> None:
        self._app = app
        self._publish = publish if publish is not None else retry_table(app.settings).publish

    @property
    def app(self) -> FapiaoCelery:
        return self._app

    def send(self, messages: Iterable[Followup]) -> int:
        batch = list(messages)
        if not batch:
            return 0
        try:
            self._send_pipelined(batch)
        except Exception as exc:  # uncertain: send again the retrying way (duplicates are no-ops)
            log.info(
                "pipelined enqueue failed (%s); sending again with retries",
                type(exc).__name__,
                extra={"task": batch[0].task, "count": len(batch)},
            )
        else:
            return len(batch)
        sent = 0
        for message in batch:
            if not self._send_one(message):
                # The broker is away: the rest would fail alike; the sweeper sends them later.
                log.warning(
                    "could not enqueue %d message(s); the sweeper will send them again",
                    len(batch) - sent,
                    extra={"task": message.task, "count": len(batch) - sent,
                           "bill_no": message.kwargs.get("bill_no")},
                )  # fmt: skip
                break
            sent += 1
        return sent

    def _send_pipelined(self, batch: Sequence[Followup]) -> None:
        """Every message and its ``task-sent`` event through one producer, its Redis commands
        in pipelines (kombu ``Producer.batch``); raises on any failure."""
        app = self._app
        commands = min(_PIPELINE_COMMANDS, 2 * len(batch) + 2)
        with app.producer_or_acquire() as producer, producer.batch(commands):
            for message in batch:
                app.send_task(
                    message.task,
                    kwargs=dict(message.kwargs),
                    countdown=message.countdown,
                    producer=producer,
                )

    def _send_one(self, message: Followup) -> bool:
        row = self._publish
        try:
            self._app.send_task(
                message.task,
                kwargs=dict(message.kwargs),
                countdown=message.countdown,
                retry=row.max_attempts > 1,
                retry_policy={
                    "max_retries": row.max_attempts - 1,
                    "interval_start": row.ceiling(1),
                    "interval_step": row.step_seconds,
                    "interval_max": row.cap_seconds,
                },
            )
        except _BROKER_ERRORS as exc:
            log.warning("could not enqueue", extra={"task": message.task, "error": str(exc)})
            return False
        except Exception:  # not the broker: a bug, loud — but the caller's work is committed
            log.exception("enqueue failed", extra={"task": message.task})
            return False
        return True


@dataclass
class RecordingEnqueuer:
    """A fake ``Enqueuer`` that keeps every message (thread-safe); ``fail=True`` is a broker
    that is down (nothing is kept, 0 sent)."""

    sent: list[Followup] = field(default_factory=list)
    fail: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, messages: Iterable[Followup]) -> int:
        batch = [Followup(m.task, dict(m.kwargs), m.countdown) for m in messages]
        if self.fail:
            return 0
        with self._lock:
            self.sent.extend(batch)
        return len(batch)

    def of(self, task: str) -> list[Mapping[str, Any]]:
        """The keywords of every recorded message of ``task``, in order."""
        with self._lock:
            return [m.kwargs for m in self.sent if m.task == task]

    def pushes(self) -> list[Mapping[str, Any]]:
        """One ``fapiao.push``-style keywords dict per document owed a push, whether it went
        as a ``fapiao.push`` or inside a ``fapiao.push_batch``, in order."""
        with self._lock:
            recorded = list(self.sent)
        owed: list[Mapping[str, Any]] = []
        for m in recorded:
            if m.task == queues.PUSH:
                owed.append(m.kwargs)
            elif m.task == queues.PUSH_BATCH:
                owed.extend(
                    {"document_id": d, "bill_no": b, "tenant": t}
                    for d, b, t in zip(
                        m.kwargs["document_ids"], m.kwargs["bill_nos"], m.kwargs["tenants"],
                        strict=True,
                    )
                )  # fmt: skip
        return owed

    def take(self) -> list[Followup]:
        """Every recorded message, removed (``worker.testing.drain``)."""
        with self._lock:
            taken, self.sent = self.sent, []
        return taken

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()


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
