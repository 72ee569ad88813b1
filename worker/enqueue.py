"""Enqueue helpers for producers — call them AFTER the transaction that wrote the row commits.

| helper                                            | sends                      |
|---------------------------------------------------|----------------------------|
| ``enqueue_push(document_id, bill_no, tenant)``    | ``fapiao.push``            |
| ``enqueue_pushes([(document_id, bill_no, tenant)])``| ``fapiao.push_batch`` × ⌈n / |
|                                                   | ``push.batch_size``⌉       |
| ``enqueue_withdraw(document_id, bill_no, tenant)``| ``fapiao.withdraw``        |
| ``enqueue_reconcile(inbox_id, bill_no=, tenant=)``| ``fapiao.reconcile``       |

Each returns True when the broker took the message and False when it could not be reached
(logged, never raised): the row is already durable, and the sweeper sends the message again
from the database, so an ERP still gets its 202. Enqueuing inside an open transaction would
let a worker look for a row that is not committed yet — hence "after commit".

``enqueue_pushes`` owes the pushes in chunks of up to ``push.batch_size`` documents, one
``fapiao.push_batch`` message each (``document_ids``, ``bill_nos``, ``tenants``: Flower's
search finds a bill inside a batch); a chunk of one is a plain ``fapiao.push``
(``queues.push_messages``). Every message is routed and announced (``task-sent`` event) like
any other, through ONE producer whose Redis commands go out in pipelines (kombu
``Producer.batch``): a 1,000-document intake batch costs a few round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from schemas.settings import PushSettings
from worker import queues
from worker.tasks import CeleryEnqueuer

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["enqueue_push", "enqueue_pushes", "enqueue_reconcile", "enqueue_withdraw"]

log = logging.getLogger(__name__)

# Redis commands buffered before a pipeline is sent (a message and its task-sent event are 2).
_PIPELINE_COMMANDS = 1000


def _enqueuer(app: Celery | None) -> CeleryEnqueuer:
    if app is None:
        from worker import get_app

        app = get_app()
    return CeleryEnqueuer(app)


def enqueue_push(document_id: int, bill_no: str, tenant: str, *, app: Celery | None = None) -> bool:
    """Owe a BILL.PUSH for a committed draft."""
    return _enqueuer(app).send(
        queues.PUSH, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
    )


def enqueue_pushes(
    pushes: Sequence[tuple[int, str, str]],
    *,
    app: Celery | None = None,
    batch_size: int | None = None,
) -> int:
    """Owe a BILL.PUSH for each committed draft ``(document_id, bill_no, tenant)``, batched.

    ``batch_size`` defaults to the app's ``push.batch_size`` (``FAPIAO_PUSH__BATCH_SIZE``).
    Returns how many documents were sent: all of them, or 0 when the broker failed (logged,
    never raised; a failed pipeline may have delivered part of the batch — the sweeper
    re-sends what is still due, and a push of a document already claimed is a no-op).
    """
    if not pushes:
        return 0
    if app is None:
        from worker import get_app

        app = get_app()
    if batch_size is None:
        settings = getattr(app, "settings", None)
        push = getattr(settings, "push", None)
        batch_size = (
            push.batch_size if isinstance(push, PushSettings) else PushSettings().batch_size
        )
    messages = queues.push_messages(pushes, batch_size)
    try:
        with app.producer_or_acquire() as producer, producer.batch(_PIPELINE_COMMANDS):
            for task, kwargs in messages:
                app.send_task(task, kwargs=kwargs, producer=producer)
    except (KombuError, RedisError, OSError) as exc:
        log.warning(
            "could not enqueue a batch of pushes",
            extra={"task": queues.PUSH_BATCH, "count": len(pushes), "error": str(exc)},
        )
        return 0
    return len(pushes)


def enqueue_withdraw(
    document_id: int, bill_no: str, tenant: str, *, app: Celery | None = None
) -> bool:
    """Owe a BILL.WITHDRAW for a committed ``withdrawing`` document."""
    return _enqueuer(app).send(
        queues.WITHDRAW, {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
    )


def enqueue_reconcile(
    inbox_id: int,
    *,
    bill_no: str | None = None,
    tenant: str | None = None,
    app: Celery | None = None,
) -> bool:
    """Owe the reconciliation of a committed ``callback_inbox`` row.

    ``bill_no`` / ``tenant`` (when the receiver knows them) only label the message, so a
    job can be found by bill number in Flower and the logs; the task reads the row.
    """
    kwargs: dict[str, object] = {"inbox_id": inbox_id}
    if bill_no:
        kwargs["bill_no"] = bill_no
    if tenant:
        kwargs["tenant"] = tenant
    return _enqueuer(app).send(queues.RECONCILE, kwargs)
