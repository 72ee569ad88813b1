"""accept_documents() with batches: the rows it writes, on both databases.

| case                                    | what is checked                                      |
|-----------------------------------------|------------------------------------------------------|
| a first and a later revision            | every column and the first event, from one builder   |
| awkward text (quotes, braces, NULL, 中文) | tenant, bill_no, hash and payload come back intact   |
| a large mixed batch (1,200 bills)        | new, unchanged, changed and repeated settled apart,  |
|                                         | ids drawn in batch order, events in id order         |
| revisions and conflicts in one batch     | the results of judging the bills one by one          |
| money with 3 decimals, floats, naive now | refused as the ORM columns refuse them, nothing kept |
| PostgreSQL: batches of other sizes       | one statement text each: psycopg prepares it         |
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from store.acceptance import Acceptance, AcceptanceOutcome, BillToAccept, accept_documents
from store.claims import claim_for_push
from store.lifecycle import RevisionConflict, transition
from store.models import Document, DocumentEvent
from store.states import Event

NOW = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
AWKWARD = 'a "quoted" \\ back, {brace} NULL\n中文 ¥'


def bill(bill_no: str, content: str = "v1", **overrides: Any) -> BillToAccept:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "seller_tax_id": "91330100MA27XXXX0X",
        "bill_no": bill_no,
        "payload": {"billNo": bill_no, "remark": content, "totalAmount": "113.00"},
        "content_hash": f"sha-{bill_no}-{content}",
        "total_amount": Decimal("100.00"),
        "total_incl_tax": Decimal("113.00"),
        "total_tax": Decimal("13.00"),
        "invoice_type": "10xdp",
    }
    fields.update(overrides)
    return BillToAccept(**fields)


def _columns(document: Document) -> dict[str, Any]:
    skip = {"id", "bill_no", "content_hash", "payload"}
    return {
        c.name: getattr(document, c.name) for c in Document.__table__.columns if c.name not in skip
    }


def _settled(results: list[Acceptance | RevisionConflict]) -> list[tuple[str, str, int]]:
    return [
        ("conflict", r.status.value, r.revision)
        if isinstance(r, RevisionConflict)
        else (r.outcome.value, r.status, r.revision)
        for r in results
    ]


def _accepted(result: Acceptance | RevisionConflict) -> Acceptance:
    assert isinstance(result, Acceptance), result
    return result


@pytest.mark.parametrize("optional", [True, False], ids=["all-fields", "optional-none"])
def test_a_new_revision_starts_like_a_new_document_with_one_event_each(
    session_factory: sessionmaker[Session], optional: bool
) -> None:
    extra: dict[str, Any] = (
        {} if optional else {"total_incl_tax": None, "total_tax": None, "invoice_type": None}
    )
    with session_factory() as session:
        first = _accepted(accept_documents(session, [bill("B", **extra)], actor="erp", now=NOW)[0])
        transition(session, first.document_id, Event.withdraw, actor="ops", now=NOW)
        later = _accepted(
            accept_documents(session, [bill("B", "v2", **extra)], actor="erp", now=NOW)[0]
        )
        session.commit()
    assert (first.outcome, first.status, first.revision) == (AcceptanceOutcome.created, "draft", 1)
    assert (later.outcome, later.status, later.revision) == (
        AcceptanceOutcome.new_revision,
        "draft",
        2,
    )

    expected = {
        "tenant": "acme",
        "seller_tax_id": "91330100MA27XXXX0X",
        "revision": 2,
        "is_current": True,
        "status": "draft",
        "version": 1,
        "push_attempt": 0,
        "poll_count": 0,
        "issued_amount": Decimal("0.00"),
        "next_attempt_at": NOW,  # the sweeper finds a lost enqueue
        "next_poll_at": None,
        "lease_expires_at": None,
        "in_doubt_since": None,
        "last_error_code": None,
        "last_error_message": None,
        "created_at": NOW,
        "updated_at": NOW,
        "status_changed_at": NOW,
        "total_amount": Decimal("100.00"),
        "total_incl_tax": Decimal("113.00") if optional else None,
        "total_tax": Decimal("13.00") if optional else None,
        "invoice_type": "10xdp" if optional else None,
        "original_document_id": None,  # not a red-letter document
    }
    with session_factory() as session:
        stored = session.get(Document, later.document_id)
        assert stored is not None
        assert _columns(stored) == expected
        assert stored.payload == {"billNo": "B", "remark": "v2", "totalAmount": "113.00"}
        old = session.get(Document, first.document_id)
        assert old is not None and (old.is_current, old.status) == (False, "withdrawn")
        events = session.scalars(select(DocumentEvent).order_by(DocumentEvent.id)).all()
        shapes = [
            (e.document_id, e.from_status, e.to_status, e.event, e.outcome, e.actor, e.reason,
             e.attempt, e.created_at)
            for e in events
        ]  # fmt: skip
    assert shapes == [
        (first.document_id, None, "draft", "submit", "applied", "erp", None, None, NOW),
        (first.document_id, "draft", "withdrawn", "withdraw", "applied", "ops", None, None, NOW),
        (first.document_id, "withdrawn", "withdrawn", "resubmit", "superseded", "erp",
         "superseded by revision 2", None, NOW),
        (later.document_id, "withdrawn", "draft", "resubmit", "applied", "erp",
         f"revision 2 replaces revision 1 (document #{first.document_id}, was withdrawn)",
         None, NOW),
    ]  # fmt: skip


def test_awkward_text_survives_the_bulk_insert_unchanged(
    session_factory: sessionmaker[Session],
) -> None:
    payload = {
        "billNo": AWKWARD,
        "remark": AWKWARD,
        "nested": {"list": [AWKWARD, "NULL", "", None, 1, True, {"k": '\\"}'}]},
        "amount": Decimal("12.30"),
    }
    odd = bill(
        AWKWARD, tenant='t,"{x}"', seller_tax_id="NULL", content_hash="NULL", payload=payload
    )
    with session_factory() as session:
        created, plain = map(
            _accepted, accept_documents(session, [odd, bill("PLAIN")], actor="erp", now=NOW)
        )
        session.commit()
        assert created.document_id < plain.document_id
    with session_factory() as session:
        stored = session.get(Document, created.document_id)
        assert stored is not None
        assert (stored.tenant, stored.seller_tax_id, stored.bill_no, stored.content_hash) == (
            't,"{x}"',
            "NULL",
            AWKWARD,
            "NULL",
        )
        assert stored.payload == {**payload, "amount": "12.30"}  # Decimals stored as strings
        # The same bill again is recognised by its identity and hash.
        again = _accepted(accept_documents(session, [odd], actor="erp", now=NOW)[0])
        assert again.outcome is AcceptanceOutcome.unchanged
        assert again.document_id == created.document_id


def test_a_large_mixed_batch_is_settled_bill_by_bill_in_batch_order(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        accept_documents(session, [bill(f"OLD-{i:04d}") for i in range(400)], actor="erp", now=NOW)
        session.commit()
    batch = [
        *(bill(f"OLD-{i:04d}") for i in range(0, 400, 2)),  # 200 unchanged
        *(bill(f"OLD-{i:04d}", "v2") for i in range(1, 400, 2)),  # 200 changed: live, 409
        *(bill(f"NEW-{i:04d}") for i in range(800, 0, -1)),  # 800 new, descending numbers
        bill("TWICE"),
        bill("TWICE"),  # repeated in the batch: judged after the first copy
    ]
    with session_factory() as session:
        before = session.execute(select(Document.bill_no, Document.id)).all()
        ids_before = dict(before)
        results = accept_documents(session, batch, actor="erp", now=NOW)
        session.commit()

    settled = _settled(results)
    assert settled[:200] == [("unchanged", "draft", 1)] * 200
    assert [r.document_id for r in results[:400]] == [
        ids_before[f"OLD-{i:04d}"] for i in (*range(0, 400, 2), *range(1, 400, 2))
    ]
    assert settled[200:400] == [("conflict", "draft", 1)] * 200
    assert settled[400:1200] == [("created", "draft", 1)] * 800
    assert settled[1200:] == [("created", "draft", 1), ("unchanged", "draft", 1)]
    assert results[1200].document_id == results[1201].document_id
    new_ids = [r.document_id for r in results[400:1200]]
    assert new_ids == sorted(new_ids) and len(set(new_ids)) == 800  # drawn in batch order
    assert min(new_ids) > max(ids_before.values())
    with session_factory() as session:
        stored = dict(
            session.execute(
                select(Document.id, Document.bill_no).where(Document.id.in_(new_ids))
            ).all()
        )
        assert [stored[i] for i in new_ids] == [f"NEW-{i:04d}" for i in range(800, 0, -1)]
        events = session.execute(
            select(DocumentEvent.document_id)
            .where(DocumentEvent.document_id.in_(new_ids))
            .order_by(DocumentEvent.id)
        ).scalars()
        assert list(events) == new_ids  # one submit event each, in id order
        assert session.scalar(select(func.count()).select_from(Document)) == 1201


def _history(session_factory: sessionmaker[Session], p: str) -> None:
    """Bills of prefix ``p`` in the states the revision rules tell apart (real event logs)."""
    lives: dict[str, tuple[Event, ...]] = {
        "LIVE": (),
        "REJ": (Event.claim, Event.refused),
        "SAFE": (Event.claim, Event.give_up),  # pushing → failed: nothing was sent
        "UNSURE": (Event.claim, Event.unsure, Event.give_up),  # in_doubt → failed
        "WD": (Event.withdraw,),
    }
    with session_factory() as session:
        for name, events in lives.items():
            [result] = accept_documents(session, [bill(f"{p}-{name}")], actor="erp", now=NOW)
            document_id = _accepted(result).document_id
            for event in events:
                if event is Event.claim:
                    assert claim_for_push(session, document_id, 60, NOW) is not None
                else:
                    transition(session, document_id, event, actor="test", now=NOW)
        session.commit()


def _revisions_batch(p: str) -> list[BillToAccept]:
    return [
        bill(f"{p}-LIVE", "v2"),
        bill(f"{p}-REJ", "v2"),
        bill(f"{p}-SAFE", "v2"),
        bill(f"{p}-UNSURE", "v2"),
        bill(f"{p}-WD", "v2"),
        bill(f"{p}-WD", "v3"),  # the new revision is live now
        bill(f"{p}-WD", "v2"),
        bill(f"{p}-NEW", "v1"),
        bill(f"{p}-NEW", "v2"),
        bill(f"{p}-REJ", "v1"),  # the old content is not the current revision's
    ]


def test_revisions_and_conflicts_in_one_batch_are_settled_as_one_by_one(
    session_factory: sessionmaker[Session],
) -> None:
    _history(session_factory, "BATCH")
    _history(session_factory, "ONE")
    with session_factory() as session:
        batch = accept_documents(session, _revisions_batch("BATCH"), actor="erp", now=NOW)
        session.commit()
    one_by_one: list[Acceptance | RevisionConflict] = []
    for item in _revisions_batch("ONE"):
        with session_factory() as session:
            one_by_one.extend(accept_documents(session, [item], actor="erp", now=NOW))
            session.commit()

    assert (
        _settled(batch)
        == _settled(one_by_one)
        == [
            ("conflict", "draft", 1),
            ("new_revision", "draft", 2),
            ("new_revision", "draft", 2),
            ("conflict", "failed", 1),
            ("new_revision", "draft", 2),
            ("conflict", "draft", 2),
            ("unchanged", "draft", 2),
            ("created", "draft", 1),
            ("conflict", "draft", 1),
            ("conflict", "draft", 2),
        ]
    )
    unsure = batch[3]
    assert isinstance(unsure, RevisionConflict) and "never settled" in str(unsure)
    assert "never settled" not in str(batch[0])
    assert _accepted(batch[4]).document_id == _accepted(batch[6]).document_id
    with session_factory() as session:

        def trail(prefix: str) -> list[tuple[str, int, bool, str, str | None]]:
            rows = session.execute(
                select(
                    Document.bill_no,
                    Document.revision,
                    Document.is_current,
                    DocumentEvent.event,
                    DocumentEvent.outcome,
                )
                .join(DocumentEvent, DocumentEvent.document_id == Document.id)
                .where(Document.bill_no.like(f"{prefix}-%"))
                .order_by(Document.bill_no, Document.revision, DocumentEvent.id)
            ).all()
            return [(b.removeprefix(prefix), r, c, e, o) for b, r, c, e, o in rows]

        assert trail("BATCH") == trail("ONE")
        assert session.scalar(select(func.count()).select_from(Document)) == 2 * (5 + 4)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"total_amount": Decimal("100.005")}, ValueError, "more than two decimals"),
        ({"total_tax": Decimal("0.001")}, ValueError, "more than two decimals"),
        ({"total_incl_tax": 113.0}, TypeError, "money must be Decimal"),
        ({"payload": {"billNo": "X", "amount": 1.5}}, TypeError, "float"),
    ],
    ids=["sub-cent-amount", "sub-cent-tax", "float-money", "float-in-payload"],
)
def test_values_the_columns_refuse_are_refused_and_nothing_is_written(
    session_factory: sessionmaker[Session],
    overrides: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with session_factory() as session:
        with pytest.raises((error, StatementError), match=message) as raised:
            accept_documents(session, [bill("OK"), bill("BAD", **overrides)], actor="erp")
        if isinstance(raised.value, StatementError):
            assert isinstance(raised.value.orig, error)
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Document)) == 0
        assert session.scalar(select(func.count()).select_from(DocumentEvent)) == 0


def test_a_naive_now_is_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        with pytest.raises((ValueError, StatementError), match="naive datetime"):
            accept_documents(session, [bill("NAIVE")], actor="erp", now=datetime(2026, 3, 1))
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Document)) == 0


@pytest.mark.postgres_only
def test_batches_of_any_size_share_one_prepared_statement(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # psycopg prepares a statement once the same text ran prepare_threshold (5) times on a
    # connection; a text that grew with the batch (one placeholder per value) never would.
    with engine.connect() as connection:
        session = Session(bind=connection)
        for size in range(1, 8):
            batch = [bill(f"P{size}-{i}") for i in range(size)]
            assert (
                _settled(accept_documents(session, batch, actor="erp", now=NOW))
                == [("created", "draft", 1)] * size
            )
            assert (
                _settled(accept_documents(session, batch, actor="erp", now=NOW))
                == [("unchanged", "draft", 1)] * size
            )
        prepared = connection.execute(
            text(
                "SELECT statement FROM pg_prepared_statements"
                " WHERE statement LIKE '%jsonb_populate_recordset%' OR statement LIKE '%= ANY%'"
            )
        ).scalars()
        kinds = sorted("INSERT" if "INSERT" in s else "SELECT" for s in prepared)
        session.close()
        connection.rollback()
    assert kinds == ["INSERT", "SELECT"]


@pytest.mark.postgres_only
def test_new_bills_are_created_by_one_statement_and_only_the_rest_are_judged(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # The optimistic INSERT … ON CONFLICT DO NOTHING creates what is new; a bill it skips (a
    # current revision exists) is judged by the SELECT path and gets no stray event.
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        with session_factory() as session:
            created = _settled(accept_documents(session, [bill("ONE")], actor="erp", now=NOW))
            first = list(sent)
            sent.clear()
            mixed = accept_documents(
                session, [bill("ONE"), bill("TWO"), bill("ONE", "v2")], actor="erp", now=NOW
            )
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert created == [("created", "draft", 1)]
    assert first == ["WITH"]  # no SELECT, no SAVEPOINT
    assert _settled(mixed) == [
        ("unchanged", "draft", 1),
        ("created", "draft", 1),
        ("conflict", "draft", 1),  # the second copy is judged in the next round
    ]
    # round 1: the insert (TWO created, ONE skipped), ONE's current revision read; round 2
    # (a repeat: its identity is current by now) is judged at once
    assert sent == ["WITH", "SELECT", "SELECT"]
    with session_factory() as session:
        counts = session.execute(
            select(Document.bill_no, func.count(DocumentEvent.id))
            .join(DocumentEvent, DocumentEvent.document_id == Document.id)
            .group_by(Document.bill_no)
            .order_by(Document.bill_no)
        ).all()
    assert [tuple(row) for row in counts] == [("ONE", 1), ("TWO", 1)]
