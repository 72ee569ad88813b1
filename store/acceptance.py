"""Accepting bills from the ERP: the lifecycle's `submit` and `resubmit` rows, for a batch.

`accept_documents(session, bills, actor=...)` judges every bill by the identity and revision
rules and returns, in the order of `bills`, an `Acceptance` or the `RevisionConflict` that
refuses it (HTTP 409). One bill is a batch of one. The results are those of judging the bills
one by one in batch order. Does not commit.

A document is (tenant, seller_tax_id, bill_no); one row per identity is `is_current`.

| the current revision                         | content   | result                            |
|----------------------------------------------|-----------|-----------------------------------|
| none                                         | —         | a new row, revision 1, `draft`,   |
|                                              |           | event `submit`: `created`         |
| any state                                    | identical | nothing written: `unchanged`      |
| `rejected`, `withdrawn`, `returned`          | different | a new row, revision + 1, `draft`: |
|                                              |           | `new_revision`                    |
| `failed`, and the bill cannot be in the cloud | different | a new revision                   |
| `failed`, and it may be in the cloud          | different | `RevisionConflict(unsettled)`    |
| any other state                              | different | `RevisionConflict`                |

"Identical" is the same `content_hash`. The states that take a new revision are those with a
`resubmit` row in `store.lifecycle.TRANSITIONS`. A `failed` bill "may be in the cloud" (event
log) when a push was ever accepted (an event into `pushed`), or when it most recently entered
`failed` from `in_doubt` (gave up while the push's outcome was unknown); `pushing → failed` is
a failure before or without sending, so a new revision is safe. A new revision marks the old
row `is_current = false` (compare-and-set on its version) with an event `resubmit` /
`superseded`; the new row's first event is `resubmit` from the old state to `draft`.

How a batch is written. A bill whose identity appeared earlier in the batch is judged in a
later round, after the earlier copy is written; a batch without repeats is one round.

On PostgreSQL the first round starts by creating whatever is new, optimistically: ONE
statement inserts every bill of the round as revision 1 with its `submit` event, ``ON
CONFLICT DO NOTHING``, so a bill with a current revision (or created meanwhile by a concurrent
submission, once that one commits) is skipped by the unique indexes instead of failing the
statement. A round of new bills (the common case; a one-document request in particular) is
then done: one statement, no SELECT, no SAVEPOINT. A skipped bill costs one sequence number.
Only the skipped bills are judged as below (on SQLite, every bill is):

| step (per round)               | statements                                                 |
|--------------------------------|------------------------------------------------------------|
| current revisions              | ONE SELECT: ``bill_no = ANY(:array)`` on PostgreSQL,       |
|                                | ``bill_no IN (SELECT value FROM json_each(:json))`` on     |
|                                | SQLite                                                     |
| may it be in the cloud?        | two SELECTs of the event log, only when a ``failed``       |
|                                | revision meets different content                           |
| in ONE SAVEPOINT: old revisions | ONE ``UPDATE … WHERE (id, status, version) IN (…) AND     |
|                                | is_current RETURNING id`` and their ``superseded`` events, |
|                                | only when there are new revisions                          |
| new documents and their events | PostgreSQL: ONE statement, the rows as two JSON parameters |
|                                | (``jsonb_populate_recordset``), the events inserted from   |
|                                | the documents' ``RETURNING`` (a CTE); SQLite: a multi-row  |
|                                | ``INSERT … RETURNING``, then one of events                 |

Every row comes from one builder: `_document_row` for a document (first or later revision),
`store.lifecycle.event_row` for an event. The JSON parameters carry each value as its column
binds it (money with at most two decimals and never a float, a payload without floats, an
aware time). On PostgreSQL the statements' text does not depend on the batch size, so psycopg
prepares them once per connection.

Races: an old revision whose UPDATE matched no row (a concurrent submission superseded it) and
an INSERT that hit the unique index (a concurrent submission created the bill; the SAVEPOINT
is rolled back, nothing of this round remains) send those bills back to be judged against
what is current now, up to three times; then `LostRace` (or the IntegrityError) is raised. The
optimistic INSERT needs no such retry: a row it skips is simply judged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text, tuple_, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeDecorator

from store.columns import JSONValue, utcnow
from store.lifecycle import (
    TRANSITIONS,
    LostRace,
    RevisionConflict,
    event_row,
    expire_loaded,
)
from store.models import Document, DocumentEvent
from store.states import DocumentStatus, Event, EventOutcome

__all__ = ["Acceptance", "AcceptanceOutcome", "BillToAccept", "accept_documents"]

_documents = cast("Table", Document.__table__)
_events = cast("Table", DocumentEvent.__table__)

_DRAFT = DocumentStatus.draft.value
# A bill is judged again this often after losing a race to a concurrent submission.
_TRIES = 3


@dataclass(frozen=True, slots=True)
class BillToAccept:
    """One bill from the ERP, as it is stored. `payload` holds amounts as Decimal or str."""

    tenant: str
    seller_tax_id: str
    bill_no: str
    payload: Mapping[str, Any]
    content_hash: str
    total_amount: Decimal
    total_incl_tax: Decimal | None = None
    total_tax: Decimal | None = None
    invoice_type: str | None = None


class AcceptanceOutcome(StrEnum):
    created = "created"
    unchanged = "unchanged"
    new_revision = "new_revision"


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The current revision of an accepted bill, and how it came to be."""

    document_id: int
    outcome: AcceptanceOutcome
    status: str
    revision: int


