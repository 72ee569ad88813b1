"""The ERP outbox: notifications owed to the ERP webhook, delivered with retries.

| state       | meaning                                           | set by                     |
|-------------|---------------------------------------------------|----------------------------|
| `pending`   | owed; due at `next_attempt_at`                    | `add_notification`, retry  |
| `delivered` | the ERP acknowledged it                           | `mark_delivered`           |
| `parked`    | retries exhausted; an operator must look          | `mark_attempt_failed`      |

Add the notification in the SAME transaction as the transition it reports, so a committed
outcome always has its notification; enqueue `fapiao.notify_erp` after the commit, and let
`store.queries.due_outbox` find the ones whose message was lost. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from store.columns import utcnow
from store.models import ErpOutbox
from store.states import OutboxState

__all__ = ["add_notification", "mark_attempt_failed", "mark_delivered"]


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
