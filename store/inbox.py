"""The callback inbox: store the raw body before acknowledging, deduplicated.

| state       | meaning                                                   | set by            |
|-------------|-----------------------------------------------------------|-------------------|
| `received`  | stored and acknowledged; reconciliation owed              | `receive_callback`|
| `processed` | applied to its document (or recognised as a duplicate)    | `settle_callback` |
| `orphan`    | no document matches (yet); kept for an operator / a query | `settle_callback` |
| `failed`    | could not be applied after the reconciler's attempts      | `settle_callback` |

`receive_callback` is one `INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`: a redelivered
callback returns the stored row with `duplicate=True` and is still acknowledged. Nothing
here commits: the receiver commits, THEN acknowledges, THEN enqueues `fapiao.reconcile`.

`bills` (the callback's `(billNo, seller tax id or None)` pairs) links the new row to its
document in that same INSERT: a scalar subquery picks the current document with one of those
bills when exactly one matches (`document_id` NULL for none or several; the reconciler links
or orphans those). No SELECT, no UPDATE after it: one round trip.

| call                                   | statements (a new row)          | a duplicate        |
|----------------------------------------|---------------------------------|--------------------|
| `receive_callback(...)`                | INSERT ... RETURNING id         | + SELECT its id    |
| `receive_callback(..., bills=[...])`   | INSERT (... subquery) RETURNING | + SELECT its id    |

The statements are built once per dialect and shape (how many bills, which with a seller)
and executed with parameters: building and cache-keying an INSERT costs more CPU than
PostgreSQL spends running it. `settle_callback`'s UPDATE is prebuilt too (the ORM UPDATE, built
per call, only when the row is loaded in the session: it also updates the loaded object).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from store.columns import utcnow
from store.models import CallbackInbox, Document
from store.states import DocumentStatus, InboxState

__all__ = ["Received", "defer_polls_of_waiting", "receive_callback", "settle_callback"]

_INBOX: Final = cast("Table", CallbackInbox.__table__)
_DOCUMENTS: Final = cast("Table", Document.__table__)
# A callback names one bill (per bill, per invoice, 回退); more only when a sender mixes them.
_MAX_CACHED_SHAPES: Final = 64


@dataclass(frozen=True, slots=True)
class Received:
    inbox_id: int
    duplicate: bool
    # The one current document of ``bills`` the new row is linked to (None: none, several,
    # no bills given, or a duplicate).
    document_id: int | None = None


Shape = tuple[bool, ...]  # per bill: is a seller tax id given?


def _document_of(shape: Shape) -> ColumnElement[Any]:
    """The id of the one current document with one of the bills, else NULL (a subquery)."""
    matches = []
    for index, with_seller in enumerate(shape):
        match = _DOCUMENTS.c.bill_no == bindparam(f"bill_{index}", type_=_DOCUMENTS.c.bill_no.type)
        if with_seller:
            seller = bindparam(f"seller_{index}", type_=_DOCUMENTS.c.seller_tax_id.type)
            match = and_(match, _DOCUMENTS.c.seller_tax_id == seller)
        matches.append(match)
    return (
        select(case((func.count(_DOCUMENTS.c.id) == 1, func.max(_DOCUMENTS.c.id))))
        .where(_DOCUMENTS.c.is_current.is_(True), or_(*matches))
        .scalar_subquery()
    )


_statements: dict[tuple[str, Shape | None], Any] = {}
_statements_lock = threading.Lock()


def _insert_statement(dialect: str, shape: Shape | None) -> Any:
    key = (dialect, shape)
    statement = _statements.get(key)
    if statement is not None:
        return statement
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    columns = ("dedupe_key", "raw_body", "remote_addr", "style", "state", "received_at")
    values: dict[str, Any] = {name: bindparam(name, type_=_INBOX.c[name].type) for name in columns}
    values["attempts"] = 0
    if shape is not None:
        values["document_id"] = _document_of(shape)
    statement = (
        insert(_INBOX)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[_INBOX.c.dedupe_key])
        .returning(_INBOX.c.id, _INBOX.c.document_id)
    )
    with _statements_lock:
        if len(_statements) >= _MAX_CACHED_SHAPES:
            _statements.clear()
        _statements[key] = statement
    return statement


_EXISTING: Final = select(_INBOX.c.id).where(
    _INBOX.c.dedupe_key == bindparam("dedupe_key", type_=_INBOX.c.dedupe_key.type)
)


def receive_callback(
    session: Session,
    *,
    dedupe_key: str,
    raw_body: bytes,
    remote_addr: str | None = None,
    style: str | None = None,
    now: datetime | None = None,
    bills: Iterable[tuple[str, str | None]] | None = None,
) -> Received:
    """Store one callback body unless its `dedupe_key` is already stored. Does not commit.

    With ``bills``, the new row's ``document_id`` is the one current document having one of
    those ``(bill_no, seller_tax_id or None)`` (module docstring), in the same INSERT.
    """
    params: dict[str, Any] = {
        "dedupe_key": dedupe_key,
        "raw_body": raw_body,
        "remote_addr": remote_addr,
        "style": style,
        "state": InboxState.received.value,
        "received_at": now or utcnow(),
    }
    shape: Shape | None = None
    if bills is not None:
        pairs = sorted(bills, key=lambda pair: (pair[0], pair[1] or ""))
        if pairs:
            shape = tuple(bool(seller) for _, seller in pairs)
            for index, (bill_no, seller) in enumerate(pairs):
                params[f"bill_{index}"] = bill_no
                if seller:
                    params[f"seller_{index}"] = seller
    statement = _insert_statement(session.get_bind().dialect.name, shape)
    inserted = session.execute(statement, params).first()
    if inserted is not None:
        document_id = inserted[1]
        return Received(
            int(inserted[0]),
            duplicate=False,
            document_id=int(document_id) if document_id is not None else None,
        )
    existing = session.scalar(_EXISTING, {"dedupe_key": dedupe_key})
    if existing is None:  # only if the twin's transaction rolled back meanwhile
        raise RuntimeError(f"callback {dedupe_key!r} neither stored nor found; retry")
    return Received(int(existing), duplicate=True)


def _settle_statement(*, linked: bool) -> Any:
    columns = ("state", "processed_at", "error", *(("document_id",) if linked else ()))
    return (
        update(_INBOX)
        .where(_INBOX.c.id == bindparam("inbox_id", type_=_INBOX.c.id.type))
        .values({name: bindparam(name, type_=_INBOX.c[name].type) for name in columns})
    )


# Built once: every reconciled callback settles its row.
_SETTLE: Final = _settle_statement(linked=False)
_SETTLE_LINKED: Final = _settle_statement(linked=True)


def settle_callback(
    session: Session,
    inbox_id: int,
    state: InboxState | str,
    *,
    document_id: int | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record how a stored callback ended (`processed`, `orphan`, `failed`). Does not commit."""
    state = InboxState(state)
    if state is InboxState.received:
        raise ValueError("a callback is settled as processed, orphan or failed")
    values: dict[str, Any] = {"state": state.value, "processed_at": now or utcnow(), "error": error}
    if document_id is not None:
        values["document_id"] = document_id
    # One UPDATE (no SELECT first).
    if session.identity_map.get(identity_key(CallbackInbox, inbox_id)) is not None:
        # The row is loaded in this session: the ORM UPDATE also updates the loaded object.
        settled = session.execute(
            update(CallbackInbox).where(CallbackInbox.id == inbox_id).values(**values)
        )
    else:
        # Prebuilt; pending changes flushed first, as the ORM UPDATE's autoflush would.
        if session.autoflush:
            session.flush()
        statement = _SETTLE if document_id is None else _SETTLE_LINKED
        settled = session.execute(statement, {"inbox_id": inbox_id, **values})
    if settled.rowcount != 1:  # type: ignore[attr-defined]
        raise LookupError(f"callback inbox row #{inbox_id} does not exist")