@dataclass(frozen=True, slots=True)
class _Current:
    """The current revision of a bill, as read before judging it."""

    id: int
    content_hash: str
    status: DocumentStatus
    revision: int
    version: int


_Key = tuple[str, str, str]


def accept_documents(
    session: Session,
    bills: Sequence[BillToAccept],
    *,
    actor: str,
    now: datetime | None = None,
) -> list[Acceptance | RevisionConflict]:
    """Judge and store `bills` (module docstring); results in the order of `bills`.

    Does not commit. Raises LostRace when a bill kept losing to concurrent submissions, and
    the column types' errors (ValueError, TypeError) for values they refuse.
    """
    now = now or utcnow()
    results: list[Acceptance | RevisionConflict | None] = [None] * len(bills)
    # A later round repeats identities of the first, which leaves each with a current revision.
    optimistic = _is_postgres(session)
    for pending in _rounds(bills):
        if optimistic:
            optimistic = False
            pending = _create_new_pg(session, bills, pending, results, actor, now)
            if not pending:
                continue
        for _ in range(_TRIES):
            lost = _judge(session, bills, pending, results, actor, now)
            if lost is None:
                break
            pending, error = lost
        else:
            raise error
    return cast("list[Acceptance | RevisionConflict]", results)


def _rounds(bills: Sequence[BillToAccept]) -> list[list[int]]:
    """Indexes of `bills` by round: round n holds the n-th copy of each identity."""
    if len({_key_of(bill) for bill in bills}) == len(bills):
        return [list(range(len(bills)))] if bills else []
    copies: dict[_Key, int] = {}
    rounds: list[list[int]] = []
    for index, bill in enumerate(bills):
        key = _key_of(bill)
        copy = copies.get(key, 0)
        copies[key] = copy + 1
        if copy == len(rounds):
            rounds.append([])
        rounds[copy].append(index)
    return rounds


def _key_of(bill: BillToAccept) -> _Key:
    return (bill.tenant, bill.seller_tax_id, bill.bill_no)


def _judge(
    session: Session,
    bills: Sequence[BillToAccept],
    indexes: Sequence[int],
    results: list[Acceptance | RevisionConflict | None],
    actor: str,
    now: datetime,
) -> tuple[list[int], Exception] | None:
    """Settle the bills at `indexes` (distinct identities) into `results`. None, or those that
    lost a race and must be judged again, with the error to raise if they keep losing."""
    current = _current_revisions(session, [bills[i] for i in indexes])
    new: list[tuple[int, _Current | None]] = []  # (index, the revision it replaces)
    for i in indexes:
        bill = bills[i]
        found = current.get(_key_of(bill))
        if found is None:
            new.append((i, None))
        elif found.content_hash == bill.content_hash:
            results[i] = Acceptance(
                found.id, AcceptanceOutcome.unchanged, found.status.value, found.revision
            )
        elif (found.status, Event.resubmit) not in TRANSITIONS:
            results[i] = _conflict(bill, found)
        else:
            new.append((i, found))
    unsettled = _may_be_in_the_cloud(
        session, [f.id for _, f in new if f is not None and f.status is DocumentStatus.failed]
    )
    if unsettled:
        for i, found in new:
            if found is not None and found.id in unsettled:
                results[i] = _conflict(bills[i], found, unsettled=True)
        new = [(i, f) for i, f in new if f is None or f.id not in unsettled]
    if not new:
        return None

    try:
        with session.begin_nested():
            won = _supersede(session, [f for _, f in new if f is not None], actor, now)
            kept = [(i, f) for i, f in new if f is None or f.id in won]
            ids = _insert(session, [(bills[i], f) for i, f in kept], actor, now)
    except IntegrityError as error:
        # A concurrent submission created one of these bills first.
        return [i for i, _ in new], error
    for (i, previous), document_id in zip(kept, ids, strict=True):
        if previous is None:
            results[i] = Acceptance(document_id, AcceptanceOutcome.created, _DRAFT, 1)
        else:
            results[i] = Acceptance(
                document_id, AcceptanceOutcome.new_revision, _DRAFT, previous.revision + 1
            )
    lost = [(i, f) for i, f in new if f is not None and f.id not in won]
    if not lost:
        return None
    first = lost[0][1]
    return [i for i, _ in lost], LostRace(
        first.id,
        Event.resubmit,
        expected_status=first.status.value,
        expected_version=first.version,
        actual_status=None,
        actual_version=None,
    )


