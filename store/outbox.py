"""The ERP outbox: notifications owed to the ERP webhook, delivered with retries.

| state       | meaning                                           | set by                     |
|-------------|---------------------------------------------------|----------------------------|
| `pending`   | owed; due at `next_attempt_at`                    | `add_notification`, retry  |
| `delivered` | the ERP acknowledged it                           | `mark_delivered`           |
| `parked`    | retries exhausted; an operator must look          | `mark_attempt_failed`      |

An operator sends a parked notification again with `requeue` (parked -> pending, due now,
a fresh round of attempts); `list_notifications` is the operator's list.

Add the notification in the SAME transaction as the transition it reports, so a committed
outcome always has its notification; enqueue `fapiao.notify_erp` after the commit, and let
`store.queries.due_outbox` find the ones whose message was lost. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.columns import utcnow
from store.models import Document, ErpOutbox
from store.states import OutboxState

__all__ = [
    "add_notification",
    "list_notifications",
    "mark_attempt_failed",
    "mark_delivered",
    "requeue",
]


def add_notification(
    session: Session,
    *,
    document_id: int,
    event: str,
    payload: Mapping[str, Any],
    now: datetime | None = None,
) -> ErpOutbox:
    now = now or utcnow()
    row = ErpOutbox(
        document_id=document_id,
        event=event,
        payload=dict(payload),
        state=OutboxState.pending.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def _pending(session: Session, outbox_id: int) -> ErpOutbox | None:
    row = session.get(ErpOutbox, outbox_id, populate_existing=True)
    if row is None:
        raise LookupError(f"outbox row #{outbox_id} does not exist")
    return row if row.state == OutboxState.pending.value else None


def mark_delivered(session: Session, outbox_id: int, *, now: datetime | None = None) -> bool:
    """Pending -> delivered; False if it was not pending (already delivered or parked)."""
    row = _pending(session, outbox_id)
    if row is None:
        return False
    now = now or utcnow()
    row.state = OutboxState.delivered.value
    row.attempts += 1
    row.delivered_at = now
    row.next_attempt_at = None
    row.last_error = None
    session.flush()
    return True


def mark_attempt_failed(
    session: Session,
    outbox_id: int,
    error: str,
    *,
    retry_at: datetime | None,
    now: datetime | None = None,
) -> bool:
    """Count a failed delivery: due again at `retry_at`, or parked when `retry_at` is None.

    Returns False if the row was not pending.
    """
    row = _pending(session, outbox_id)
    if row is None:
        return False
    row.attempts += 1
    row.last_error = error[:2000]
    if retry_at is None:
        row.state = OutboxState.parked.value
        row.next_attempt_at = None
    else:
        row.next_attempt_at = retry_at
    session.flush()
    return True


def list_notifications(
    session: Session,
    *,
    state: str | None = None,
    tenant: str | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[tuple[ErpOutbox, Document]]:
    """Outbox rows with their document, by id ascending (oldest first), after ``after_id``."""
    statement = select(ErpOutbox, Document).join(Document, Document.id == ErpOutbox.document_id)
    if state is not None:
        statement = statement.where(ErpOutbox.state == state)
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    if after_id is not None:
        statement = statement.where(ErpOutbox.id > after_id)
    statement = statement.order_by(ErpOutbox.id).limit(limit)
    return [(row, document) for row, document in session.execute(statement).tuples()]


def requeue(session: Session, outbox_id: int, *, now: datetime | None = None) -> str | None:
    """Parked -> pending, due now, attempts from zero (a fresh round of retries); a pending
    row is only made due now. Returns the state the row was in (None when it does not
    exist); a delivered row is left alone."""
    row = session.get(ErpOutbox, outbox_id, populate_existing=True)
    if row is None:
        return None
    was = row.state
    if was == OutboxState.delivered.value:
        return was
    now = now or utcnow()
    if was == OutboxState.parked.value:
        row.state = OutboxState.pending.value
        row.attempts = 0  # the retry policy counts attempts: give the resend its full round
    row.next_attempt_at = now
    row.updated_at = now
    session.flush()
    return was