_LATER: Final = bindparam("later", type_=_DOCUMENTS.c.next_poll_at.type)
# Built once: the pushed documents among ``ids`` with a stored callback not reconciled yet
# get their next poll at ``later`` at the earliest.
_DEFER_POLLS_OF_WAITING: Final = (
    update(_DOCUMENTS)
    .where(
        _DOCUMENTS.c.id.in_(bindparam("ids", expanding=True)),
        _DOCUMENTS.c.status == DocumentStatus.pushed.value,
        or_(_DOCUMENTS.c.next_poll_at.is_(None), _DOCUMENTS.c.next_poll_at < _LATER),
        exists().where(
            _INBOX.c.document_id == _DOCUMENTS.c.id,
            _INBOX.c.state == InboxState.received.value,
        ),
    )
    .values(next_poll_at=_LATER)
    .returning(_DOCUMENTS.c.id)
)


def defer_polls_of_waiting(
    session: Session, document_ids: Iterable[int], later: datetime
) -> set[int]:
    """Move the next poll of every ``pushed`` one of ``document_ids`` that has a stored,
    not yet reconciled callback to ``later`` at the earliest (one UPDATE). Does not commit.

    The push apply calls it AFTER writing ``pushed`` in the same transaction: a callback
    stored before that write is seen here (each statement reads what is committed when it
    starts), one stored after it finds the document ``pushed`` and the receiver defers the
    poll itself (``producers.callbacks``); a receiver that touched the row first holds its
    lock until it commits. Either way the callback's reconcile asks the cloud and the
    poll stays the safety net, ``later`` away.
    """
    ids = sorted(set(document_ids))
    if not ids:
        return set()
    rows = session.execute(_DEFER_POLLS_OF_WAITING, {"ids": ids, "later": later})
    return {int(row[0]) for row in rows}
