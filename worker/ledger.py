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

Thread safety: a ``SqlCallLedger`` holds no mutable state; every write checks a connection
out of the engine's pool for its own transaction, so one ledger may be used by many threads
at once (``HttpKingdeeClient.push`` called concurrently from a thread pool).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, insert, update
from sqlalchemy.orm import Session, sessionmaker

from store.columns import utcnow
from store.db import single_statements
from store.ledger import MESSAGE_LIMIT, mask_secrets
from store.models import CloudCall
from worker.kingdee import PENDING_OUTCOME, CallContext

__all__ = ["SqlCallLedger"]


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


class SqlCallLedger:
    """Writes ``cloud_calls`` rows (module docstring); safe to share between threads."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        bind = session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("SqlCallLedger needs a session factory bound to an Engine")
        self._engine = bind

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
                    {
                        "entry": entry,
                        "outcome": outcome,
                        "http_status": http_status,
                        "error_code": None if error_code is None else mask_secrets(error_code),
                        "message": None if message is None else _masked(message),
                        "latency_ms": latency_ms,
                    },
                )
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


def _insert(connection: Connection, **values: Any) -> int:
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
