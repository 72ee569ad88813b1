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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store.columns import utcnow
from store.models import CallbackInbox
from store.states import InboxState

__all__ = ["Received", "receive_callback", "settle_callback"]


@dataclass(frozen=True, slots=True)
class Received:
    inbox_id: int
    duplicate: bool


def receive_callback(
    session: Session,
    *,
    dedupe_key: str,
    raw_body: bytes,
    remote_addr: str | None = None,
    style: str | None = None,
    now: datetime | None = None,
) -> Received:
    """Store one callback body unless its `dedupe_key` is already stored. Does not commit."""
    now = now or utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    inserted = session.execute(
        insert(CallbackInbox)
        .values(
            dedupe_key=dedupe_key,
            raw_body=raw_body,
            remote_addr=remote_addr,
            style=style,
            state=InboxState.received.value,
            received_at=now,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=[CallbackInbox.dedupe_key])
        .returning(CallbackInbox.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return Received(int(inserted), duplicate=False)
    existing = session.scalar(
        select(CallbackInbox.id).where(CallbackInbox.dedupe_key == dedupe_key)
    )
    if existing is None:  # only if the twin's transaction rolled back meanwhile
        raise RuntimeError(f"callback {dedupe_key!r} neither stored nor found; retry")
    return Received(int(existing), duplicate=True)


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
    # One UPDATE (no SELECT first); rows of this session's identity map are updated too.
    settled = session.execute(
        update(CallbackInbox).where(CallbackInbox.id == inbox_id).values(**values)
    )
    if settled.rowcount != 1:  # type: ignore[attr-defined]
        raise LookupError(f"callback inbox row #{inbox_id} does not exist")