def _conflict(bill: BillToAccept, found: _Current, *, unsettled: bool = False) -> RevisionConflict:
    return RevisionConflict(
        document_id=found.id,
        bill_no=bill.bill_no,
        status=found.status,
        revision=found.revision,
        unsettled=unsettled,
    )


# --- reads --------------------------------------------------------------------------------

_CURRENT = (
    "SELECT tenant, seller_tax_id, bill_no, id, content_hash, status, revision, version"
    " FROM documents WHERE is_current AND bill_no "
)
# The one difference: how a list of bill numbers goes as ONE parameter.
_CURRENT_PG = text(_CURRENT + "= ANY(CAST(:bill_nos AS VARCHAR[]))")
_CURRENT_SQLITE = text(_CURRENT + "IN (SELECT value FROM json_each(:bill_nos))")


def _current_revisions(session: Session, bills: Sequence[BillToAccept]) -> dict[_Key, _Current]:
    bill_nos = sorted({bill.bill_no for bill in bills})
    if _is_postgres(session):
        rows = session.execute(_CURRENT_PG, {"bill_nos": bill_nos})
    else:
        rows = session.execute(_CURRENT_SQLITE, {"bill_nos": json.dumps(bill_nos)})
    return {
        (tenant, seller, bill_no): _Current(
            doc_id, content_hash, DocumentStatus(status), revision, version
        )
        for tenant, seller, bill_no, doc_id, content_hash, status, revision, version in rows
    }


def _may_be_in_the_cloud(session: Session, document_ids: Sequence[int]) -> set[int]:
    """Which of these `failed` documents' bills may still be live in the cloud (docstring)."""
    if not document_ids:
        return set()
    of_these = _events.c.document_id.in_(document_ids)
    applied = _events.c.outcome == EventOutcome.applied.value
    accepted = session.scalars(
        select(_events.c.document_id)
        .where(of_these, applied, _events.c.to_status == DocumentStatus.pushed.value)
        .distinct()
    )
    last_entries = (
        select(func.max(_events.c.id))
        .where(
            of_these,
            applied,
            _events.c.to_status == DocumentStatus.failed.value,
            _events.c.from_status != DocumentStatus.failed.value,
        )
        .group_by(_events.c.document_id)
    )
    gave_up_unsure = session.scalars(
        select(_events.c.document_id).where(
            _events.c.id.in_(last_entries),
            _events.c.from_status == DocumentStatus.in_doubt.value,
        )
    )
    return set(accepted) | set(gave_up_unsure)


# --- writes -------------------------------------------------------------------------------


def _supersede(
    session: Session, previous: Sequence[_Current], actor: str, now: datetime
) -> set[int]:
    """Take `is_current` from these revisions (compare-and-set); the ids that were taken."""
    if not previous:
        return set()
    won = set(
        session.execute(
            update(_documents)
            .where(
                tuple_(_documents.c.id, _documents.c.status, _documents.c.version).in_(
                    [(p.id, p.status.value, p.version) for p in previous]
                ),
                _documents.c.is_current.is_(True),
            )
            .values(is_current=False, version=_documents.c.version + 1, updated_at=now)
            .returning(_documents.c.id)
        ).scalars()
    )
    if won:
        _insert_events(
            session,
            [
                event_row(
                    p.id,
                    Event.resubmit,
                    from_status=p.status.value,
                    to_status=p.status.value,
                    actor=actor,
                    now=now,
                    outcome=EventOutcome.superseded,
                    reason=f"superseded by revision {p.revision + 1}",
                )
                for p in previous
                if p.id in won
            ],
        )
        expire_loaded(session, *won)
    return won


