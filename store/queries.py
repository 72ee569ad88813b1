"""Queries for sweeps, pollers and operator views.

Batch claims hand each due row to exactly one caller, on both databases:

    UPDATE documents SET <due column> = :now + :interval, ...
     WHERE id IN (SELECT id FROM documents WHERE <due> ORDER BY <due column> LIMIT :n
                  FOR UPDATE SKIP LOCKED)           -- PostgreSQL; SQLite ignores it and
    RETURNING id, tenant, bill_no, ...              -- relies on BEGIN IMMEDIATE (store.db)

Advancing the due column is what makes the claim: once the caller commits, the row is no
longer due for the next `interval`, so a lost message is re-found only after that. None of
these bump `documents.version` (they touch scheduling columns only, never a column a state
decision depends on), so claiming never makes a worker's compare-and-set lose. Nothing
here commits: call inside `store.db.unit_of_work` and enqueue AFTER the commit.

| function          | rows                                          | advances             |
|-------------------|-----------------------------------------------|----------------------|
| `due_drafts`      | draft, `next_attempt_at <= now`               | `next_attempt_at`    |
| `due_withdrawals` | withdrawing, `next_attempt_at <= now`         | `next_attempt_at`    |
| `due_for_poll`    | POLLED_STATUSES, `next_poll_at <= now`        | `next_poll_at`, poll_count+1 |
| `expired_leases`  | pushing, `lease_expires_at <= now`            | `lease_expires_at`   |
| `due_outbox`      | erp_outbox pending, `next_attempt_at <= now`  | `next_attempt_at`    |
| `stale_inbox`     | inbox received, `received_at <= now - older`, | `attempts` + 1       |
|                   | no live `claimed_until` (lease / not-before)  |                      |

Operator lists (read only): `list_documents` pages current documents by the keyset
`(status_changed_at, id)` ascending — a cursor names the last key seen, so rows inserted
between pages (they enter their state now, i.e. at the end) never shift or repeat a page;
`latest_reasons` gives each listed document the reason of the event that put it in its state.

Paused tenants (`tenant_state.paused`) are skipped by the sweeps that would call the cloud
(`due_drafts`, `due_withdrawals`, `due_for_poll`) unless `skip_paused=False`;
`expired_leases` never skips them (turning a lease into in_doubt calls nothing).
`stale_inbox` re-offers a received callback on every call until it is processed; the
`attempts` it returns lets the reconciler give up (state `failed`) after a limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Table,
    and_,
    case,
    exists,
    func,
    null,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session

from store.columns import utcnow
from store.models import CallbackInbox, Document, DocumentEvent, ErpOutbox, TenantState
from store.states import (
    POLLED_STATUSES,
    QUOTA_HELD,
    DocumentStatus,
    EventOutcome,
    InboxState,
    OutboxState,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DueDocument",
    "DueRow",
    "current_document",
    "document_history",
    "documents_by_bill_no",
    "due_drafts",
    "due_for_poll",
    "due_outbox",
    "due_withdrawals",
    "expired_leases",
    "latest_reasons",
    "list_documents",
    "oldest_by_status",
    "stale_inbox",
    "status_counts",
    "waiting_since",
]

DEFAULT_INTERVAL = timedelta(seconds=60)

_documents = cast("Table", Document.__table__)
_outbox = cast("Table", ErpOutbox.__table__)
_inbox = cast("Table", CallbackInbox.__table__)
_tenants = cast("Table", TenantState.__table__)


@dataclass(frozen=True, slots=True)
class DueDocument:
    """A document handed to one sweeper/poller: enough to enqueue a task with `bill_no`."""

    id: int
    tenant: str
    seller_tax_id: str
    bill_no: str
    status: DocumentStatus
    version: int
    push_attempt: int
    poll_count: int


@dataclass(frozen=True, slots=True)
class DueRow:
    """An outbox or inbox row handed to one caller."""

    id: int
    document_id: int | None
    attempts: int


def _not_paused() -> ColumnElement[bool]:
    return ~exists().where(_tenants.c.tenant == _documents.c.tenant, _tenants.c.paused.is_(True))


def _claim_documents(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    order_by: Any,
    limit: int,
    values: dict[str, Any],
) -> list[DueDocument]:
    if limit <= 0:
        return []
    chosen = (
        select(_documents.c.id)
        .where(*where)
        .order_by(order_by, _documents.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(_documents)
        .where(_documents.c.id.in_(chosen.scalar_subquery()))
        .values(**values)
        .returning(
            _documents.c.id,
            _documents.c.tenant,
            _documents.c.seller_tax_id,
            _documents.c.bill_no,
            _documents.c.status,
            _documents.c.version,
            _documents.c.push_attempt,
            _documents.c.poll_count,
        )
    ).all()
    claimed = [
        DueDocument(
            id=r.id,
            tenant=r.tenant,
            seller_tax_id=r.seller_tax_id,
            bill_no=r.bill_no,
            status=DocumentStatus(r.status),
            version=r.version,
            push_attempt=r.push_attempt,
            poll_count=r.poll_count,
        )
        for r in rows
    ]
    # RETURNING order is unspecified; hand rows out oldest-due first (ids are monotonic).
    return sorted(claimed, key=lambda d: d.id)


def _due_attempts(
    session: Session,
    status: DocumentStatus,
    now: datetime | None,
    limit: int,
    redeliver_after: timedelta,
    skip_paused: bool,
) -> list[DueDocument]:
    """Documents in ``status`` whose ``next_attempt_at`` is due; it moves on by
    ``redeliver_after`` so a lost message is sent again, never two at once."""
    now = now or utcnow()
    where = [_documents.c.status == status.value, _documents.c.next_attempt_at <= now]
    if skip_paused:
        where.append(_not_paused())
    return _claim_documents(
        session,
        where,
        _documents.c.next_attempt_at,
        limit,
        {"next_attempt_at": now + redeliver_after},
    )


def due_drafts(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    redeliver_after: timedelta = DEFAULT_INTERVAL,
    skip_paused: bool = True,
) -> list[DueDocument]:
    """Drafts owed a push (new, retry due, or their message lost): enqueue `fapiao.push`."""
    return _due_attempts(session, DocumentStatus.draft, now, limit, redeliver_after, skip_paused)


def due_withdrawals(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    redeliver_after: timedelta = DEFAULT_INTERVAL,
    skip_paused: bool = True,
) -> list[DueDocument]:
    """Documents in withdrawing whose BILL.WITHDRAW is due: enqueue `fapiao.withdraw`."""
    return _due_attempts(
        session, DocumentStatus.withdrawing, now, limit, redeliver_after, skip_paused
    )


def due_for_poll(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    reschedule_after: timedelta = DEFAULT_INTERVAL,
    statuses: Sequence[DocumentStatus] = POLLED_STATUSES,
    skip_paused: bool = True,
) -> list[DueDocument]:
    """Documents due for BILL.INVOICE.QUERY; `next_poll_at` moves on, `poll_count` + 1.

    The poll service sets the real next time afterwards (`update_fields` or a transition's
    `changes`); `reschedule_after` only covers a poll task that is lost.
    """
    now = now or utcnow()
    unknown = set(statuses) - set(POLLED_STATUSES)
    if unknown:
        raise ValueError(f"not polled states: {sorted(unknown)}")
    where = [
        _documents.c.status.in_([s.value for s in statuses]),
        _documents.c.next_poll_at <= now,
    ]
    if skip_paused:
        where.append(_not_paused())
    return _claim_documents(
        session,
        where,
        _documents.c.next_poll_at,
        limit,
        {"next_poll_at": now + reschedule_after, "poll_count": _documents.c.poll_count + 1},
    )


def expired_leases(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    grace: timedelta = DEFAULT_INTERVAL,
) -> list[DueDocument]:
    """Documents stuck in pushing past their lease; the sweeper applies `unsure` to each.

    The lease is extended by `grace` so two sweepers never take the same rows; the
    transition is a compare-and-set with the returned `version`, so a worker that finishes
    meanwhile wins cleanly.
    """
    now = now or utcnow()
    return _claim_documents(
        session,
        [
            _documents.c.status == DocumentStatus.pushing.value,
            _documents.c.lease_expires_at <= now,
        ],
        _documents.c.lease_expires_at,
        limit,
        {"lease_expires_at": now + grace},
    )


def due_outbox(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    redeliver_after: timedelta = DEFAULT_INTERVAL,
) -> list[DueRow]:
    """Pending ERP notifications that are due: enqueue `fapiao.notify_erp` for each."""
    now = now or utcnow()
    if limit <= 0:
        return []
    chosen = (
        select(_outbox.c.id)
        .where(_outbox.c.state == OutboxState.pending.value, _outbox.c.next_attempt_at <= now)
        .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(_outbox)
        .where(_outbox.c.id.in_(chosen.scalar_subquery()))
        .values(next_attempt_at=now + redeliver_after)
        .returning(_outbox.c.id, _outbox.c.document_id, _outbox.c.attempts)
    ).all()
    return sorted((DueRow(r.id, r.document_id, r.attempts) for r in rows), key=lambda r: r.id)


def stale_inbox(
    session: Session,
    now: datetime | None = None,
    limit: int = 100,
    *,
    older_than: timedelta = DEFAULT_INTERVAL,
) -> list[DueRow]:
    """Callbacks received more than `older_than` ago and still unprocessed; `attempts` + 1.

    A row under a live `claimed_until` (a reconcile task's lease, or a deferred row's
    not-before) is left to the task that holds it or to its own re-sent message; once that
    time has passed (the task died, the message was lost) the row is offered again.
    """
    now = now or utcnow()
    if limit <= 0:
        return []
    chosen = (
        select(_inbox.c.id)
        .where(
            _inbox.c.state == InboxState.received.value,
            _inbox.c.received_at <= now - older_than,
            or_(_inbox.c.claimed_until.is_(None), _inbox.c.claimed_until <= now),
        )
        .order_by(_inbox.c.received_at, _inbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(_inbox)
        .where(_inbox.c.id.in_(chosen.scalar_subquery()))
        .values(attempts=_inbox.c.attempts + 1)
        .returning(_inbox.c.id, _inbox.c.document_id, _inbox.c.attempts)
    ).all()
    return sorted((DueRow(r.id, r.document_id, r.attempts) for r in rows), key=lambda r: r.id)


# --- lookups ------------------------------------------------------------------------------


def current_document(
    session: Session, *, tenant: str, seller_tax_id: str, bill_no: str
) -> Document | None:
    """The current revision of a bill, fresh from the database."""
    return session.scalars(
        select(Document)
        .where(
            Document.tenant == tenant,
            Document.seller_tax_id == seller_tax_id,
            Document.bill_no == bill_no,
            Document.is_current.is_(True),
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def documents_by_bill_no(
    session: Session, bill_no: str, *, tenant: str | None = None
) -> list[Document]:
    """Current revisions with this billNo (one per tenant/seller; usually exactly one)."""
    statement = select(Document).where(Document.bill_no == bill_no, Document.is_current.is_(True))
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    return list(
        session.scalars(
            statement.order_by(Document.id).execution_options(populate_existing=True)
        ).all()
    )


def document_history(session: Session, document_id: int) -> list[DocumentEvent]:
    """The audit trail of one document revision, oldest first."""
    return list(
        session.scalars(
            select(DocumentEvent)
            .where(DocumentEvent.document_id == document_id)
            .order_by(DocumentEvent.id)
        ).all()
    )


def status_counts(session: Session, *, tenant: str | None = None) -> dict[DocumentStatus, int]:
    """How many current documents are in each state (every state present, zeros included)."""
    statement = select(Document.status, func.count()).where(Document.is_current.is_(True))
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    counts = {status: 0 for status in DocumentStatus}
    for status, count in session.execute(statement.group_by(Document.status)).all():
        counts[DocumentStatus(status)] = int(count)
    return counts


def oldest_by_status(
    session: Session, *, tenant: str | None = None
) -> dict[DocumentStatus, datetime]:
    """When the longest-waiting current document entered each state (for age alerts).

    Drafts held for credit quota (``store.quota``) wait on purpose, with their own alert
    (``fapiao_quota_held``): they do not count here."""
    statement = select(Document.status, func.min(waiting_since())).where(
        and_(Document.is_current.is_(True))
    )
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    oldest: dict[DocumentStatus, datetime] = {}
    for status, changed_at in session.execute(statement.group_by(Document.status)).all():
        if changed_at is not None:
            oldest[DocumentStatus(status)] = changed_at
    return oldest


def waiting_since() -> ColumnElement[Any]:
    """``status_changed_at``, NULL for a draft held for credit quota (for age alerts)."""
    held = and_(
        Document.status == DocumentStatus.draft.value, Document.last_error_code == QUOTA_HELD
    )
    return case((held, null()), else_=Document.status_changed_at)


# --- operator lists -----------------------------------------------------------------------


def list_documents(
    session: Session,
    *,
    statuses: Sequence[str] = (),
    tenant: str | None = None,
    seller_tax_id: str | None = None,
    bill_nos: Sequence[str] = (),
    document_ids: Sequence[int] = (),
    changed_before: datetime | None = None,
    changed_since: datetime | None = None,
    updated_since: datetime | None = None,
    error_code: str | None = None,
    text: str | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int | None = None,
) -> list[Document]:
    """Current documents matching every given criterion, by ``(status_changed_at, id)``
    ascending (oldest in its state first), strictly after the key ``after``.

    ``text``: case-insensitive substring of the bill number or the buyer's name (buyerName
    of the payload). On PostgreSQL the status filter and the keyset follow
    ``ix_documents_status_changed``; the row-value comparison keeps the keyset one range."""
    statement = select(Document).where(Document.is_current.is_(True))
    if statuses:
        statement = statement.where(Document.status.in_(list(statuses)))
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    if seller_tax_id is not None:
        statement = statement.where(func.upper(Document.seller_tax_id) == seller_tax_id.upper())
    if bill_nos:
        statement = statement.where(Document.bill_no.in_(list(bill_nos)))
    if document_ids:
        statement = statement.where(Document.id.in_(list(document_ids)))
    if changed_before is not None:
        statement = statement.where(Document.status_changed_at <= changed_before)
    if changed_since is not None:
        statement = statement.where(Document.status_changed_at >= changed_since)
    if updated_since is not None:
        statement = statement.where(Document.updated_at >= updated_since)
    if error_code is not None:
        statement = statement.where(Document.last_error_code == error_code)
    if text:
        buyer = type_coerce(Document.payload, JSON)["buyerName"].as_string()
        statement = statement.where(
            Document.bill_no.icontains(text, autoescape=True)
            | buyer.icontains(text, autoescape=True)
        )
    if after is not None:
        statement = statement.where(tuple_(Document.status_changed_at, Document.id) > after)
    statement = statement.order_by(Document.status_changed_at, Document.id)
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.scalars(statement.execution_options(populate_existing=True)))


def latest_reasons(session: Session, document_ids: Sequence[int]) -> dict[int, str | None]:
    """For each document, the reason of the latest applied event into its current state
    (what ``producers.documents`` shows as the reason when there is no error message)."""
    if not document_ids:
        return {}
    latest = (
        select(func.max(DocumentEvent.id).label("event_id"))
        .join(Document, Document.id == DocumentEvent.document_id)
        .where(
            DocumentEvent.document_id.in_(list(document_ids)),
            DocumentEvent.outcome == EventOutcome.applied.value,
            DocumentEvent.to_status == Document.status,
        )
        .group_by(DocumentEvent.document_id)
        .subquery()
    )
    rows = session.execute(
        select(DocumentEvent.document_id, DocumentEvent.reason).join(
            latest, DocumentEvent.id == latest.c.event_id
        )
    ).all()
    return {int(document_id): reason for document_id, reason in rows}
