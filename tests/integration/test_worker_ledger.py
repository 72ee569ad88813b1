"""``SqlCallLedger``: the push row is committed before the call and completed in place."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.models import CloudCall, Document
from worker.kingdee import PENDING_OUTCOME, CallContext
from worker.ledger import SqlCallLedger


def _rows(session_factory: sessionmaker[Session]) -> list[CloudCall]:
    with session_factory() as session:
        return list(session.scalars(select(CloudCall).order_by(CloudCall.id)))


def test_begin_commits_a_pending_row_that_finish_completes_in_place_masked(
    session_factory: sessionmaker[Session], make_document: Callable[..., Document]
) -> None:
    document = make_document()
    ledger = SqlCallLedger(session_factory)
    context = CallContext(document_id=document.id, attempt=1)
    entry = ledger.begin(tenant="demo", interface="BILL.PUSH", request_id="r-1", context=context)

    # Visible to another session before the request leaves: the crash evidence.
    (pending,) = _rows(session_factory)
    assert pending.id == entry
    assert pending.outcome == PENDING_OUTCOME
    assert (pending.document_id, pending.attempt, pending.request_id) == (document.id, 1, "r-1")

    ledger.finish(
        entry,
        tenant="demo",
        interface="BILL.PUSH",
        request_id="r-1",
        context=context,
        outcome="accepted",
        http_status=200,
        error_code="access_token=abc123",
        message="echo ?access_token=abc123&x=1 " + "y" * 5000,
        latency_ms=21,
    )
    (done,) = _rows(session_factory)  # completed, not a second row
    assert done.id == entry
    assert (done.outcome, done.http_status, done.latency_ms) == ("accepted", 200, 21)
    assert done.error_code is not None and "abc123" not in done.error_code
    assert done.message is not None and "abc123" not in done.message
    assert "access_token=***" in done.message
    assert len(done.message) < 5000  # cut to the ledger's limit


def test_finish_without_or_with_a_vanished_entry_writes_one_row(
    session_factory: sessionmaker[Session],
) -> None:
    ledger = SqlCallLedger(session_factory)
    context = CallContext(document_id=None, attempt=None)
    for entry in (None, 987654):
        ledger.finish(
            entry,
            tenant="demo",
            interface="BILL.INVOICE.QUERY",
            request_id=f"q-{entry}",
            context=context,
            outcome="ok",
            http_status=200,
            error_code="token=abc123",
            message="Bearer tok.en",
            latency_ms=5,
        )
    rows = _rows(session_factory)
    assert [r.request_id for r in rows] == ["q-None", "q-987654"]
    assert all(r.outcome == "ok" and r.message == "Bearer ***" for r in rows)
    assert all(r.error_code == "token=***" for r in rows)
    assert 987654 not in {r.id for r in rows}


def test_one_ledger_serves_many_threads_at_once(
    session_factory: sessionmaker[Session], make_document: Callable[..., Document]
) -> None:
    """Pushes may be sent from a thread pool: each thread's row is its own, completed once."""
    document = make_document()
    ledger = SqlCallLedger(session_factory)
    threads, calls = 8, 5
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def push_calls(worker: int) -> None:
        try:
            barrier.wait()
            for n in range(calls):
                request_id = f"t{worker}-{n}"
                context = CallContext(document_id=document.id, attempt=worker + 1)
                entry = ledger.begin(
                    tenant="demo", interface="BILL.PUSH", request_id=request_id, context=context
                )
                ledger.finish(
                    entry,
                    tenant="demo",
                    interface="BILL.PUSH",
                    request_id=request_id,
                    context=context,
                    outcome="accepted",
                    http_status=200,
                    error_code=None,
                    message=f"done {request_id}",
                    latency_ms=worker,
                )
        except BaseException as error:
            errors.append(error)

    pool = [threading.Thread(target=push_calls, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert errors == []
    rows = _rows(session_factory)
    assert len(rows) == threads * calls  # one row per call: begin's row was completed in place
    for row in rows:
        assert row.outcome == "accepted" and row.message == f"done {row.request_id}"
        assert (
            row.request_id is not None and row.attempt == int(row.request_id[1:].split("-")[0]) + 1
        )
