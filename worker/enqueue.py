"""Enqueue helpers for producers — call them AFTER the transaction that wrote the row commits.

| helper                                            | sends                      |
|---------------------------------------------------|----------------------------|
| ``enqueue_push(document_id, bill_no, tenant)``    | ``fapiao.push``            |
| ``enqueue_withdraw(document_id, bill_no, tenant)``| ``fapiao.withdraw``        |
| ``enqueue_reconcile(inbox_id, bill_no=, tenant=)``| ``fapiao.reconcile``       |

Each returns True when the broker took the message and False when it could not be reached
(logged, never raised): the row is already durable, and the sweeper sends the message again
from the database, so an ERP still gets its 202. Enqueuing inside an open transaction would
let a worker look for a row that is not committed yet — hence "after commit".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker import queues
from worker.tasks import CeleryEnqueuer

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["enqueue_push", "enqueue_reconcile", "enqueue_withdraw"]


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
