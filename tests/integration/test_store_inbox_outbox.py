"""The callback inbox (stored once, deduplicated) and the ERP outbox (delivered or parked)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.inbox import receive_callback, settle_callback
from store.models import CallbackInbox, Document, ErpOutbox
from store.outbox import add_notification, mark_attempt_failed, mark_delivered
from store.queries import due_outbox

MakeDocument = Callable[..., Document]
NOW = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def test_a_redelivered_callback_is_stored_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        first = receive_callback(
            session, dedupe_key="SO-1|243320001", raw_body=b'{"data":"e30="}', style="per_invoice"
        )
        session.commit()
    with session_factory() as session:
        again = receive_callback(session, dedupe_key="SO-1|243320001", raw_body=b"other")
        session.commit()
        stored = session.get(CallbackInbox, first.inbox_id)
        assert stored is not None and stored.raw_body == b'{"data":"e30="}'
        assert stored.state == "received"
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.inbox_id == first.inbox_id


def test_concurrent_deliveries_store_one_row(session_factory: sessionmaker[Session]) -> None:
    barrier = threading.Barrier(4)
    results: list[object] = []

    def deliver() -> None:
        barrier.wait()
        try:
            with session_factory() as session:
                received = receive_callback(session, dedupe_key="k", raw_body=b"{}")
                session.commit()
                results.append(received.duplicate)
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(map(str, results)) == ["False", "True", "True", "True"], results
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(CallbackInbox)) == 1


def test_settling_a_callback(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoiced")
    with session_factory() as session:
        inbox_id = receive_callback(session, dedupe_key="a", raw_body=b"{}").inbox_id
        settle_callback(session, inbox_id, "processed", document_id=document.id, now=NOW)
        with pytest.raises(ValueError):
            settle_callback(session, inbox_id, "received")
        session.commit()
        row = session.get(CallbackInbox, inbox_id)
        assert row is not None
        assert (row.state, row.document_id, row.processed_at) == ("processed", document.id, NOW)


def test_settling_a_loaded_callback_row_updates_it_in_place(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        inbox_id = receive_callback(session, dedupe_key="b", raw_body=b"{}").inbox_id
        other = receive_callback(session, dedupe_key="c", raw_body=b"{}").inbox_id
        session.commit()
        loaded = session.get(CallbackInbox, inbox_id)
        assert loaded is not None and loaded.state == "received"
        settle_callback(session, inbox_id, "orphan", error="no document", now=NOW)
        # Without a refresh: the loaded object shows the settled row.
        assert (loaded.state, loaded.error, loaded.processed_at) == ("orphan", "no document", NOW)
        settle_callback(session, other, "failed", error="unusable", now=NOW)
        with pytest.raises(LookupError):
            settle_callback(session, 10**9, "failed", now=NOW)
        session.commit()
        row = session.get(CallbackInbox, other)
        assert row is not None
        assert (row.state, row.document_id, row.error) == ("failed", None, "unusable")


def test_outbox_delivery_retry_and_parking(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoiced")
    with session_factory() as session:
        row = add_notification(
            session, document_id=document.id, event="invoiced", payload={"billNo": "X"}, now=NOW
        )
        other = add_notification(
            session, document_id=document.id, event="pushed", payload={}, now=NOW
        )
        session.commit()
    with session_factory() as session:
        retry_at = NOW + timedelta(minutes=1)
        assert mark_attempt_failed(session, row.id, "HTTP 502", retry_at=retry_at)
        # The failed one waits for its retry time; the other is due now.
        assert [r.id for r in due_outbox(session, NOW, redeliver_after=timedelta(hours=1))] == [
            other.id
        ]
        assert [r.id for r in due_outbox(session, retry_at)] == [row.id]
        assert mark_delivered(session, row.id, now=retry_at)
        assert not mark_delivered(session, row.id)  # already delivered
        assert mark_attempt_failed(session, other.id, "HTTP 404", retry_at=None)
        assert not mark_attempt_failed(session, other.id, "again", retry_at=None)
        session.commit()
    with session_factory() as session:
        delivered = session.get(ErpOutbox, row.id)
        parked = session.get(ErpOutbox, other.id)
        assert delivered is not None and parked is not None
        assert (delivered.state, delivered.attempts, delivered.delivered_at) == (
            "delivered",
            2,
            retry_at,
        )
        assert (parked.state, parked.attempts, parked.last_error) == ("parked", 1, "HTTP 404")
