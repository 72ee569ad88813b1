"""accept_documents(): the bulk path writes what accept_document would, on both databases.

| case                                    | what is checked                                      |
|-----------------------------------------|------------------------------------------------------|
| same inputs, bulk vs one by one         | every column and the submit event are the same       |
| awkward text (quotes, braces, NULL, 中文) | tenant, bill_no, hash and payload come back intact   |
| more bills than one SELECT chunk (1,200) | new, unchanged, changed and repeated settled apart,  |
|                                         | ids drawn in batch order, events in id order         |
| money with 3 decimals, floats, naive now | refused as the ORM columns refuse them, nothing kept |
| PostgreSQL: batches of other sizes       | one statement text each: psycopg prepares it         |
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from store.lifecycle import (
    AcceptanceOutcome,
    BillToAccept,
    BulkAcceptance,
    accept_document,
    accept_documents,
)
from store.models import Document, DocumentEvent

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


def _settled(results: list[BulkAcceptance | None]) -> list[tuple[str, str, int] | None]:
    return [None if r is None else (r.outcome.value, r.status, r.revision) for r in results]


@pytest.mark.parametrize("optional", [True, False], ids=["all-fields", "optional-none"])
def test_a_bulk_created_document_has_every_column_accept_document_gives_it(
    session_factory: sessionmaker[Session], optional: bool
) -> None:
    extra: dict[str, Any] = (
        {} if optional else {"total_incl_tax": None, "total_tax": None, "invoice_type": None}
    )
    with session_factory() as session:
        [bulk] = accept_documents(session, [bill("BULK", **extra)], actor="erp", now=NOW)
        one = bill("ONE", **extra)
        single = accept_document(
            session,
            tenant=one.tenant,
            seller_tax_id=one.seller_tax_id,
            bill_no=one.bill_no,
            payload=one.payload,
            content_hash=one.content_hash,
            total_amount=one.total_amount,
            total_incl_tax=one.total_incl_tax,
            total_tax=one.total_tax,
            invoice_type=one.invoice_type,
            actor="erp",
            now=NOW,
        )
        session.commit()
        assert bulk is not None and bulk.outcome is AcceptanceOutcome.created
        assert (bulk.status, bulk.revision) == ("draft", 1)
        single_id = single.document.id

    with session_factory() as session:
        stored = session.get(Document, bulk.document_id)
        reference = session.get(Document, single_id)
        assert stored is not None and reference is not None
        assert _columns(stored) == _columns(reference)
        assert stored.next_attempt_at == NOW  # the sweeper finds a lost enqueue
        assert stored.payload == {"billNo": "BULK", "remark": "v1", "totalAmount": "113.00"}
        events = session.scalars(
            select(DocumentEvent).where(DocumentEvent.document_id.in_([stored.id, single_id]))
        ).all()
        shapes = {
            (e.from_status, e.to_status, e.event, e.outcome, e.actor, e.reason, e.attempt,
             e.created_at)
            for e in events
        }  # fmt: skip
        assert len(events) == 2
        assert shapes == {(None, "draft", "submit", "applied", "erp", None, None, NOW)}


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
        created, plain = accept_documents(session, [odd, bill("PLAIN")], actor="erp", now=NOW)
        session.commit()
        assert created is not None and plain is not None
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
        [again] = accept_documents(session, [odd], actor="erp", now=NOW)
        assert again is not None and again.outcome is AcceptanceOutcome.unchanged
        assert again.document_id == created.document_id


def test_a_large_mixed_batch_is_settled_bill_by_bill_in_batch_order(
    session_factory: sessionmaker[Session],
) -> None:
    # 1,200 distinct bill numbers: more than one SQLite SELECT chunk (500).
    with session_factory() as session:
        accept_documents(session, [bill(f"OLD-{i:04d}") for i in range(400)], actor="erp", now=NOW)
        session.commit()
    batch = [
        *(bill(f"OLD-{i:04d}") for i in range(0, 400, 2)),  # 200 unchanged
        *(bill(f"OLD-{i:04d}", "v2") for i in range(1, 400, 2)),  # 200 changed: None
        *(bill(f"NEW-{i:04d}") for i in range(800, 0, -1)),  # 800 new, descending numbers
        bill("TWICE"),
        bill("TWICE"),  # repeated in the batch: both None
    ]
    with session_factory() as session:
        before = session.execute(select(Document.bill_no, Document.id)).all()
        ids_before = dict(before)
        results = accept_documents(session, batch, actor="erp", now=NOW)
        session.commit()

    settled = _settled(results)
    assert settled[:200] == [("unchanged", "draft", 1)] * 200
    assert [r.document_id for r in results[:200] if r] == [
        ids_before[f"OLD-{i:04d}"] for i in range(0, 400, 2)
    ]
    assert settled[200:400] == [None] * 200
    assert settled[400:1200] == [("created", "draft", 1)] * 800
    assert settled[1200:] == [None, None]
    new_ids = [r.document_id for r in results[400:1200] if r]
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
        assert session.scalar(select(func.count()).select_from(Document)) == 1200


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
                " WHERE statement LIKE '%unnest%' OR statement LIKE '%= ANY%'"
            )
        ).scalars()
        kinds = sorted("INSERT" if "INSERT" in s else "SELECT" for s in prepared)
        session.close()
        connection.rollback()
    assert kinds == ["INSERT", "SELECT"]
