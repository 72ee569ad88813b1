"""The document lifecycle: the state table as data, and the only code that changes `status`.

`TRANSITIONS[(state, event)] -> state`. A pair that is not in the table is forbidden
(`TransitionNotAllowed`). Rows whose target equals their source are deliberate no-ops: a
duplicate or late answer that must not fail and must not move anything.

| state              | event                   | -> state           | note                       |
|--------------------|-------------------------|--------------------|----------------------------|
| draft              | claim                   | pushing            | only via claim_for_push /  |
|                    |                         |                    | claim_many_for_push        |
| draft              | withdraw                | withdrawn          | never reached the cloud    |
| draft              | absent, replay          | draft              | no-op (a push is owed)     |
| pushing            | accepted                | pushed             |                            |
| pushing            | refused                 | rejected           |                            |
| pushing            | unsure                  | in_doubt           | also an expired lease      |
| pushing            | give_up                 | failed             |                            |
| pushing            | retry                   | draft              | failed BEFORE sending      |
| in_doubt           | accepted                | pushed             | the query found the bill   |
| in_doubt           | absent                  | draft              | proved it never arrived    |
| in_doubt           | give_up                 | failed             |                            |
| in_doubt           | unsure                  | in_doubt           | no-op                      |
| pushed             | issued_all              | invoiced           |                            |
| pushed             | issued_some             | partially_invoiced |                            |
| pushed             | issue_failed            | invoice_failed     |                            |
| pushed             | withdraw                | withdrawing        |                            |
| pushed             | returned                | returned           | 回退 (5.1.01)              |
| pushed             | accepted                | pushed             | no-op                      |
| partially_invoiced | issued_all              | invoiced           |                            |
| partially_invoiced | issued_some,            | partially_invoiced | no-op (never backwards)    |
|                    | issue_failed, accepted  |                    |                            |
| invoiced           | issued_all, issued_some,| invoiced           | no-op (terminal)           |
|                    | issue_failed, accepted  |                    |                            |
| invoice_failed     | issued_all              | invoiced           | re-issued in the cloud     |
| invoice_failed     | issued_some             | partially_invoiced |                            |
| invoice_failed     | withdraw                | withdrawing        |                            |
| invoice_failed     | returned                | returned           |                            |
| invoice_failed     | issue_failed, accepted  | invoice_failed     | no-op                      |
| rejected           | resubmit, replay        | draft              | resubmit: new revision     |
| rejected           | refused                 | rejected           | no-op                      |
| failed             | replay, resubmit        | draft              |                            |
| failed             | withdraw                | withdrawing        |                            |
| failed             | give_up                 | failed             | no-op                      |
| withdrawing        | withdrawn_ok            | withdrawn          |                            |
| withdrawing        | withdraw_refused        | pushed             | refused; nothing issued    |
| withdrawing        | issued_all              | invoiced           | refused; query: all issued |
| withdrawing        | issued_some             | partially_invoiced | refused; query: some       |
| withdrawing        | issue_failed            | invoice_failed     | refused; query: failed     |
| withdrawing        | returned                | returned           | handed back meanwhile      |
| withdrawing        | withdraw                | withdrawing        | no-op (duplicate request)  |
| withdrawn          | resubmit                | draft              | a new revision             |
| withdrawn          | withdraw, withdrawn_ok  | withdrawn          | no-op                      |
| returned           | resubmit                | draft              | a new revision             |
| returned           | returned                | returned           | no-op                      |

How a transition is written (`transition()`):
- ONE conditional `UPDATE documents SET status=:to, version=version+1, ... WHERE id=:id AND
  status=:from AND version=:version` plus ONE `document_events` row, in the CALLER's session
  and transaction. Nothing here commits: wrap calls in `store.db.unit_of_work` (or commit
  yourself) so the state change and whatever caused it land together.
- A pair not in the table raises `TransitionNotAllowed` (for every event). The allowed
  `claim` and `resubmit` rows have their own entry points (`claim_for_push`,
  `accept_document`); passing them to transition() is a ValueError.
- 0 rows updated raises `LostRace`. Losing is normal: another worker moved the document
  first; re-read and decide again. Nothing was written.
- No-op rows write nothing at all (no UPDATE, no event row, `changes` ignored) and return
  `outcome=noop`: duplicate callbacks must not grow the audit log.
- `attempt` older than the document's `push_attempt` is stale: an event row with
  `outcome='stale'` is appended, the document is not touched, `outcome=stale` is returned.
  Results never move a document backwards.
- Entering a state sets its due column unless `changes` does (see `store.states`): draft and
  withdrawing get `next_attempt_at = now`; polled states keep their `next_poll_at` or get
  `now`; in_doubt gets `in_doubt_since = now`; leaving pushing clears the lease.

Revisions (`accept_document()`): a document is (tenant, seller_tax_id, bill_no). Identical
content (same `content_hash`) returns the current revision unchanged, whatever its state.
Different content is a NEW ROW (revision + 1, `draft`) only when the table has a `resubmit`
row for the current state (rejected, failed, withdrawn, returned) — and, for `failed`, only
when the bill cannot be live in the cloud (`_may_be_in_the_cloud`: never accepted, and it did
not give up from `in_doubt`; otherwise withdraw first or replay the same content); the old
row keeps its state, loses `is_current`, and gets an event row `resubmit` with
`outcome='superseded'`; the new row's first event is `resubmit` from the old state to draft.
Otherwise `RevisionConflict` (HTTP 409). A brand-new document starts in draft with a `submit` event.

Errors:
    LifecycleError
    ├── DocumentNotFound       no such document id
    ├── TransitionNotAllowed   (state, event) is not in the table
    ├── LostRace               the compare-and-set lost; re-read and decide again
    └── RevisionConflict       different content while the current revision is live (409)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, literal, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from store.columns import JSONValue, Money, UTCDateTime, utcnow
from store.models import Document, DocumentEvent
from store.states import POLLED_STATUSES, DocumentStatus, Event, EventOutcome

__all__ = [
    "NO_OPS",
    "TRANSITIONS",
    "Acceptance",
    "AcceptanceOutcome",
    "BillToAccept",
    "BulkAcceptance",
    "Claimed",
    "DocumentNotFound",
    "DocumentStatus",
    "Event",
    "LifecycleError",
    "LostRace",
    "RevisionConflict",
    "TransitionNotAllowed",
    "TransitionOutcome",
    "TransitionResult",
    "accept_document",
    "accept_documents",
    "claim_for_push",
    "claim_many_for_push",
    "is_allowed",
    "target_of",
    "transition",
    "update_fields",
]

S = DocumentStatus
E = Event

TRANSITIONS: Mapping[tuple[DocumentStatus, Event], DocumentStatus] = {
    # draft: a push is owed
    (S.draft, E.claim): S.pushing,
    (S.draft, E.withdraw): S.withdrawn,
    (S.draft, E.absent): S.draft,
    (S.draft, E.replay): S.draft,
    # pushing: a worker holds the lease
    (S.pushing, E.accepted): S.pushed,
    (S.pushing, E.refused): S.rejected,
    (S.pushing, E.unsure): S.in_doubt,
    (S.pushing, E.give_up): S.failed,
    (S.pushing, E.retry): S.draft,
    # in_doubt: only a query decides
    (S.in_doubt, E.accepted): S.pushed,
    (S.in_doubt, E.absent): S.draft,
    (S.in_doubt, E.give_up): S.failed,
    (S.in_doubt, E.unsure): S.in_doubt,
    # pushed: invoices are owed
    (S.pushed, E.issued_all): S.invoiced,
    (S.pushed, E.issued_some): S.partially_invoiced,
    (S.pushed, E.issue_failed): S.invoice_failed,
    (S.pushed, E.withdraw): S.withdrawing,
    (S.pushed, E.returned): S.returned,
    (S.pushed, E.accepted): S.pushed,
    # partially_invoiced: only forward
    (S.partially_invoiced, E.issued_all): S.invoiced,
    (S.partially_invoiced, E.issued_some): S.partially_invoiced,
    (S.partially_invoiced, E.issue_failed): S.partially_invoiced,
    (S.partially_invoiced, E.accepted): S.partially_invoiced,
    # invoiced: terminal, late answers change nothing
    (S.invoiced, E.issued_all): S.invoiced,
    (S.invoiced, E.issued_some): S.invoiced,
    (S.invoiced, E.issue_failed): S.invoiced,
    (S.invoiced, E.accepted): S.invoiced,
    # invoice_failed
    (S.invoice_failed, E.issued_all): S.invoiced,
    (S.invoice_failed, E.issued_some): S.partially_invoiced,
    (S.invoice_failed, E.withdraw): S.withdrawing,
    (S.invoice_failed, E.returned): S.returned,
    (S.invoice_failed, E.issue_failed): S.invoice_failed,
    (S.invoice_failed, E.accepted): S.invoice_failed,
    # rejected: needs corrected data (resubmit) or an operator (replay)
    (S.rejected, E.resubmit): S.draft,
    (S.rejected, E.replay): S.draft,
    (S.rejected, E.refused): S.rejected,
    # failed
    (S.failed, E.replay): S.draft,
    (S.failed, E.resubmit): S.draft,
    (S.failed, E.withdraw): S.withdrawing,
    (S.failed, E.give_up): S.failed,
    # withdrawing: back to what the query shows when the withdrawal is refused
    (S.withdrawing, E.withdrawn_ok): S.withdrawn,
    (S.withdrawing, E.withdraw_refused): S.pushed,
    (S.withdrawing, E.issued_all): S.invoiced,
    (S.withdrawing, E.issued_some): S.partially_invoiced,
    (S.withdrawing, E.issue_failed): S.invoice_failed,
    (S.withdrawing, E.returned): S.returned,
    (S.withdrawing, E.withdraw): S.withdrawing,
    # withdrawn / returned: only a new revision leaves
    (S.withdrawn, E.resubmit): S.draft,
    (S.withdrawn, E.withdraw): S.withdrawn,
    (S.withdrawn, E.withdrawn_ok): S.withdrawn,
    (S.returned, E.resubmit): S.draft,
    (S.returned, E.returned): S.returned,
}

NO_OPS: frozenset[tuple[DocumentStatus, Event]] = frozenset(
    pair for pair, target in TRANSITIONS.items() if pair[0] == target
)

# Columns nobody may set through `changes`: identity, the lock, and what claims own.
_PROTECTED = frozenset(
    {
        "id",
        "tenant",
        "seller_tax_id",
        "bill_no",
        "revision",
        "is_current",
        "status",
        "version",
        "push_attempt",
        "content_hash",
        "payload",
        "created_at",
        "status_changed_at",
    }
)
# Events with their own entry point (they do more than move the state).
_DEDICATED = {Event.claim: "claim_for_push()", Event.resubmit: "accept_document()"}
_COLUMNS = frozenset(c.name for c in Document.__table__.columns)
_documents = cast("Table", Document.__table__)
# Event rows are written with Core INSERTs: no ORM object, no unit-of-work flush per row.
_events = cast("Table", DocumentEvent.__table__)


def target_of(status: DocumentStatus | str, event: Event | str) -> DocumentStatus | None:
    """Where `event` takes a document in `status`, or None when the pair is forbidden."""
    return TRANSITIONS.get((DocumentStatus(status), Event(event)))


def is_allowed(status: DocumentStatus | str, event: Event | str) -> bool:
    return target_of(status, event) is not None


# --- errors -------------------------------------------------------------------------------


class LifecycleError(Exception):
    """Base of the lifecycle errors (see the module docstring for the tree)."""


class DocumentNotFound(LifecycleError):
    def __init__(self, document_id: int) -> None:
        self.document_id = document_id
        super().__init__(f"document #{document_id} does not exist / 单据不存在")


class TransitionNotAllowed(LifecycleError):
    def __init__(
        self, status: DocumentStatus, event: Event, document_id: int, bill_no: str
    ) -> None:
        self.status = status
        self.event = event
        self.document_id = document_id
        self.bill_no = bill_no
        super().__init__(
            f"event '{event}' is not allowed in state '{status}' (document #{document_id},"
            f" billNo {bill_no}) / 单据 {bill_no} 当前状态为 '{status}'，不允许操作 '{event}'"
        )


class LostRace(LifecycleError):
    """The compare-and-set lost: the document is no longer where the caller thought."""

    def __init__(
        self,
        document_id: int,
        event: Event | None,
        *,
        expected_status: str | None,
        expected_version: int | None,
        actual_status: str | None,
        actual_version: int | None,
    ) -> None:
        self.document_id = document_id
        self.event = event
        self.expected_status = expected_status
        self.expected_version = expected_version
        self.actual_status = actual_status
        self.actual_version = actual_version
        what = f"applying '{event}'" if event is not None else "updating"
        super().__init__(
            f"lost the race {what} to document #{document_id}: expected"
            f" {expected_status or '?'} v{expected_version or '?'}, found"
            f" {actual_status or '?'} v{actual_version or '?'}; re-read and decide again"
        )


class RevisionConflict(LifecycleError):
    """Different content for a bill whose current revision is still live (HTTP 409)."""

    def __init__(self, document: Document, *, unsettled: bool = False) -> None:
        self.document_id = document.id
        self.bill_no = document.bill_no
        self.status = DocumentStatus(document.status)
        self.revision = document.revision
        if unsettled:
            super().__init__(
                f"billNo {document.bill_no} is 'failed' (revision {document.revision}) but the"
                " previous push's outcome was never settled: the cloud may still hold that"
                " bill. Withdraw it first (fapiao withdraw / POST …/withdraw) or replay the"
                " same content"
                f" / 单据编号 {document.bill_no} 上次推送结果未确认，发票云可能仍有该单据；"
                "请先撤回（fapiao withdraw / POST …/withdraw）或以相同内容重新推送"
            )
            return
        super().__init__(
            f"billNo {document.bill_no} already exists with different content and is"
            f" '{document.status}' (revision {document.revision}); a new revision is accepted"
            " only after rejected, failed, withdrawn or returned"
            f" / 单据编号 {document.bill_no} 已存在且内容不同，当前状态为 '{document.status}'，"
            "仅在被拒绝、失败、已撤回或已回退后才可提交新版本"
        )


# --- results ------------------------------------------------------------------------------


class TransitionOutcome(StrEnum):
    applied = "applied"  # state changed, one event row written
    noop = "noop"  # a deliberate no-op row: nothing written
    stale = "stale"  # an older attempt's answer: event row written, document untouched


@dataclass(frozen=True, slots=True)
class TransitionResult:
    document_id: int
    event: Event
    from_status: DocumentStatus
    to_status: DocumentStatus
    outcome: TransitionOutcome
    version: int  # the document's version after the call
    # Read by the same SELECT as the status (free): latency metrics need them.
    tenant: str = ""
    created_at: datetime | None = None

    @property
    def applied(self) -> bool:
        return self.outcome is TransitionOutcome.applied


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


class AcceptanceOutcome(StrEnum):
    created = "created"
    unchanged = "unchanged"
    new_revision = "new_revision"


@dataclass(frozen=True, slots=True)
class Acceptance:
    document: Document
    outcome: AcceptanceOutcome


# --- transition ---------------------------------------------------------------------------


def transition(
    session: Session,
    document_id: int,
    event: Event | str,
    *,
    actor: str,
    expected_status: DocumentStatus | str | None = None,
    expected_version: int | None = None,
    attempt: int | None = None,
    reason: str | None = None,
    changes: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> TransitionResult:
    """Apply `event` to a document (module docstring). Does not commit.

    `changes` sets other columns in the same UPDATE (e.g. `last_error_code`,
    `last_error_message`, `next_poll_at`, `issued_amount`); identity columns, `status`,
    `version` and `push_attempt` are refused. Raises TransitionNotAllowed, LostRace,
    DocumentNotFound.
    """
    event = Event(event)
    changes = _checked_changes(changes)
    now = now or utcnow()
    row = session.execute(
        select(
            _documents.c.status,
            _documents.c.version,
            _documents.c.push_attempt,
            _documents.c.bill_no,
            _documents.c.tenant,
            _documents.c.created_at,
        ).where(_documents.c.id == document_id)
    ).one_or_none()
    if row is None:
        raise DocumentNotFound(document_id)
    known = {"tenant": row.tenant, "created_at": row.created_at}
    status = DocumentStatus(row.status)
    version: int = row.version

    if attempt is not None and attempt > row.push_attempt:
        raise ValueError(
            f"attempt {attempt} for document #{document_id} is newer than its push_attempt"
            f" {row.push_attempt}: attempts are numbered by claim_for_push()"
        )
    if attempt is not None and attempt < row.push_attempt:
        note = f"stale answer for attempt {attempt} (current {row.push_attempt}): not applied"
        session.execute(
            insert(_events).values(
                document_id=document_id,
                from_status=status.value,
                to_status=status.value,
                event=event.value,
                outcome=EventOutcome.stale.value,
                actor=actor,
                reason=f"{note}; {reason}" if reason else note,
                attempt=attempt,
                created_at=now,
            )
        )
        return TransitionResult(
            document_id, event, status, status, TransitionOutcome.stale, version, **known
        )

    if (expected_status is not None and status != DocumentStatus(expected_status)) or (
        expected_version is not None and version != expected_version
    ):
        raise LostRace(
            document_id,
            event,
            expected_status=None if expected_status is None else str(expected_status),
            expected_version=expected_version,
            actual_status=status.value,
            actual_version=version,
        )

    target = TRANSITIONS.get((status, event))
    if target is None:
        raise TransitionNotAllowed(status, event, document_id, row.bill_no)
    if target == status:
        return TransitionResult(
            document_id, event, status, status, TransitionOutcome.noop, version, **known
        )
    if event in _DEDICATED:
        raise ValueError(f"'{event}' is applied by {_DEDICATED[event]}, not by transition()")

    values: dict[str, Any] = _entry_defaults(status, target, now)
    values.update(changes)
    values.update(
        status=target.value,
        version=_documents.c.version + 1,
        status_changed_at=now,
        updated_at=now,
    )
    result = session.execute(
        update(_documents)
        .where(
            _documents.c.id == document_id,
            _documents.c.status == status.value,
            _documents.c.version == version,
        )
        .values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        actual = session.execute(
            select(_documents.c.status, _documents.c.version).where(_documents.c.id == document_id)
        ).one_or_none()
        raise LostRace(
            document_id,
            event,
            expected_status=status.value,
            expected_version=version,
            actual_status=None if actual is None else actual.status,
            actual_version=None if actual is None else actual.version,
        )
    session.execute(
        insert(_events).values(
            document_id=document_id,
            from_status=status.value,
            to_status=target.value,
            event=event.value,
            outcome=EventOutcome.applied.value,
            actor=actor,
            reason=reason,
            attempt=attempt,
            created_at=now,
        )
    )
    _expire_loaded(session, document_id)
    return TransitionResult(
        document_id, event, status, target, TransitionOutcome.applied, version + 1, **known
    )


def update_fields(
    session: Session,
    document_id: int,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
    now: datetime | None = None,
) -> int:
    """Set non-state columns (schedules, errors, amounts) without a transition. Does not commit.

    Bumps `version` (a decision may depend on these columns). With `expected_version`
    this is a compare-and-set and raises LostRace when it loses. Returns the new version.
    """
    checked = _checked_changes(changes)
    if not checked:
        raise ValueError("update_fields() needs at least one column to change")
    now = now or utcnow()
    statement = update(_documents).where(_documents.c.id == document_id)
    if expected_version is not None:
        statement = statement.where(_documents.c.version == expected_version)
    result = session.execute(
        statement.values(**checked, version=_documents.c.version + 1, updated_at=now).returning(
            _documents.c.version
        )
    )
    new_version = result.scalar_one_or_none()
    if new_version is None:
        actual = session.execute(
            select(_documents.c.status, _documents.c.version).where(_documents.c.id == document_id)
        ).one_or_none()
        if actual is None:
            raise DocumentNotFound(document_id)
        raise LostRace(
            document_id,
            None,
            expected_status=None,
            expected_version=expected_version,
            actual_status=actual.status,
            actual_version=actual.version,
        )
    _expire_loaded(session, document_id)
    return int(new_version)


def _checked_changes(changes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not changes:
        return {}
    protected = sorted(set(changes) & _PROTECTED)
    if protected:
        raise ValueError(f"these columns are owned by the lifecycle: {', '.join(protected)}")
    unknown = sorted(set(changes) - _COLUMNS)
    if unknown:
        raise ValueError(f"documents has no column(s): {', '.join(unknown)}")
    return dict(changes)


def _entry_defaults(
    source: DocumentStatus, target: DocumentStatus, now: datetime
) -> dict[str, Any]:
    """Due columns for entering `target` from `source` (overridden by the caller's changes)."""
    values: dict[str, Any] = {}
    if source is DocumentStatus.pushing:
        values["lease_expires_at"] = None
    if source is DocumentStatus.in_doubt:
        values["in_doubt_since"] = None
    if source in (DocumentStatus.draft, DocumentStatus.withdrawing):
        values["next_attempt_at"] = None
    if source in POLLED_STATUSES and target not in POLLED_STATUSES:
        values["next_poll_at"] = None
    if target in (DocumentStatus.draft, DocumentStatus.withdrawing):
        values["next_attempt_at"] = now
    if target is DocumentStatus.in_doubt:
        values["in_doubt_since"] = now
    if target in POLLED_STATUSES:
        values["next_poll_at"] = func.coalesce(
            _documents.c.next_poll_at, literal(now, type_=UTCDateTime())
        )
    return values


def _expire_loaded(session: Session, document_id: int) -> None:
    """Make an already loaded Document re-read the row we just changed behind the ORM."""
    loaded = session.identity_map.get(identity_key(Document, document_id))
    if loaded is not None:
        session.expire(loaded)


# --- claim --------------------------------------------------------------------------------


def claim_for_push(
    session: Session,
    document_id: int,
    lease_seconds: float,
    now: datetime | None = None,
    *,
    actor: str = "worker",
) -> Claimed | None:
    """draft -> pushing with push_attempt + 1 and a lease; None when not a draft. No commit.

    One compare-and-set `UPDATE ... WHERE id=:id AND status='draft'`: of two concurrent
    claimers exactly one gets a row back; the other gets None and should drop the task.
    (The batch claim of one id: the same statement and event row, one place.)
    """
    claims = claim_many_for_push(session, [document_id], lease_seconds, now, actor=actor)
    return claims.get(document_id)


# Ids per UPDATE … WHERE id IN (…): well under SQLite's and PostgreSQL's parameter limits.
_IDS_PER_CLAIM = 500


def claim_many_for_push(
    session: Session,
    document_ids: Sequence[int],
    lease_seconds: float,
    now: datetime | None = None,
    *,
    actor: str = "worker",
) -> dict[int, Claimed]:
    """``claim_for_push`` for many documents at once: the won claims by id. No commit.

    One compare-and-set ``UPDATE … WHERE id IN (…) AND status='draft' RETURNING …`` and ONE
    multi-row INSERT of their ``claim`` events (per 500 ids). Ids that are not drafts (any
    more) are simply absent from the result. The same rows and events as ``claim_for_push``
    would write; against a concurrent claim of the same row (single or bulk) exactly one
    claimer gets it back: PostgreSQL re-checks ``status='draft'`` on the row a concurrent
    transaction just committed, SQLite serialises writers (``BEGIN IMMEDIATE``).
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
                {
                    "document_id": row.id,
                    "from_status": DocumentStatus.draft.value,
                    "to_status": DocumentStatus.pushing.value,
                    "event": Event.claim.value,
                    "outcome": EventOutcome.applied.value,
                    "actor": actor,
                    "reason": reason,
                    "attempt": row.push_attempt,
                    "created_at": now,
                }
                for row in sorted(rows, key=lambda r: int(r.id))
            ],
        )
        for row in rows:
            _expire_loaded(session, row.id)
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


# --- acceptance ---------------------------------------------------------------------------


def accept_document(
    session: Session,
    *,
    tenant: str,
    seller_tax_id: str,
    bill_no: str,
    payload: Mapping[str, Any],
    content_hash: str,
    total_amount: Decimal,
    total_incl_tax: Decimal | None = None,
    total_tax: Decimal | None = None,
    invoice_type: str | None = None,
    actor: str,
    now: datetime | None = None,
) -> Acceptance:
    """Store a bill from the ERP by the identity and revision rules (module docstring).

    Does not commit. Raises RevisionConflict (409) for different content while the current
    revision is live, and LostRace if a concurrent submission superseded it first.
    `payload` must hold amounts as Decimal or str (floats are refused).
    """
    now = now or utcnow()
    fields: dict[str, Any] = {
        "payload": dict(payload),
        "content_hash": content_hash,
        "total_amount": total_amount,
        "total_incl_tax": total_incl_tax,
        "total_tax": total_tax,
        "invoice_type": invoice_type,
    }
    current = _current(session, tenant, seller_tax_id, bill_no)
    if current is None:
        try:
            with session.begin_nested():
                document = _new_revision(
                    session, tenant, seller_tax_id, bill_no, 1, fields, actor, now, None
                )
        except IntegrityError:
            # A concurrent submission of the same bill created it first: judge against it.
            current = _current(session, tenant, seller_tax_id, bill_no)
            if current is None:
                raise
        else:
            return Acceptance(document, AcceptanceOutcome.created)

    if current.content_hash == content_hash:
        return Acceptance(current, AcceptanceOutcome.unchanged)
    status = DocumentStatus(current.status)
    if (status, Event.resubmit) not in TRANSITIONS:
        raise RevisionConflict(current)
    if status is DocumentStatus.failed and _may_be_in_the_cloud(session, current.id):
        raise RevisionConflict(current, unsettled=True)

    superseded = session.execute(
        update(_documents)
        .where(
            _documents.c.id == current.id,
            _documents.c.status == status.value,
            _documents.c.version == current.version,
            _documents.c.is_current.is_(True),
        )
        .values(is_current=False, version=_documents.c.version + 1, updated_at=now)
    )
    if superseded.rowcount != 1:  # type: ignore[attr-defined]
        raise LostRace(
            current.id,
            Event.resubmit,
            expected_status=status.value,
            expected_version=current.version,
            actual_status=None,
            actual_version=None,
        )
    revision = current.revision + 1
    previous = _Previous(current.id, current.revision, status)
    session.add(
        DocumentEvent(
            document_id=current.id,
            from_status=status.value,
            to_status=status.value,
            event=Event.resubmit.value,
            outcome=EventOutcome.superseded.value,
            actor=actor,
            reason=f"superseded by revision {revision}",
            created_at=now,
        )
    )
    _expire_loaded(session, current.id)
    document = _new_revision(
        session, tenant, seller_tax_id, bill_no, revision, fields, actor, now, previous
    )
    return Acceptance(document, AcceptanceOutcome.new_revision)


def _may_be_in_the_cloud(session: Session, document_id: int) -> bool:
    """Whether a ``failed`` document's bill may still be live in the cloud (event log).

    True when a push was ever accepted (an event into ``pushed``), or when the document
    most recently entered ``failed`` from ``in_doubt`` (gave up while the push's outcome
    was unknown). ``pushing → failed`` is a failure before or without sending (bad
    payload, retries of answers that prove nothing was stored): a new revision is safe.
    """
    applied = DocumentEvent.outcome == EventOutcome.applied.value
    accepted = session.scalar(
        select(DocumentEvent.id)
        .where(
            DocumentEvent.document_id == document_id,
            applied,
            DocumentEvent.to_status == DocumentStatus.pushed.value,
        )
        .limit(1)
    )
    if accepted is not None:
        return True
    entered = session.scalar(
        select(DocumentEvent.from_status)
        .where(
            DocumentEvent.document_id == document_id,
            applied,
            DocumentEvent.to_status == DocumentStatus.failed.value,
            DocumentEvent.from_status != DocumentStatus.failed.value,
        )
        .order_by(DocumentEvent.id.desc())
        .limit(1)
    )
    return entered == DocumentStatus.in_doubt.value


@dataclass(frozen=True, slots=True)
class _Previous:
    document_id: int
    revision: int
    status: DocumentStatus


def _current(session: Session, tenant: str, seller_tax_id: str, bill_no: str) -> Document | None:
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


def _new_revision(
    session: Session,
    tenant: str,
    seller_tax_id: str,
    bill_no: str,
    revision: int,
    fields: Mapping[str, Any],
    actor: str,
    now: datetime,
    previous: _Previous | None,
) -> Document:
    document = Document(
        tenant=tenant,
        seller_tax_id=seller_tax_id,
        bill_no=bill_no,
        revision=revision,
        is_current=True,
        status=DocumentStatus.draft.value,
        version=1,
        push_attempt=0,
        poll_count=0,
        issued_amount=Decimal("0.00"),
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
        status_changed_at=now,
        **fields,
    )
    session.add(document)
    session.flush()
    if previous is None:
        event, from_status, reason = Event.submit, None, None
    else:
        event, from_status = Event.resubmit, previous.status.value
        reason = (
            f"revision {revision} replaces revision {previous.revision}"
            f" (document #{previous.document_id}, was {previous.status})"
        )
    session.add(
        DocumentEvent(
            document_id=document.id,
            from_status=from_status,
            to_status=DocumentStatus.draft.value,
            event=event.value,
            outcome=EventOutcome.applied.value,
            actor=actor,
            reason=reason,
            created_at=now,
        )
    )
    session.flush()
    return document


# --- accept_documents (the bulk path) -------------------------------------------------------

# Bill numbers per SELECT … IN (…) on SQLite: well under its parameter limit.
_KEYS_PER_SELECT = 500


@dataclass(frozen=True, slots=True)
class BillToAccept:
    """One bill for ``accept_documents``: the same fields ``accept_document`` takes."""

    tenant: str
    seller_tax_id: str
    bill_no: str
    payload: Mapping[str, Any]
    content_hash: str
    total_amount: Decimal
    total_incl_tax: Decimal | None = None
    total_tax: Decimal | None = None
    invoice_type: str | None = None


@dataclass(frozen=True, slots=True)
class BulkAcceptance:
    """What ``accept_documents`` settled for one bill: ``created`` or ``unchanged``."""

    document_id: int
    outcome: AcceptanceOutcome
    status: str
    revision: int


def accept_documents(
    session: Session,
    bills: Sequence[BillToAccept],
    *,
    actor: str,
    now: datetime | None = None,
) -> list[BulkAcceptance | None]:
    """Accept a batch the cheap way: one SELECT of the current revisions, one INSERT of the new
    documents and their ``submit`` events. Results in the order of ``bills``.

    Settles only what needs no revision logic: a bill with no current revision (``created``)
    and one whose current revision has the same content (``unchanged``). ``None`` means "not
    settled here, judge it with ``accept_document``, in order, in this same transaction":
    different content than the current revision (new revision or conflict), a bill whose
    identity appears more than once in the batch (later copies are judged against earlier
    ones), and every would-be new bill when the INSERT hit the unique index (a concurrent
    submission created one first; the SAVEPOINT is rolled back, nothing of it remains).

    | step              | PostgreSQL                              | SQLite                    |
    |-------------------|-----------------------------------------|---------------------------|
    | current revisions | ``bill_no = ANY(:bill_nos)``, one array | ``bill_no IN (…)`` per    |
    |                   | parameter                               | 500 bill numbers          |
    | new documents and | ONE statement: ``INSERT … SELECT FROM   | multi-row ``INSERT …      |
    | their events      | ROWS FROM (unnest(:array), …,           | RETURNING`` of documents, |
    |                   | jsonb_array_elements(:payloads)) WITH   | then one of events        |
    |                   | ORDINALITY``; the events are inserted   |                           |
    |                   | from its ``RETURNING`` (a CTE)          |                           |

    On PostgreSQL the statements' text does not depend on the batch size and has a dozen
    parameters, so psycopg prepares it once per connection instead of parsing ~19,000
    placeholders per 1,000 documents on every call. Scalar columns go as arrays; the payloads
    as ONE JSON array text (psycopg's text array dumper escapes every ``"`` of every JSON
    element in Python, which cost more than the parsing it saves). Ids are drawn in batch
    order (``ORDER BY`` the ordinality) and matched back by (tenant, seller, bill_no), unique
    among the new bills. The values pass the same checks as the ORM columns: money with at
    most two decimals and never a float, a payload without floats, an aware ``now``.

    Does not commit; the same rows and events as ``accept_document`` would write.
    """
    now = now or utcnow()
    results: list[BulkAcceptance | None] = [None] * len(bills)
    counts: dict[tuple[str, str, str], int] = {}
    for bill in bills:
        key = (bill.tenant, bill.seller_tax_id, bill.bill_no)
        counts[key] = counts.get(key, 0) + 1
    single = [i for i, bill in enumerate(bills) if counts[_key_of(bill)] == 1]
    if not single:
        return results

    dialect = session.get_bind().dialect
    postgres = dialect.name == "postgresql"
    bill_nos = sorted({bills[i].bill_no for i in single})
    if postgres:
        current = _current_revisions_pg(session, bill_nos)
    else:
        current = _current_revisions(session, bill_nos)

    fresh: list[int] = []
    for i in single:
        bill = bills[i]
        found = current.get(_key_of(bill))
        if found is None:
            fresh.append(i)
        elif found[1] == bill.content_hash:
            results[i] = BulkAcceptance(found[0], AcceptanceOutcome.unchanged, found[2], found[3])
        # else: different content, revision rules: accept_document decides.
    if not fresh:
        return results

    try:
        if postgres:
            ids = _insert_new_pg(session, dialect, [bills[i] for i in fresh], actor, now)
        else:
            ids = _insert_new(session, [bills[i] for i in fresh], actor, now)
    except IntegrityError:
        # A concurrent submission created one of these bills first: accept_document judges
        # each against whatever is current now.
        return results
    for i, doc_id in zip(fresh, ids, strict=True):
        results[i] = BulkAcceptance(
            doc_id, AcceptanceOutcome.created, DocumentStatus.draft.value, 1
        )
    return results


def _key_of(bill: BillToAccept) -> tuple[str, str, str]:
    return (bill.tenant, bill.seller_tax_id, bill.bill_no)


_Current = dict[tuple[str, str, str], tuple[int, str, str, int]]
"""(tenant, seller, bill_no) -> (id, content_hash, status, revision) of the current revision."""


def _current_revisions(session: Session, bill_nos: Sequence[str]) -> _Current:
    current: _Current = {}
    for start in range(0, len(bill_nos), _KEYS_PER_SELECT):
        rows = session.execute(
            select(
                _documents.c.tenant,
                _documents.c.seller_tax_id,
                _documents.c.bill_no,
                _documents.c.id,
                _documents.c.content_hash,
                _documents.c.status,
                _documents.c.revision,
            ).where(
                _documents.c.bill_no.in_(bill_nos[start : start + _KEYS_PER_SELECT]),
                _documents.c.is_current.is_(True),
            )
        )
        for tenant, seller, bill_no, doc_id, content_hash, status, revision in rows:
            current[(tenant, seller, bill_no)] = (doc_id, content_hash, status, revision)
    return current


def _insert_new(
    session: Session, bills: Sequence[BillToAccept], actor: str, now: datetime
) -> list[int]:
    """The new documents and their submit events (multi-row INSERTs), ids in order."""
    rows_in = [_document_row(bill, now) for bill in bills]
    with session.begin_nested():
        ids = list(
            session.execute(
                insert(_documents).returning(_documents.c.id, sort_by_parameter_order=True),
                rows_in,
            ).scalars()
        )
        session.execute(
            insert(DocumentEvent),
            [
                {
                    "document_id": doc_id,
                    "from_status": None,
                    "to_status": DocumentStatus.draft.value,
                    "event": Event.submit.value,
                    "outcome": EventOutcome.applied.value,
                    "actor": actor,
                    "reason": None,
                    "created_at": now,
                }
                for doc_id in ids
            ],
        )
    return ids


def _document_row(bill: BillToAccept, now: datetime) -> dict[str, Any]:
    """The columns ``_new_revision`` gives a first revision."""
    return {
        "tenant": bill.tenant,
        "seller_tax_id": bill.seller_tax_id,
        "bill_no": bill.bill_no,
        "revision": 1,
        "is_current": True,
        "status": DocumentStatus.draft.value,
        "version": 1,
        "push_attempt": 0,
        "poll_count": 0,
        "issued_amount": Decimal("0.00"),
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
        "status_changed_at": now,
        "payload": dict(bill.payload),
        "content_hash": bill.content_hash,
        "total_amount": bill.total_amount,
        "total_incl_tax": bill.total_incl_tax,
        "total_tax": bill.total_tax,
        "invoice_type": bill.invoice_type,
    }


# PostgreSQL: statements whose text is the same for every batch (array parameters).
_CURRENT_PG = text(
    "SELECT tenant, seller_tax_id, bill_no, id, content_hash, status, revision"
    " FROM documents"
    " WHERE bill_no = ANY(CAST(:bill_nos AS VARCHAR[])) AND is_current"
)

# The first revision's columns as `_document_row` gives them; the events are inserted from
# the documents' RETURNING in the same statement (a data-modifying CTE), in id order.
_INSERT_NEW_PG = text(
    """
WITH new AS (
    INSERT INTO documents (
        tenant, seller_tax_id, bill_no, revision, is_current, status, version, push_attempt,
        poll_count, issued_amount, next_attempt_at, created_at, updated_at, status_changed_at,
        payload, content_hash, total_amount, total_incl_tax, total_tax, invoice_type
    )
    SELECT b.tenant, b.seller_tax_id, b.bill_no, 1, true, :draft, 1, 0,
           0, 0.00, :now, :now, :now, :now,
           b.payload, b.content_hash, b.total_amount, b.total_incl_tax,
           b.total_tax, b.invoice_type
    FROM ROWS FROM (
        unnest(CAST(:tenants AS VARCHAR[])), unnest(CAST(:sellers AS VARCHAR[])),
        unnest(CAST(:bill_nos AS VARCHAR[])), unnest(CAST(:hashes AS VARCHAR[])),
        unnest(CAST(:totals AS NUMERIC[])), unnest(CAST(:totals_incl AS NUMERIC[])),
        unnest(CAST(:taxes AS NUMERIC[])), unnest(CAST(:types AS VARCHAR[])),
        jsonb_array_elements(CAST(:payloads AS JSONB))
    ) WITH ORDINALITY AS b(
        tenant, seller_tax_id, bill_no, content_hash, total_amount, total_incl_tax, total_tax,
        invoice_type, payload, n
    )
    ORDER BY b.n
    RETURNING id, tenant, seller_tax_id, bill_no
), submitted AS (
    INSERT INTO document_events (
        document_id, from_status, to_status, event, outcome, actor, reason, attempt, created_at
    )
    SELECT id, NULL, :draft, :submit, :applied, :actor, NULL, NULL, :now FROM new ORDER BY id
)
SELECT id, tenant, seller_tax_id, bill_no FROM new
"""
).bindparams(bindparam("now", type_=UTCDateTime()))

_money = Money()
_payload = JSONValue(allow_float=False)


def _current_revisions_pg(session: Session, bill_nos: Sequence[str]) -> _Current:
    rows = session.execute(_CURRENT_PG, {"bill_nos": list(bill_nos)})
    return {
        (tenant, seller, bill_no): (doc_id, content_hash, status, revision)
        for tenant, seller, bill_no, doc_id, content_hash, status, revision in rows
    }


def _insert_new_pg(
    session: Session, dialect: Dialect, bills: Sequence[BillToAccept], actor: str, now: datetime
) -> list[int]:
    """The new documents and their submit events in one statement, ids in batch order."""
    money = _money.process_bind_param
    params = {
        "tenants": [b.tenant for b in bills],
        "sellers": [b.seller_tax_id for b in bills],
        "bill_nos": [b.bill_no for b in bills],
        "payloads": json.dumps(
            [_payload.process_bind_param(dict(b.payload), dialect) for b in bills]
        ),
        "hashes": [b.content_hash for b in bills],
        "totals": [money(b.total_amount, dialect) for b in bills],
        "totals_incl": [money(b.total_incl_tax, dialect) for b in bills],
        "taxes": [money(b.total_tax, dialect) for b in bills],
        "types": [b.invoice_type for b in bills],
        "now": now,
        "actor": actor,
        "draft": DocumentStatus.draft.value,
        "submit": Event.submit.value,
        "applied": EventOutcome.applied.value,
    }
    with session.begin_nested():
        rows = session.execute(_INSERT_NEW_PG, params).all()
    ids = {(tenant, seller, bill_no): doc_id for doc_id, tenant, seller, bill_no in rows}
    if len(ids) != len(bills):  # every row is inserted or the statement fails
        raise RuntimeError(f"bulk insert returned {len(ids)} documents for {len(bills)} bills")
    return [ids[_key_of(bill)] for bill in bills]
