"""``CallLedger`` on the database: every call to Kingdee becomes one ``cloud_calls`` row.

| call      | when the row is written                                                  |
|-----------|--------------------------------------------------------------------------|
| BILL.PUSH | ``begin``: committed BEFORE the request with outcome ``pending``;        |
|           | ``finish``: the same row completed (status, errorCode, outcome, latency) |
| others    | ``finish`` alone: one row committed after the answer                     |

A ``pending`` row that never got finished is the evidence of a worker that died mid-call
(the sweeper's ``in_doubt`` decision can be checked against it). Ledger writes run in their
own short transactions so they survive whatever the caller's unit of work does next.
Masking of tokens and secrets: ``store.ledger.mask_secrets`` on every message and errorCode
written (rows are written with Core statements, not through the ORM).

Cost: each write is one Core statement on a pooled connection of the session factory's
engine (``INSERT … RETURNING id`` for ``begin``; one ``UPDATE``, or one ``INSERT`` when there
is no row to complete, for ``finish``), no ORM session or unit of work. On PostgreSQL the
connection is in autocommit (``store.db.single_statements``): the statement is its own
transaction, durably committed when it returns — one round trip instead of BEGIN, statement,
COMMIT. So the push row still exists before the request leaves.

A batch of pushes (``worker.services.push``) writes its rows together: ``prewrite_pushes``
inserts every ``pending`` BILL.PUSH row of the batch in ONE statement inside the claim's
transaction (so each row is committed before its request leaves, with the ``requestId``
that request will carry), and a ``PushBatchLedger`` hands those rows to the calls and keeps
their completions until ``flush`` writes them in one transaction (one executemany of the
completing ``UPDATE``); rows of calls that were never made (no token, the claim's time ran
out) are deleted there, so the ledger reads as if each call had written its own. A call
that raised after taking its row leaves it ``pending``, as a crash mid-call does.

A call whose row is written after its answer (a query) can have that row written in the
transaction the answer leads to (``HeldCallLedger``): one commit instead of two. The row is
held in memory between the answer and that transaction (milliseconds, no cloud call in
between); if the transaction rolls back, or none follows, ``flush`` writes it on its own,
so only a process dying in that moment loses it — as one dying while the call is in flight.

Thread safety: a ``SqlCallLedger`` holds no mutable state; every write checks a connection
out of the engine's pool for its own transaction, so one ledger may be used by many threads
at once (``HttpKingdeeClient.push`` called concurrently from a thread pool).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, event, insert, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.kingdee import InterfaceCode, new_request_id
from store.columns import utcnow
from store.db import single_statements
from store.ledger import MESSAGE_LIMIT, mask_secrets
from store.models import CloudCall
from worker.kingdee import PENDING_OUTCOME, CallContext

__all__ = [
    "HeldCallLedger",
    "PrewrittenPush",
    "PushBatchLedger",
    "SqlCallLedger",
    "prewrite_pushes",
]


_calls = cast("Table", CloudCall.__table__)
_INSERT = insert(_calls).returning(_calls.c.id)
_COMPLETE = (
    update(_calls)
    .where(_calls.c.id == bindparam("entry"))
    .values(
        outcome=bindparam("outcome"),
        http_status=bindparam("http_status"),
        error_code=bindparam("error_code"),
        message=bindparam("message"),
        latency_ms=bindparam("latency_ms"),
    )
)


_DELETE_UNUSED = delete(_calls).where(
    _calls.c.id.in_(bindparam("entries", expanding=True)),
    _calls.c.outcome == PENDING_OUTCOME,
)


def _completion(
    entry: int,
    *,
    outcome: str,
    http_status: int | None,
    error_code: str | None,
    message: str | None,
    latency_ms: int,
) -> dict[str, Any]:
    """``_COMPLETE``'s parameters, masked: the ORM's on-assignment masking is not involved."""
    return {
        "entry": entry,
        "outcome": outcome,
        "http_status": http_status,
        "error_code": None if error_code is None else mask_secrets(error_code),
        "message": None if message is None else _masked(message),
        "latency_ms": latency_ms,
    }


class SqlCallLedger:
    """Writes ``cloud_calls`` rows (module docstring); safe to share between threads."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        bind = session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("SqlCallLedger needs a session factory bound to an Engine")
        self._engine = bind

    @property
    def engine(self) -> Engine:
        return self._engine

    def begin(
        self,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
    ) -> int | None:
        with single_statements(self._engine) as connection:
            return _insert(
                connection,
                tenant=tenant,
                interface=interface,
                outcome=PENDING_OUTCOME,
                document_id=context.document_id,
                request_id=request_id,
                attempt=context.attempt,
            )

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None:
        with single_statements(self._engine) as connection:
            if entry is not None:
                # One UPDATE instead of loading the row first; masked here because the
                # ORM's on-assignment masking does not see a Core statement.
                completed = connection.execute(
                    _COMPLETE,
                    _completion(
                        entry, outcome=outcome, http_status=http_status, error_code=error_code,
                        message=message, latency_ms=latency_ms,
                    ),
                )  # fmt: skip
                if completed.rowcount == 1:
                    return
            _insert(
                connection,
                tenant=tenant,
                interface=interface,
                outcome=outcome,
                document_id=context.document_id,
                request_id=request_id,
                attempt=context.attempt,
                http_status=http_status,
                error_code=error_code,
                message=message,
                latency_ms=latency_ms,
            )


