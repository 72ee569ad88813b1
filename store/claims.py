"""Push claims: the lifecycle's `draft --claim--> pushing` row, for one document or many.

A claim is a compare-and-set that does more than move the state: it numbers the push attempt
(`push_attempt + 1`, the number every answer of that push carries, see `store.lifecycle`) and
takes a lease (`lease_expires_at`) after which the sweeper treats the push as crashed.

    UPDATE documents SET status='pushing', version=version+1, push_attempt=push_attempt+1,
           lease_expires_at=:now + :lease, next_attempt_at=NULL, ...
     WHERE id IN (...) AND status='draft' RETURNING ...

plus ONE multi-row INSERT of their `claim` events (per 500 ids). Ids that are not drafts (any
more) are simply absent from the result. Of two concurrent claimers of the same row (single or
bulk) exactly one gets it back: PostgreSQL re-checks `status='draft'` on the row a concurrent
transaction just committed, SQLite serialises writers (`BEGIN IMMEDIATE`, `store.db`).
Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from store.columns import utcnow
from store.lifecycle import event_row, expire_loaded
from store.models import Document, DocumentEvent
from store.states import DocumentStatus, Event

__all__ = ["Claimed", "claim_for_push", "claim_many_for_push"]

_documents = cast("Table", Document.__table__)
_events = cast("Table", DocumentEvent.__table__)

# Ids per UPDATE … WHERE id IN (…): well under SQLite's and PostgreSQL's parameter limits.
_IDS_PER_CLAIM = 500


@dataclass(frozen=True, slots=True)
class Claimed:
    """A won push claim: the caller owns attempt `push_attempt` until `lease_expires_at`."""

    document_id: int
    tenant: str
    seller_tax_id: str
    bill_no: str
    revision: int
    version: int
    push_attempt: int
    lease_expires_at: datetime


def claim_for_push(
    session: Session,
    document_id: int,
    lease_seconds: float,
    now: datetime | None = None,
    *,
    actor: str = "worker",
) -> Claimed | None:
    """draft -> pushing with push_attempt + 1 and a lease; None when not a draft. No commit.

    Of two concurrent claimers exactly one gets a claim back; the other gets None and should
    drop the task. (A batch of one: the same statement and event row.)
    """
    claims = claim_many_for_push(session, [document_id], lease_seconds, now, actor=actor)
    return claims.get(document_id)


def claim_many_for_push(
    session: Session,
    document_ids: Sequence[int],
    lease_seconds: float,
    now: datetime | None = None,
    *,
    actor: str = "worker",
) -> dict[int, Claimed]:
    """``claim_for_push`` for many documents at once: the won claims by id (module docstring).

    No commit.
    """
    now = now or utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    ids = sorted(set(document_ids))
    claims: dict[int, Claimed] = {}
    for start in range(0, len(ids), _IDS_PER_CLAIM):
        rows = session.execute(
            update(_documents)
            .where(
                _documents.c.id.in_(ids[start : start + _IDS_PER_CLAIM]),
                _documents.c.status == DocumentStatus.draft.value,
            )
            .values(
                status=DocumentStatus.pushing.value,
                version=_documents.c.version + 1,
                push_attempt=_documents.c.push_attempt + 1,
                lease_expires_at=lease,
                next_attempt_at=None,
                status_changed_at=now,
                updated_at=now,
            )
            .returning(
                _documents.c.id,
                _documents.c.tenant,
                _documents.c.seller_tax_id,
                _documents.c.bill_no,
                _documents.c.revision,
                _documents.c.version,
                _documents.c.push_attempt,
                _documents.c.lease_expires_at,
            )
        ).all()
        if not rows:
            continue
        reason = f"lease until {lease.isoformat()}"
        session.execute(
            insert(_events),
            [
                event_row(
                    row.id,
                    Event.claim,
                    from_status=DocumentStatus.draft.value,
                    to_status=DocumentStatus.pushing.value,
                    actor=actor,
                    now=now,
                    reason=reason,
                    attempt=row.push_attempt,
                )
                for row in sorted(rows, key=lambda r: int(r.id))
            ],
        )
        expire_loaded(session, *(row.id for row in rows))
        for row in rows:
            claims[row.id] = Claimed(
                document_id=row.id,
                tenant=row.tenant,
                seller_tax_id=row.seller_tax_id,
                bill_no=row.bill_no,
                revision=row.revision,
                version=row.version,
                push_attempt=row.push_attempt,
                lease_expires_at=row.lease_expires_at,
            )
    return claims
