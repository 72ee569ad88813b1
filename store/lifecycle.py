"""The document lifecycle: the state table as data, and the only code that changes `status`.

`TRANSITIONS[(state, event)] -> state` below IS the table (docs/LIFECYCLE.md prints it, with
its diagram, generated from this dict). A pair that is not in it is forbidden
(`TransitionNotAllowed`). Rows whose target equals their source are deliberate no-ops: a
duplicate or late answer that must not fail and must not move anything.

How a transition is written (`transition()`):
- ONE conditional `UPDATE documents SET status=:to, version=version+1, ... WHERE id=:id AND
  status=:from AND version=:version` plus ONE `document_events` row, in the CALLER's session
  and transaction. Nothing here commits: wrap calls in `store.db.unit_of_work` (or commit
  yourself) so the state change and whatever caused it land together.
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

The other writers of a document, each one compare-and-set, none committing:

| primitive                                   | writes                                         |
|---------------------------------------------|------------------------------------------------|
| `transition()`                              | every row of the table but `claim`/`resubmit`  |
| `store.claims.claim_for_push` / `_many_`    | `draft --claim--> pushing`: attempt + 1, lease |
| `store.acceptance.accept_documents`         | `submit` (revision 1) and `resubmit` (a new    |
|                                             | revision; the old one is `superseded`)         |
| `update_fields()`                           | non-state columns (errors, schedules, amounts), |
|                                             | `version` + 1                                  |
| `store.quota.hold_documents`                | a draft held for credit quota: its reason and  |
|                                             | `next_attempt_at` (still `draft`), `version` + 1|
| `defer_poll()`                              | a `pushed` document's `next_poll_at`, later    |
|                                             | only; no version bump (scheduling, like the    |
|                                             | sweeps' claims in `store.queries`)             |

Every `document_events` row of those writers is built by `event_row()`.

Errors:
    LifecycleError
    ├── DocumentNotFound       no such document id
    ├── TransitionNotAllowed   (state, event) is not in the table
    ├── LostRace               the compare-and-set lost; re-read and decide again
    └── RevisionConflict       different content while the current revision is live (409)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, case, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.elements import ClauseElement

from store.columns import UTCDateTime, utcnow
from store.models import Document, DocumentEvent
from store.states import POLLED_STATUSES, DocumentStatus, Event, EventOutcome

__all__ = [
    "NO_OPS",
    "TRANSITIONS",
    "DocumentNotFound",
    "DocumentStatus",
    "Event",
    "LifecycleError",
    "LostRace",
    "RevisionConflict",
    "TransitionNotAllowed",
    "TransitionOutcome",
    "TransitionResult",
    "defer_poll",
    "event_row",
    "expire_loaded",
    "is_allowed",
    "target_of",
    "transition",
    "update_fields",
]

S = DocumentStatus
E = Event

TRANSITIONS: Mapping[tuple[DocumentStatus, Event], DocumentStatus] = {
    # draft: a push is owed
    (S.draft, E.claim): S.pushing,  # only through store.claims
    (S.draft, E.withdraw): S.withdrawn,  # never reached the cloud
    (S.draft, E.absent): S.draft,
    (S.draft, E.replay): S.draft,
    # pushing: a worker holds the lease
    (S.pushing, E.accepted): S.pushed,
    (S.pushing, E.refused): S.rejected,
    (S.pushing, E.unsure): S.in_doubt,  # also an expired lease
    (S.pushing, E.give_up): S.failed,
    (S.pushing, E.retry): S.draft,  # failed BEFORE sending
    # in_doubt: only a query decides
    (S.in_doubt, E.accepted): S.pushed,  # the query found the bill
    (S.in_doubt, E.absent): S.draft,  # proved it never arrived
    (S.in_doubt, E.give_up): S.failed,
    (S.in_doubt, E.unsure): S.in_doubt,
    # pushed: invoices are owed
    (S.pushed, E.issued_all): S.invoiced,
    (S.pushed, E.issued_some): S.partially_invoiced,
    (S.pushed, E.issue_failed): S.invoice_failed,
    (S.pushed, E.withdraw): S.withdrawing,
    (S.pushed, E.returned): S.returned,  # 回退 (5.1.01)
    (S.pushed, E.accepted): S.pushed,
    # partially_invoiced: only forward
    (S.partially_invoiced, E.issued_all): S.invoiced,
    (S.partially_invoiced, E.issued_some): S.partially_invoiced,
    (S.partially_invoiced, E.issue_failed): S.partially_invoiced,
    (S.partially_invoiced, E.accepted): S.partially_invoiced,
    # invoices still owed: a reversal of the issued ones is recorded on the invoices only
    (S.partially_invoiced, E.reversed_all): S.partially_invoiced,
    # invoiced: terminal, late answers change nothing
    (S.invoiced, E.issued_all): S.invoiced,
    (S.invoiced, E.issued_some): S.invoiced,
    (S.invoiced, E.issue_failed): S.invoiced,
    (S.invoiced, E.accepted): S.invoiced,
    (S.invoiced, E.reversed_all): S.reversed,  # every invoice voided / fully red-flushed
    # reversed: terminal, a late INVOICE.OPEN or query changes nothing
    (S.reversed, E.issued_all): S.reversed,
    (S.reversed, E.issued_some): S.reversed,
    (S.reversed, E.issue_failed): S.reversed,
    (S.reversed, E.accepted): S.reversed,
    (S.reversed, E.reversed_all): S.reversed,
    # invoice_failed
    (S.invoice_failed, E.issued_all): S.invoiced,  # re-issued in the cloud
    (S.invoice_failed, E.issued_some): S.partially_invoiced,
    (S.invoice_failed, E.withdraw): S.withdrawing,
    (S.invoice_failed, E.returned): S.returned,
    (S.invoice_failed, E.issue_failed): S.invoice_failed,
    (S.invoice_failed, E.accepted): S.invoice_failed,
    # rejected: needs corrected data (resubmit: a new revision) or an operator (replay)
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
    (S.withdrawing, E.withdraw_refused): S.pushed,  # nothing issued
    (S.withdrawing, E.issued_all): S.invoiced,
    (S.withdrawing, E.issued_some): S.partially_invoiced,
    (S.withdrawing, E.issue_failed): S.invoice_failed,
    (S.withdrawing, E.returned): S.returned,  # handed back meanwhile
    (S.withdrawing, E.withdraw): S.withdrawing,  # a duplicate request
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
_DEDICATED = {
    Event.claim: "store.claims.claim_for_push()",
    Event.resubmit: "store.acceptance.accept_documents()",
}
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
    """Different content for a bill whose current revision is still live (HTTP 409).

    `unsettled`: the revision is `failed` but its bill may still be live in the cloud (see
    `store.acceptance`).
    """

    def __init__(
        self,
        *,
        document_id: int,
        bill_no: str,
        status: DocumentStatus | str,
        revision: int,
        unsettled: bool = False,
    ) -> None:
        self.document_id = document_id
        self.bill_no = bill_no
        self.status = DocumentStatus(status)
        self.revision = revision
        if unsettled:
            super().__init__(
                f"billNo {bill_no} is 'failed' (revision {revision}) but the previous push's"
                " outcome was never settled: the cloud may still hold that bill. Withdraw it"
                " first (fapiao withdraw / POST …/withdraw) or replay the same content"
                f" / 单据编号 {bill_no} 上次推送结果未确认，发票云可能仍有该单据；"
                "请先撤回（fapiao withdraw / POST …/withdraw）或以相同内容重新推送"
            )
            return
        super().__init__(
            f"billNo {bill_no} already exists with different content and is"
            f" '{self.status}' (revision {revision}); a new revision is accepted"
            " only after rejected, failed, withdrawn or returned"
            f" / 单据编号 {bill_no} 已存在且内容不同，当前状态为 '{self.status}'，"
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


# --- the audit row ------------------------------------------------------------------------


def event_row(
    document_id: int | None,
    event: Event,
    *,
    from_status: str | None,
    to_status: str,
    actor: str,
    now: datetime,
    outcome: EventOutcome = EventOutcome.applied,
    reason: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """One `document_events` row (column -> value): the only place such a row is shaped.

    `document_id` may be None while the document is being inserted in the same statement.
    """
    return {
        "document_id": document_id,
        "from_status": from_status,
        "to_status": to_status,
        "event": event.value,
        "outcome": outcome.value,
        "actor": actor,
        "reason": reason,
        "attempt": attempt,
        "created_at": now,
    }


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
    current: Document | None = None,
) -> TransitionResult:
    """Apply `event` to a document (module docstring). Does not commit.

    `changes` sets other columns in the same UPDATE (e.g. `last_error_code`,
    `last_error_message`, `next_poll_at`, `issued_amount`); identity columns, `status`,
    `version` and `push_attempt` are refused. Raises TransitionNotAllowed, LostRace,
    DocumentNotFound; `claim` and `resubmit` are a ValueError (their own entry points).

    `current`: the document as the caller's transaction has just read it (loaded with
    ``populate_existing``, nothing written to it since but by the lifecycle's writers, which
    expire it): its status, version and attempt are used instead of reading the row again. The
    compare-and-set UPDATE is the same, so a document moved meanwhile still loses the race.
    """
    event = Event(event)
    changes = _checked_changes(changes)
    now = now or utcnow()
    row: Any
    if current is None:
        row = session.execute(_READ, {"document_id": document_id}).one_or_none()
        if row is None:
            raise DocumentNotFound(document_id)
    elif current.id != document_id:
        raise ValueError(f"current is document #{current.id}, not #{document_id}")
    else:
        row = current
    known = {"tenant": row.tenant, "created_at": row.created_at}
    status = DocumentStatus(row.status)
    version: int = row.version

    def record(to: DocumentStatus, outcome: EventOutcome, why: str | None) -> None:
        entry = event_row(
            document_id,
            event,
            from_status=status.value,
            to_status=to.value,
            actor=actor,
            now=now,
            outcome=outcome,
            reason=why,
            attempt=attempt,
        )
        session.execute(_INSERT_EVENT, entry)

    if attempt is not None and attempt > row.push_attempt:
        raise ValueError(
            f"attempt {attempt} for document #{document_id} is newer than its push_attempt"
            f" {row.push_attempt}: attempts are numbered by claim_for_push()"
        )
    if attempt is not None and attempt < row.push_attempt:
        note = f"stale answer for attempt {attempt} (current {row.push_attempt}): not applied"
        record(status, EventOutcome.stale, f"{note}; {reason}" if reason else note)
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
    values.update(status=target.value, status_changed_at=now, updated_at=now)
    statement, parameters = _compare_and_set(values)
    parameters.update(w_id=document_id, w_status=status.value, w_version=version)
    result = session.execute(statement, parameters)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _lost(session, document_id, event, status.value, version)
    record(target, EventOutcome.applied, reason)
    expire_loaded(session, document_id)
    return TransitionResult(
        document_id, event, status, target, TransitionOutcome.applied, version + 1, **known
    )


# Prebuilt statements: building and cache-keying a statement per call cost more CPU than
# running it (transition() is the hottest writer). Same SQL, bound parameters only.
_READ: Final = select(
    _documents.c.status,
    _documents.c.version,
    _documents.c.push_attempt,
    _documents.c.bill_no,
    _documents.c.tenant,
    _documents.c.created_at,
).where(_documents.c.id == bindparam("document_id", type_=_documents.c.id.type))
_INSERT_EVENT: Final = insert(_events)


class _KeepPoll:
    """``next_poll_at`` on entering a polled state: the current schedule, else ``now``."""

    __slots__ = ("now",)

    def __init__(self, now: datetime) -> None:
        self.now = now


_UPDATES: dict[tuple[str, ...], Any] = {}


def _compare_and_set(values: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The transition's conditional UPDATE for these columns (built once per column set) and
    its parameters: ``SET <column>=:set_<column>, version=version+1 WHERE id=:w_id AND
    status=:w_status AND version=:w_version``; a ``_KeepPoll`` is ``coalesce(next_poll_at,
    :set_next_poll_at)``. A value that is itself an SQL expression gets a statement of its own.
    """
    if any(isinstance(value, ClauseElement) for value in values.values()):
        return _build_update(values), {}
    columns = tuple(
        sorted(
            f"{name}~" if isinstance(value, _KeepPoll) else name for name, value in values.items()
        )
    )
    statement = _UPDATES.get(columns)
    if statement is None:
        sets: dict[str, Any] = {}
        for key in columns:
            name = key.removesuffix("~")
            bound = bindparam(f"set_{name}", type_=_documents.c[name].type)
            sets[name] = func.coalesce(_documents.c[name], bound) if key.endswith("~") else bound
        statement = _build_update(sets, bound=True)
        _UPDATES[columns] = statement
    parameters = {
        f"set_{name}": value.now if isinstance(value, _KeepPoll) else value
        for name, value in values.items()
    }
    return statement, parameters