def _masked(message: str) -> str:
    return mask_secrets(message)[:MESSAGE_LIMIT]


def _insert(connection: Connection | Session, **values: Any) -> int:
    """One ``cloud_calls`` row by a Core ``INSERT … RETURNING id`` (no ORM flush), masked as
    ``store.ledger.record_cloud_call`` masks: the ORM's on-assignment masking is not involved."""
    message, code = values.get("message"), values.get("error_code")
    if message is not None:
        values["message"] = _masked(message)
    if code is not None:
        values["error_code"] = mask_secrets(code)
    values.setdefault("created_at", utcnow())
    # Values as parameters (not ``.values()``): the compiled statement comes from the cache.
    entry: int = connection.execute(_INSERT, values).scalar_one()
    return entry


@dataclass(frozen=True, slots=True)
class PrewrittenPush:
    """A ``pending`` BILL.PUSH row written before its call, and the requestId it is for."""

    document_id: int
    entry: int
    request_id: str


def prewrite_pushes(
    session: Session, calls: Sequence[tuple[str, int, int]]
) -> dict[int, PrewrittenPush]:
    """One ``INSERT … RETURNING`` of a ``pending`` BILL.PUSH row per ``(tenant, document_id,
    attempt)``, each with a fresh requestId (distinct within the batch), in the caller's
    transaction; document id → its row."""
    if not calls:
        return {}
    now = utcnow()
    request_ids: set[str] = set()
    rows: list[dict[str, Any]] = []
    for tenant, document_id, attempt in calls:
        request_id = new_request_id()
        while request_id in request_ids:  # 3 random digits a millisecond: 20 may collide
            request_id = new_request_id()
        request_ids.add(request_id)
        rows.append(
            {
                "tenant": tenant,
                "interface": InterfaceCode.BILL_PUSH.value,
                "outcome": PENDING_OUTCOME,
                "document_id": document_id,
                "request_id": request_id,
                "attempt": attempt,
                "created_at": now,
            }
        )
    returned = session.execute(
        insert(_calls).returning(_calls.c.id, _calls.c.request_id), rows
    ).all()
    by_request = {row.request_id: int(row.id) for row in returned}
    return {
        row["document_id"]: PrewrittenPush(
            row["document_id"], by_request[row["request_id"]], row["request_id"]
        )
        for row in rows
    }