def _document_row(bill: BillToAccept, revision: int, now: datetime) -> dict[str, Any]:
    """The columns a new revision (the first or a later one) starts with: draft, push owed."""
    return {
        "tenant": bill.tenant,
        "seller_tax_id": bill.seller_tax_id,
        "bill_no": bill.bill_no,
        "revision": revision,
        "is_current": True,
        "status": _DRAFT,
        "version": 1,
        "push_attempt": 0,
        "poll_count": 0,
        "issued_amount": Decimal("0.00"),
        "next_attempt_at": now,  # the draft sweep finds it if the enqueue is lost
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


def _first_event(previous: _Current | None, actor: str, now: datetime) -> dict[str, Any]:
    """A new revision's first event (its document id is filled in on insert)."""
    if previous is None:
        return event_row(
            None, Event.submit, from_status=None, to_status=_DRAFT, actor=actor, now=now
        )
    return event_row(
        None,
        Event.resubmit,
        from_status=previous.status.value,
        to_status=_DRAFT,
        actor=actor,
        now=now,
        reason=(
            f"revision {previous.revision + 1} replaces revision {previous.revision}"
            f" (document #{previous.id}, was {previous.status.value})"
        ),
    )


def _insert(
    session: Session,
    new: Sequence[tuple[BillToAccept, _Current | None]],
    actor: str,
    now: datetime,
) -> list[int]:
    """Insert the new revisions and their first events; their ids in the order of `new`."""
    if not new:
        return []
    documents = [
        _document_row(bill, 1 if previous is None else previous.revision + 1, now)
        for bill, previous in new
    ]
    events = [_first_event(previous, actor, now) for _, previous in new]
    if _is_postgres(session):
        return _insert_with_events_pg(session, documents, events)
    returning = insert(_documents).returning(_documents.c.id, sort_by_parameter_order=True)
    ids = list(session.execute(returning, documents).scalars())
    for event, document_id in zip(events, ids, strict=True):
        event["document_id"] = document_id
    _insert_events(session, events)
    return ids


def _create_new_pg(
    session: Session,
    bills: Sequence[BillToAccept],
    indexes: Sequence[int],
    results: list[Acceptance | RevisionConflict | None],
    actor: str,
    now: datetime,
) -> list[int]:
    """PostgreSQL: insert the bills at `indexes` (distinct identities) as first revisions with
    their `submit` events, in ONE statement, skipping every bill the unique indexes refuse
    (it has a current revision, or a concurrent submission created it meanwhile): those are
    returned, in order, to be judged. No SAVEPOINT: a skipped row is no error."""
    documents = [_document_row(bills[i], 1, now) for i in indexes]
    event = _first_event(None, actor, now)
    statement = _documents_with_events_pg(documents, [event], skip_conflicts=True)
    inserted = {
        (tenant, seller, bill_no): document_id
        for document_id, tenant, seller, bill_no in session.execute(
            statement,
            {
                "documents": _json_rows(_documents, documents, session),
                # Every new bill's first event is the same `submit`: sent once.
                "event_of": [1] * len(documents),
                "events": _json_rows(_events, [event], session),
            },
        )
    }
    refused: list[int] = []
    for i in indexes:
        document_id = inserted.get(_key_of(bills[i]))
        if document_id is None:
            refused.append(i)
        else:
            results[i] = Acceptance(document_id, AcceptanceOutcome.created, _DRAFT, 1)
    return refused


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert `document_events` rows (built by `event_row`), ids in the order of `rows`."""
    if not _is_postgres(session):
        session.execute(insert(_events), rows)
        return
    names = ", ".join(rows[0])
    statement = _statement_pg(
        f"INSERT INTO document_events ({names}) SELECT {names}"
        " FROM jsonb_populate_recordset(NULL::document_events, CAST(:rows AS JSONB))"
        " WITH ORDINALITY AS r ORDER BY r.ordinality"
    )
    session.execute(statement, {"rows": _json_rows(_events, rows, session)})


def _insert_with_events_pg(
    session: Session, documents: list[dict[str, Any]], events: list[dict[str, Any]]
) -> list[int]:
    """PostgreSQL: the documents and their first events in ONE statement, the rows as two JSON
    parameters. The n-th event belongs to the n-th document: ids are drawn in batch order,
    which the returned identities prove (else nothing is kept)."""
    statement = _documents_with_events_pg(documents, events, skip_conflicts=False)
    # A batch's first events are mostly alike (every new bill's is `submit`): each distinct
    # one is sent once, and `event_of[n]` numbers the n-th document's.
    distinct: list[dict[str, Any]] = []
    numbers: dict[tuple[Any, ...], int] = {}
    event_of: list[int] = []
    for event in events:
        shape = tuple(event.values())
        if shape not in numbers:
            distinct.append(event)
            numbers[shape] = len(distinct)
        event_of.append(numbers[shape])
    keys = [(row["tenant"], row["seller_tax_id"], row["bill_no"]) for row in documents]
    inserted = session.execute(
        statement,
        {
            "documents": _json_rows(_documents, documents, session),
            "event_of": event_of,
            "events": _json_rows(_events, distinct, session),
        },
    ).all()
    if [(tenant, seller, bill_no) for _, tenant, seller, bill_no in inserted] != keys:
        raise RuntimeError("documents were not numbered in batch order; nothing was kept")
    return [row[0] for row in inserted]


def _documents_with_events_pg(
    documents: list[dict[str, Any]], events: list[dict[str, Any]], *, skip_conflicts: bool
) -> TextClause:
    """The one PostgreSQL statement that inserts documents (`:documents`, a JSON array) with
    their first events: the k-th document inserted gets event number `:event_of[k]` of the
    distinct events `:events`. `skip_conflicts`: rows the unique indexes refuse are skipped
    (ON CONFLICT DO NOTHING) instead of failing the statement; the ranks then count the
    inserted rows only, so every `:event_of` entry must be the same event."""
    names = ", ".join(documents[0])
    event_names = [name for name in events[0] if name != "document_id"]
    on_conflict = "\n    ON CONFLICT DO NOTHING" if skip_conflicts else ""
    return _statement_pg(
        f"""
WITH new AS (
    INSERT INTO documents ({names}) SELECT {names}
    FROM jsonb_populate_recordset(NULL::documents, CAST(:documents AS JSONB))
         WITH ORDINALITY AS r
    ORDER BY r.ordinality{on_conflict}
    RETURNING id, tenant, seller_tax_id, bill_no
), first_events AS (
    INSERT INTO document_events (document_id, {", ".join(event_names)})
    SELECT n.id, {", ".join(f"e.{name}" for name in event_names)}
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rank FROM new) AS n
    JOIN unnest(CAST(:event_of AS INTEGER[])) WITH ORDINALITY AS k(shape, rank) USING (rank)
    JOIN jsonb_populate_recordset(NULL::document_events, CAST(:events AS JSONB))
         WITH ORDINALITY AS e ON e.ordinality = k.shape
    ORDER BY n.id
)
SELECT id, tenant, seller_tax_id, bill_no FROM new ORDER BY id
"""
    )


@functools.cache
def _statement_pg(sql: str) -> TextClause:
    """One TextClause per text: its text never depends on the batch size (psycopg prepares
    it once per connection), and SQLAlchemy compiles it once."""
    return text(sql)


def _json_rows(table: Table, rows: Sequence[dict[str, Any]], session: Session) -> str:
    """`rows` as ONE JSON array, each value first bound as its column binds it (the same
    refusals as the ORM columns). The rows are the builders' fresh dicts: bound in place."""
    dialect = session.get_bind().dialect
    for name in rows[0]:
        kind = table.c[name].type
        if isinstance(kind, TypeDecorator):
            bind = _json_binder(kind, dialect)
            for row in rows:
                row[name] = bind(row[name])
    return json.dumps(rows)


def _json_binder(kind: TypeDecorator[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The column type's bind step, then JSON text for a Decimal or a time. A batch repeats
    its times and amounts, so each distinct scalar (by type and value) is bound once."""
    process = kind.process_bind_param
    if isinstance(kind, JSONValue):
        return lambda value: process(value, dialect)
    done: dict[tuple[type, Any], Any] = {}
    last: list[Any] = [object(), None]  # the last value and its bound form (`now` repeats)

    def bind(value: Any) -> Any:
        if value is last[0]:
            return last[1]
        key = (type(value), value)
        if key in done:
            bound = done[key]
        else:
            bound = process(value, dialect)
            if isinstance(bound, datetime):
                bound = bound.isoformat()
            elif isinstance(bound, Decimal):
                bound = str(bound)  # PostgreSQL reads a JSON string into numeric exactly
            done[key] = bound
        last[:] = value, bound
        return bound

    return bind


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