def _build_update(values: Mapping[str, Any], *, bound: bool = False) -> Any:
    if not bound:  # one-off: the condition's values are parameters all the same
        values = {
            name: func.coalesce(_documents.c[name], literal(value.now, type_=UTCDateTime()))
            if isinstance(value, _KeepPoll)
            else value
            for name, value in values.items()
        }
    return (
        update(_documents)
        .where(
            _documents.c.id == bindparam("w_id", type_=_documents.c.id.type),
            _documents.c.status == bindparam("w_status", type_=_documents.c.status.type),
            _documents.c.version == bindparam("w_version", type_=_documents.c.version.type),
        )
        .values(**values, version=_documents.c.version + 1)
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
        raise _lost(session, document_id, None, None, expected_version)
    expire_loaded(session, document_id)
    return int(new_version)


_UNTIL: Final = bindparam("until", type_=UTCDateTime())
# Built once: the callback receiver runs it for every stored callback.
_DEFER_POLL: Final = (
    update(_documents)
    .where(_documents.c.id == bindparam("document_id", type_=_documents.c.id.type))
    .values(
        next_poll_at=case(
            (
                (_documents.c.status == DocumentStatus.pushed.value)
                & or_(_documents.c.next_poll_at.is_(None), _documents.c.next_poll_at < _UNTIL),
                _UNTIL,
            ),
            else_=_documents.c.next_poll_at,
        )
    )
    .returning(_documents.c.tenant)
)


def defer_poll(session: Session, document_id: int, until: datetime) -> str | None:
    """Move a `pushed` document's next poll to no earlier than `until`. Does not commit.

    For a caller that is about to ask the cloud itself (a stored callback's reconcile), so a
    poll meanwhile would ask the same question twice. Any other state is left alone (an
    in_doubt document's queries belong to its resolver); an earlier schedule is never made
    later than `until`. A scheduling column only: no version bump, no event row. One
    statement, which also returns the document's tenant (None: no such document).
    """
    tenant = session.execute(
        _DEFER_POLL, {"document_id": document_id, "until": until}
    ).scalar_one_or_none()
    return None if tenant is None else str(tenant)


def _lost(
    session: Session,
    document_id: int,
    event: Event | None,
    expected_status: str | None,
    expected_version: int | None,
) -> LifecycleError:
    """Why a compare-and-set matched no row: the document is gone or has moved on."""
    actual = session.execute(
        select(_documents.c.status, _documents.c.version).where(_documents.c.id == document_id)
    ).one_or_none()
    if actual is None and event is None:
        return DocumentNotFound(document_id)
    return LostRace(
        document_id,
        event,
        expected_status=expected_status,
        expected_version=expected_version,
        actual_status=None if actual is None else actual.status,
        actual_version=None if actual is None else actual.version,
    )


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
        values["next_poll_at"] = _KeepPoll(now)
    return values


def expire_loaded(session: Session, *document_ids: int) -> None:
    """Make already loaded Documents re-read the rows a Core statement just changed."""
    for document_id in document_ids:
        loaded = session.identity_map.get(identity_key(Document, document_id))
        if loaded is not None:
            session.expire(loaded)