class PushBatchLedger:
    """The ``CallLedger`` of one push batch (module docstring): the prewritten rows for the
    calls, completions kept until ``flush``; any other call (the one-refresh retry with a new
    requestId) goes to ``ledger`` as usual. Safe to share between the batch's threads."""

    def __init__(self, ledger: SqlCallLedger, prewritten: Sequence[PrewrittenPush]) -> None:
        self._ledger = ledger
        self._by_request = {p.request_id: p.entry for p in prewritten}
        self._entries = set(self._by_request.values())
        self._taken: set[int] = set()
        self._completions: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def begin(
        self,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
    ) -> int | None:
        entry = self._by_request.get(request_id) if request_id is not None else None
        if entry is not None:
            with self._lock:
                if entry not in self._taken:
                    self._taken.add(entry)
                    return entry
        return self._ledger.begin(
            tenant=tenant, interface=interface, request_id=request_id, context=context
        )

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None:
        if entry is not None and entry in self._entries:
            completion = _completion(
                entry, outcome=outcome, http_status=http_status, error_code=error_code,
                message=message, latency_ms=latency_ms,
            )  # fmt: skip
            with self._lock:
                self._completions.append(completion)
            return
        self._ledger.finish(
            entry, tenant=tenant, interface=interface, request_id=request_id,
            context=context, outcome=outcome, http_status=http_status,
            error_code=error_code, message=message, latency_ms=latency_ms,
        )  # fmt: skip

    def flush(self) -> None:
        """Write the kept completions (one executemany) and delete the rows no call took, in
        one transaction. Call it once, after every call of the batch returned."""
        with self._lock:
            completions, self._completions = self._completions, []
            unused = sorted(self._entries - self._taken)
            self._entries.difference_update(unused)
        if not completions and not unused:
            return
        if len(completions) == 1 and not unused:
            # A lone push (fapiao.push): one statement needs no BEGIN/COMMIT round trips.
            with single_statements(self._ledger.engine) as connection:
                connection.execute(_COMPLETE, completions[0])
            return
        with self._ledger.engine.begin() as connection:
            if completions:
                connection.execute(_COMPLETE, completions)
            if unused:
                connection.execute(_DELETE_UNUSED, {"entries": unused})


class HeldCallLedger:
    """A ``CallLedger`` that holds the rows of calls recorded after their answer until the
    caller's transaction writes them (``write``), else writes them alone (``flush``); rows
    written before a call (pushes) go to ``ledger`` at once (module docstring). One caller,
    one thread."""

    def __init__(self, ledger: SqlCallLedger) -> None:
        self._ledger = ledger
        self._held: list[dict[str, Any]] = []

    def begin(
        self,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
    ) -> int | None:
        return self._ledger.begin(
            tenant=tenant, interface=interface, request_id=request_id, context=context
        )

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None:
        if entry is not None:  # a row written before the call: complete it now
            self._ledger.finish(
                entry, tenant=tenant, interface=interface, request_id=request_id,
                context=context, outcome=outcome, http_status=http_status,
                error_code=error_code, message=message, latency_ms=latency_ms,
            )  # fmt: skip
            return
        self._held.append(
            {
                "tenant": tenant,
                "interface": interface,
                "outcome": outcome,
                "document_id": context.document_id,
                "request_id": request_id,
                "attempt": context.attempt,
                "http_status": http_status,
                "error_code": error_code,
                "message": message,
                "latency_ms": latency_ms,
                "created_at": utcnow(),
            }
        )

    def write(self, session: Session) -> None:
        """Insert the held rows in ``session``'s transaction; they stop being held once it
        commits (a rollback leaves them for ``flush``)."""
        if not self._held:
            return
        rows = list(self._held)
        for values in rows:
            _insert(session, **values)

        written = {id(row) for row in rows}

        def committed(_session: Session) -> None:
            self._held = [row for row in self._held if id(row) not in written]

        event.listen(session, "after_commit", committed, once=True)

    def flush(self) -> None:
        """Write every row still held, each on its own (autocommit on PostgreSQL)."""
        rows, self._held = self._held, []
        if not rows:
            return
        with single_statements(self._ledger.engine) as connection:
            for values in rows:
                _insert(connection, **values)
